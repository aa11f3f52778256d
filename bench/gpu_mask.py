"""GPU check: a worker process sees exactly the GPUs of its device mask, at CUDA driver level.

Starts worker processes the way the local executor does (``spawn``, the mask put into the
environment before ``Process.start`` by ``cluster.devices.start_masked``, then the worker's own
imports and ``bootstrap``) and has each one ask the driver what it sees:

- mask ``""`` (a CPU worker): no device, ``torch.zeros(1, device="cuda")`` must fail;
- mask ``"0"``: one device, the tensor is made on it;
- for comparison, the old order: mask ``""`` set inside the worker *after* a CUDA call — the driver
  is already started unmasked, so torch's count and the driver disagree.

Usage: ``python bench/gpu_mask.py`` (one GPU is enough). Prints one ``RESULT {json}`` line per case
and exits 1 if a check fails. Without a GPU the mask ``"0"`` case is reported as skipped.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def probe(late_mask: str | None, results: Any) -> None:
    """Body of a probe worker: the worker's imports, then what the CUDA driver shows this process."""
    if late_mask is not None:
        import torch

        torch.cuda.is_available()  # what the package root used to do on import, before the mask
        os.environ["CUDA_VISIBLE_DEVICES"] = late_mask
    import wan_studio.cluster.worker  # noqa: F401 - what a real worker imports first
    from wan_studio.bootstrap import bootstrap

    bootstrap()
    import torch

    seen: dict[str, Any] = {"pid": os.getpid(), "mask": os.environ.get("CUDA_VISIBLE_DEVICES"),
                            "device_count": torch.cuda.device_count()}
    try:
        x = torch.zeros(1, device="cuda")
        seen.update(tensor_on=str(x.device), device_name=torch.cuda.get_device_name(0))
    except Exception as e:  # noqa: BLE001 - the error text is the measurement
        seen["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:200]
    results.put(seen)


def run_case(mask: str, late_mask: str | None = None) -> dict[str, Any]:
    """Start one probe worker with ``mask`` in its environment and return what it saw."""
    from wan_studio.cluster.devices import start_masked

    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    proc = ctx.Process(target=probe, args=(late_mask, results), name="wan-studio-gpu-mask-probe")
    start_masked(proc, mask)
    seen = results.get(timeout=300)
    proc.join(60)
    return seen


def main() -> int:
    """Run every case, print the results, and return 1 if a check fails."""
    from wan_studio.cluster.devices import nvml_gpu_count

    gpus = nvml_gpu_count()
    cases: list[tuple[str, dict[str, Any], bool | None]] = []
    empty = run_case("")
    cases.append(("empty mask", empty, empty["device_count"] == 0 and "error" in empty))
    if gpus:
        first = run_case("0")
        cases.append(("mask 0", first, first["device_count"] == 1 and first.get("tensor_on") == "cuda:0"))
        old = run_case("0", late_mask="")
        cases.append(("empty mask set after a CUDA call (the old order)", old, None))
    failed = False
    for name, seen, ok in cases:
        verdict = "info" if ok is None else ("ok" if ok else "FAILED")
        failed |= ok is False
        print("RESULT " + json.dumps({"case": name, "verdict": verdict, "nvml_gpus": gpus, **seen}), flush=True)
    if not gpus:
        print("RESULT " + json.dumps({"case": "mask 0", "verdict": "skipped: NVML sees no GPU on this machine"}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
