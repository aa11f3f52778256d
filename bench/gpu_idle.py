"""GPU idle time between queued jobs of the same model, through the real queue and worker process.

Queues ``--jobs`` jobs of the built-in demo model at once and lets one worker process run them.
For each pair of consecutive jobs it reports, from the worker's own clock:

- ``dispatch_gap_s``: from the end of job k's VAE decode (the worker then writes its mp4 in the
  background and asks for the next job) to job k+1's "started" (queue + IPC overhead);
- ``gpu_idle_s``: from the end of job k's decode to the start of job k+1's run (its prompt
  encoding), from the sidecars' clocks — the time the GPU has nothing to do. Target: <= 0.5 s.

Run on the GPU machine:  python3 bench/gpu_idle.py
Smoke-test on a CPU:     python bench/gpu_idle.py --tiny
Needs diffusers and imageio-ffmpeg (carry their wheels), no gradio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    """Run the measurement and print a JSON summary (seconds throughout)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="CPU smoke test with small sizes")
    p.add_argument("--jobs", type=int, default=6)
    p.add_argument("--size", type=int, default=None, help="width = height in pixels (default 512, tiny 64)")
    p.add_argument("--frames", type=int, default=None, help="4k+1 frames (default 49, tiny 5)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default 20, tiny 2)")
    args = p.parse_args(argv)

    from wan_studio.cluster.local import LocalExecutor
    from wan_studio.cluster.runtime import RuntimeConfig
    from wan_studio.engine.request import GenerationRequest
    from wan_studio.jobs.queue import JobQueue
    from wan_studio.jobs.store import JobStore

    size = args.size or (64 if args.tiny else 512)
    frames = args.frames or (5 if args.tiny else 49)
    steps = args.steps or (2 if args.tiny else 20)
    device = "cpu" if args.tiny else "cuda:0"
    root = Path(tempfile.mkdtemp(prefix="gpu-idle-"))
    executor = LocalExecutor(RuntimeConfig(models_dir=str(root / "models"), outputs_dir=str(root)), [device])
    queue = JobQueue(JobStore(root / "jobs.db"), executor, root)
    queue.start()
    try:
        # Warm-up job: loads the model into the worker (excluded from the gaps).
        warm = queue.wait(queue.submit(GenerationRequest("warm up", width=size, height=size, num_frames=frames,
                                                         steps=steps, seed=0)).id, timeout_s=600)
        if warm.status != "done":
            print(f"warm-up job {warm.status}: {warm.error}", file=sys.stderr)
            return 1
        jobs = queue.submit_many([GenerationRequest(f"job {i}", width=size, height=size, num_frames=frames,
                                                    steps=steps, seed=i + 1) for i in range(args.jobs)])
        done = [queue.wait(j.id, timeout_s=600) for j in jobs]
    finally:
        queue.close()
    if any(j.status != "done" for j in done):
        print(json.dumps([(j.id, j.status, j.error) for j in done]), file=sys.stderr)
        return 1
    sidecars = [json.loads(Path(j.outputs[1]).read_text()) for j in done]
    done_order = sorted(zip(done, sidecars), key=lambda js: js[0].started_at or 0.0)
    dispatch, idle = [], []
    for (prev, prev_sc), (nxt, nxt_sc) in zip(done_order, done_order[1:]):
        # The worker writes each mp4 in the background: job k's GPU work ends at its decode end
        # (the sidecar's clock); job k+1's begins with its prompt encoding.
        decoded = prev_sc["clock"]["decoded_at"]
        dispatch.append(nxt.started_at - decoded)  # type: ignore[operator]
        idle.append(nxt_sc["clock"]["started_at"] - decoded)
    summary = {
        "device": sidecars[0]["device"], "size": size, "frames": frames, "steps": steps, "jobs": len(done),
        "job_total_s_median": statistics.median(s["timings"]["total_s"] for s in sidecars),
        "mp4_write_s_median": statistics.median(s["timings"]["write_s"] for s in sidecars),
        "dispatch_gap_s": {"median": statistics.median(dispatch), "max": max(dispatch)},
        "gpu_idle_s": {"median": statistics.median(idle), "max": max(idle)},
        "model_stayed_loaded": all(s.get("model_was_loaded") for s in sidecars),
        "same_worker_process": len({j.worker for j in done}) == 1,
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
