"""Where a job runs: the executor interface and its implementations (local worker processes)."""
