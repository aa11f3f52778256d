"""Submission latency of the ``/submit`` API endpoint with many concurrent gradio_client clients.

Starts the real app (Gradio server on 127.0.0.1 + job queue) in this process, then ``--clients``
clients, each a thread with its own ``gradio_client.Client`` spread over ``--client-procs`` separate
processes (as remote callers would be), submit ``--per-client`` tiny demo jobs one after another.
Latency is the wall time of one ``predict`` call, i.e. until the job id is back.
Target: p99 < 200 ms with 50 clients on a CPU machine over loopback.

    python bench/submit_latency.py --clients 50 --per-client 10 --workers 0

``--protocol http`` uses Gradio's direct route ``POST /gradio_api/run/submit`` (one request, no
SSE) instead of gradio_client's queue protocol; ``--protocol rest`` the app's own JSON route
``POST /api/v1/jobs`` (``wan_studio/ui/rest.py``). ``--workers 0`` measures the submission path alone (jobs wait); ``--workers 1`` also runs the jobs
on the CPU while submissions arrive.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import multiprocessing.queues
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

TINY = json.dumps({"width": 64, "height": 64, "num_frames": 5, "steps": 2})


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


class HttpSubmitter:
    """A plain HTTP caller of the direct route ``POST /gradio_api/run/submit`` (keep-alive)."""

    def __init__(self, url: str) -> None:
        import httpx

        self._http = httpx.Client(base_url=url, timeout=60)

    def predict(self, *data: Any, api_name: str) -> Any:
        """Same call shape as ``gradio_client.Client.predict``."""
        r = self._http.post(f"gradio_api/run{api_name}", json={"data": list(data)})
        r.raise_for_status()
        return r.json()["data"][0]


class RestSubmitter:
    """A plain HTTP caller of the app's JSON route ``POST /api/v1/jobs`` (keep-alive)."""

    def __init__(self, url: str) -> None:
        import httpx

        self._http = httpx.Client(base_url=url, timeout=60)

    def predict(self, prompt: str, preset: str, seed: int, settings: str, priority: int, api_name: str) -> Any:
        """Same call shape as ``gradio_client.Client.predict``."""
        r = self._http.post("api/v1/jobs", json={"prompt": prompt, "preset": preset, "seed": seed,
                                                 "settings": json.loads(settings), "priority": priority})
        r.raise_for_status()
        return r.json()["job_id"]


def client_process(url: str, clients: int, per_client: int, barrier: Any, results: Any, protocol: str,
                   think_s: float) -> None:
    """One client process: ``clients`` threads, each with its own client, submitting in turn."""
    if protocol == "http":
        conns: list[Any] = [HttpSubmitter(url) for _ in range(clients)]
    elif protocol == "rest":
        conns = [RestSubmitter(url) for _ in range(clients)]
    else:
        from gradio_client import Client

        conns = [Client(url, verbose=False) for _ in range(clients)]
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def run(c: int) -> None:
        # Spread the clients' first calls over one think time so they do not all fire at once.
        time.sleep(think_s * c / max(clients, 1))
        for i in range(per_client):
            if i:
                time.sleep(think_s)
            t0 = time.perf_counter()
            try:
                conns[c].predict(f"bench {os.getpid()}-{c}-{i}", "demo-fast", i, TINY, 0, api_name="/submit")
            except Exception as e:  # noqa: BLE001 - count and report, do not stop the run
                with lock:
                    errors.append(repr(e))
                continue
            with lock:
                latencies.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=run, args=(c,)) for c in range(clients)]
    barrier.wait()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.put((latencies, errors))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print a JSON summary with latencies in milliseconds."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--per-client", type=int, default=10)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--client-procs", type=int, default=5, help="processes the clients are spread over")
    p.add_argument("--think-s", type=float, default=0.0,
                   help="pause of each client between its submissions, seconds (0 = back to back)")
    p.add_argument("--protocol", choices=("gradio_client", "http", "rest"), default="gradio_client",
                   help="gradio_client (queue + SSE), one plain HTTP POST to Gradio's route, or one to "
                        "the app's JSON route /api/v1/jobs")
    args = p.parse_args(argv)

    from wan_studio.services import Studio
    from wan_studio.settings import Settings
    from wan_studio.ui import rest
    from wan_studio.ui.blocks import build_app, launch_kwargs

    root = Path(tempfile.mkdtemp(prefix="submit-latency-"))
    studio = Studio.create(Settings(models_dir=root / "models", outputs_dir=root / "outputs",
                                    workers=args.workers, max_queue=100_000))
    studio.start()
    app = build_app(studio)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
               **launch_kwargs(studio))
    rest.mount(app, studio)
    url = f"http://127.0.0.1:{port}/"
    ctx = mp.get_context("spawn")
    procs = max(1, min(args.client_procs, args.clients))
    barrier = ctx.Barrier(procs + 1)
    results: mp.queues.Queue[tuple[list[float], list[str]]] = ctx.Queue()
    shares = [len(range(i, args.clients, procs)) for i in range(procs)]
    workers = [ctx.Process(target=client_process, args=(url, n, args.per_client, barrier, results,
                                                                     args.protocol, args.think_s))
               for n in shares]
    for w in workers:
        w.start()
    barrier.wait()  # every client is connected: start the clock
    t0 = time.perf_counter()
    latencies: list[float] = []
    errors: list[str] = []
    for _ in workers:
        lat, err = results.get()
        latencies += lat
        errors += err
    wall = time.perf_counter() - t0
    for w in workers:
        w.join()
    stored = len(studio.queue.store.list(limit=1_000_000))
    app.close()
    studio.close()
    ms = [x * 1000 for x in latencies]
    print(json.dumps({
        "clients": args.clients, "submissions": len(ms), "errors": len(errors), "jobs_stored": stored,
        "workers": args.workers, "client_procs": procs, "protocol": args.protocol, "think_s": args.think_s, "cpus": os.cpu_count(), "wall_s": round(wall, 2),
        "submissions_per_s": round(len(ms) / wall, 1),
        "latency_ms": {"p50": round(statistics.median(ms), 1), "p95": round(percentile(ms, 0.95), 1),
                       "p99": round(percentile(ms, 0.99), 1), "max": round(max(ms), 1)},
        "date": time.strftime("%Y-%m-%d"),
    }, indent=2))
    return 0 if not errors and stored == len(ms) else 1


if __name__ == "__main__":
    sys.exit(main())
