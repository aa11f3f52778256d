"""How models fit: placement on the hardware and the session cache of loaded pipelines."""
