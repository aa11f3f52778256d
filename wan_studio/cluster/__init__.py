"""Where a job runs: the executor interface, local worker processes, and the Ray backend (imported only when chosen)."""
