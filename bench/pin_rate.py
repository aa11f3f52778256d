"""How fast a worker page-locks its host copies, under each pinned-memory setting of PyTorch's CUDA
host allocator: ``cudaHostAlloc`` (torch's default) against ``pinned_use_cuda_host_register`` with
1-16 threads faulting the pages in (what ``cluster.devices.worker_environment`` gives a GPU worker).

Each setting runs in a fresh process (torch reads its allocator settings once): ``--gib`` of
pageable weights (already in memory, as after reading a checkpoint) are copied into pinned slabs by
the worker's own code (``memory.pinned_offload._HostMemory``), then one slab is moved to the GPU.
Then, under the setting a worker gets: alone, while a second Python thread holds the GIL in its
turns (as the compile warm-up's tracing does beside a cold worker's load), and the same with the
short turns a worker sets while a warm-up runs (the weights are sized as a TI2V-5B block's).
Prints GB/s per case and one ``RESULT {json}`` line; the rate of the setting a worker gets is
the figure to re-fit ``costs.PIN_BYTES_PER_S`` by.

  python3 bench/pin_rate.py --gib 8          # GPU machine
  python bench/pin_rate.py --gib 0.25        # CPU smoke test (no pinning without CUDA: copies only)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SETTINGS = {"cudaHostAlloc (torch default)": "pinned_use_cuda_host_register:False",
            **{f"host register, {n} thread{'s' if n > 1 else ''}":
               f"pinned_use_cuda_host_register:True,pinned_num_register_threads:{n}" for n in (1, 2, 4, 8, 16)}}


# One transformer block's weights as a Wan2.2 TI2V-5B holds them (dim 3072, FFN 14336, bf16): eight
# attention projections, two FFN matrices and the small vectors (biases, norms) beside them.
BLOCK_NUMELS = [3072 * 3072] * 8 + [3072 * 14336] * 2 + [3072] * 14 + [14336]


def child(gib: float, busy: bool, short_turns: bool = False) -> dict[str, float]:
    """In a process of one setting: pin ``gib`` GiB of pageable tensors sized as a Wan block's, one
    ``_HostMemory.copy`` per weight as the worker does, with ``busy`` a second Python thread holding
    the GIL in its turns meanwhile (as the compile warm-up's tracing does during a cold load), and
    ``short_turns`` the GIL's turns as a worker shortens them while a warm-up runs
    (``engine.warmup.WARMUP_SWITCH_INTERVAL_S``); seconds and GB/s."""
    import threading

    import torch

    from wan_studio.memory.pinned_offload import SLAB_BYTES, _HostMemory

    block_bytes = sum(BLOCK_NUMELS) * 2
    numels = BLOCK_NUMELS * max(1, int(gib * 2**30) // block_bytes)
    weights = [torch.ones(n, dtype=torch.bfloat16) for n in numels]
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.init()
    stop = threading.Event()

    def spin() -> None:  # pure Python, as dynamo's tracing is: holds the GIL whenever it may
        x = 0
        while not stop.is_set():
            for i in range(1000):
                x += i

    spinner = threading.Thread(target=spin, daemon=True)
    if short_turns:
        from wan_studio.engine.warmup import WARMUP_SWITCH_INTERVAL_S

        sys.setswitchinterval(WARMUP_SWITCH_INTERVAL_S)
    if busy:
        spinner.start()
    mem = _HostMemory(budget_bytes=1 << 50)
    t0 = time.perf_counter()
    copies = [mem.copy(w) for w in weights]
    pin_s = time.perf_counter() - t0
    stop.set()
    total = sum(numels) * 2
    out = {"pin_s": round(pin_s, 3), "bytes": total, "tensors": len(numels), "pinned_bytes": mem.pinned_bytes,
           "gb_per_s": round(total / pin_s / 1e9, 2), "slab_bytes": SLAB_BYTES}
    if cuda and copies:
        t0 = time.perf_counter()
        for c in copies[:len(BLOCK_NUMELS)]:
            c.to("cuda", non_blocking=True)
        torch.cuda.synchronize()
        out["h2d_gb_per_s"] = round(block_bytes / (time.perf_counter() - t0) / 1e9, 2)
    return out


def _in_process(conf: str, gib: float, busy: bool = False, short_turns: bool = False) -> dict:
    env = {**os.environ, "PYTORCH_CUDA_ALLOC_CONF": conf,
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    run = subprocess.run([sys.executable, __file__, "--child", "--gib", str(gib),
                          *(["--busy"] if busy else []), *(["--short-turns"] if short_turns else [])], env=env, capture_output=True, text=True, timeout=600)
    last = (run.stdout.strip().splitlines() or [""])[-1]
    return json.loads(last) if run.returncode == 0 and last.startswith("{") else \
        {"error": (run.stderr.strip().splitlines() or ["?"])[-1]}


def main(argv: list[str] | None = None) -> int:
    """Run every setting in its own process; exit 1 when one failed."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gib", type=float, default=8.0)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--busy", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--short-turns", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--contention-only", action="store_true", help="only the worker's setting, with and without a busy thread")
    p.add_argument("--out", default=os.environ.get("OUT", ""))
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.gib, a.busy, a.short_turns)))
        return 0
    from wan_studio.cluster.devices import worker_environment

    results: dict[str, dict] = {}
    for name, conf in ({} if a.contention_only else SETTINGS).items():
        results[name] = _in_process(conf, a.gib)
        print(f"{name:40s} {results[name]}", flush=True)
    # The worker's own setting while another thread holds the GIL in turns (a cold load beside the
    # compile warm-up), with Python's default turns and with the short ones a warm-up sets.
    worker_conf = worker_environment("cuda:0", environ={}).get("PYTORCH_CUDA_ALLOC_CONF", "")
    contention: dict[str, dict] = {}
    for name, busy, short in (("alone", False, False), ("another thread busy", True, False),
                              ("another thread busy, short GIL turns", True, True)):
        contention[name] = _in_process(worker_conf, a.gib, busy, short)
        print(f"worker setting, {name:38s} {contention[name]}", flush=True)
    worker = worker_environment("cuda:0", environ={})
    result = {"date": time.strftime("%Y-%m-%d"), "gib": a.gib, "cpu_count": os.cpu_count(),
              "worker_gets": worker.get("PYTORCH_CUDA_ALLOC_CONF", "torch default"), "settings": results,
              "while another thread holds the GIL": contention}
    if a.out:
        Path(a.out).mkdir(parents=True, exist_ok=True)
        (Path(a.out) / "pin_rate.json").write_text(json.dumps(result, indent=1))
    print("RESULT " + json.dumps(result), flush=True)
    return 0 if all("error" not in r for r in [*results.values(), *contention.values()]) else 1


if __name__ == "__main__":
    sys.exit(main())
