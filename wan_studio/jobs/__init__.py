"""What to run and in what order: the persistent job store, the queue and batch expansion."""
