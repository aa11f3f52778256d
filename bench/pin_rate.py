"""How fast a worker page-locks its host copies, under each pinned-memory setting of PyTorch's CUDA
host allocator: ``cudaHostAlloc`` (torch's default) against ``pinned_use_cuda_host_register`` with
1-16 threads faulting the pages in (what ``cluster.devices.worker_environment`` gives a GPU worker).

Each setting runs in a fresh process (torch reads its allocator settings once): ``--gib`` of
pageable weights (already in memory, as after reading a checkpoint) are copied into pinned slabs by
the worker's own code (``memory.pinned_offload._HostMemory``), then one slab is moved to the GPU.
Prints GB/s per setting and one ``RESULT {json}`` line; the rate of the setting a worker gets is
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


def child(gib: float) -> dict[str, float]:
    """In a process of one setting: pin ``gib`` GiB of pageable tensors; seconds and GB/s."""
    import torch

    from wan_studio.memory.pinned_offload import SLAB_BYTES, _HostMemory

    sizes = [64 << 20] * max(1, int(gib * 2**30) // (64 << 20))  # 64 MiB weights, several per slab
    weights = [torch.ones(n // 2, dtype=torch.bfloat16) for n in sizes]
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.init()
    mem = _HostMemory(budget_bytes=1 << 50)
    t0 = time.perf_counter()
    copies = [mem.copy(w) for w in weights]
    pin_s = time.perf_counter() - t0
    pinned = mem.pinned_bytes
    out = {"pin_s": round(pin_s, 3), "bytes": sum(sizes), "pinned_bytes": pinned,
           "gb_per_s": round(sum(sizes) / pin_s / 1e9, 2), "slab_bytes": SLAB_BYTES}
    if cuda and copies:
        t0 = time.perf_counter()
        for c in copies[: SLAB_BYTES // sizes[0]]:
            c.to("cuda", non_blocking=True)
        torch.cuda.synchronize()
        out["h2d_gb_per_s"] = round(SLAB_BYTES / (time.perf_counter() - t0) / 1e9, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    """Run every setting in its own process; exit 1 when one failed."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gib", type=float, default=8.0)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default=os.environ.get("OUT", ""))
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.gib)))
        return 0
    from wan_studio.cluster.devices import worker_environment

    results: dict[str, dict] = {}
    for name, conf in SETTINGS.items():
        env = {**os.environ, "PYTORCH_CUDA_ALLOC_CONF": conf,
               "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
        run = subprocess.run([sys.executable, __file__, "--child", "--gib", str(a.gib)], env=env,
                             capture_output=True, text=True, timeout=600)
        last = (run.stdout.strip().splitlines() or [""])[-1]
        results[name] = json.loads(last) if run.returncode == 0 and last.startswith("{") else \
            {"error": (run.stderr.strip().splitlines() or ["?"])[-1]}
        print(f"{name:34s} {results[name]}", flush=True)
    worker = worker_environment("cuda:0", environ={})
    result = {"date": time.strftime("%Y-%m-%d"), "gib": a.gib, "cpu_count": os.cpu_count(),
              "worker_gets": worker.get("PYTORCH_CUDA_ALLOC_CONF", "torch default"), "settings": results}
    if a.out:
        Path(a.out).mkdir(parents=True, exist_ok=True)
        (Path(a.out) / "pin_rate.json").write_text(json.dumps(result, indent=1))
    print("RESULT " + json.dumps(result), flush=True)
    return 0 if all("error" not in r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
