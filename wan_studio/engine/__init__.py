"""How one job runs: request validation, generation, video files."""
