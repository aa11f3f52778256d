"""With ``BENCH_TINY_MODELS=1``: tiny catalog sizes and S2V architectures in this process too
(``bench/tiny_models.py``). Without it this file does nothing and imports nothing."""

import os

if os.environ.get("BENCH_TINY_MODELS"):
    from bench.tiny_models import apply

    apply()
