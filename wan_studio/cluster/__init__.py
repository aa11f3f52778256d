"""Where a job runs: the executor interface, and the Ray backend (imported only when chosen)."""
