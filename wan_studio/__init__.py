"""Wan Studio: run the Wan2.2 video models on consumer GPUs.

Importing the package (any module of it) has no side effects: no torch, no CUDA call. A spawned
worker imports it before it runs anything, and a CUDA call there would start the driver before the
worker's device mask could apply. Each process entry point calls ``wan_studio.bootstrap.bootstrap``
itself, before anything imports diffusers.
"""

__version__ = "0.1.0"
