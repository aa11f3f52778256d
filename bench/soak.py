"""Soak test: many API clients against a real app on loopback while its worker is killed at random.

Starts ``python app.py`` (one worker process, the tiny demo model, an accounts file with two users
and an admin), then for ``--minutes``: client threads submit tiny jobs, poll them, cancel some and
download finished ones; a killer thread sends SIGKILL to the worker process every few seconds (the
supervisor restarts it); the app's RSS is sampled every second. At the end it waits for every
accepted job to finish and checks: each is done (with its mp4), failed with a reason, or cancelled;
no temporary or orphaned files are left in the outputs folder; the RSS of the last third of the run
is within a loose bound of the first third.

    python bench/soak.py --minutes 5            # prints a JSON summary; exit status 1 on a failed check
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from wan_studio.jobs.cleanup import IDLE_S  # noqa: E402
from wan_studio.settings import Settings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
USERS = {"ann": "ann-password", "bob": "bob-password", "root": "root-password"}
TINY = json.dumps({"width": 64, "height": 64, "num_frames": 5, "steps": 2})
# RSS of the last third may exceed the first third's by this factor plus this many MiB.
RSS_GROWTH_FACTOR, RSS_GROWTH_SLACK_MIB = 1.5, 150


@dataclass
class SoakResult:
    """What one soak run did and found. Times in seconds, memory in MiB."""

    seconds: float
    clients: int
    accepted: int = 0
    refused: int = 0
    done: int = 0
    failed: int = 0
    cancelled: int = 0
    downloads: int = 0
    kills: int = 0
    client_errors: int = 0
    rss_start_mib: float = 0.0
    rss_end_mib: float = 0.0
    rss_max_mib: float = 0.0
    problems: list[str] = field(default_factory=list)
    refusal_reasons: dict[str, int] = field(default_factory=dict)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_app(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Write the accounts file and start the app on a free loopback port; returns it and its URL."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    accounts = root / "accounts.txt"
    for name, password in USERS.items():
        cmd = [sys.executable, str(ROOT / "app.py"), "--accounts", str(accounts), "--add-user", name]
        subprocess.run(cmd + (["--admin"] if name == "root" else []), check=True, capture_output=True,
                       env=dict(env, WAN_STUDIO_NEW_PASSWORD=password))
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--accounts", str(accounts), "--models-dir", str(root / "models"), "--outputs-dir", str(root / "outputs")],
        env=env, stdout=open(root / "app.log", "wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return proc, url
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"the app exited with {proc.returncode}; see {root / 'app.log'}")
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("the app did not answer within 120 s")


def worker_pids(app_pid: int) -> list[int]:
    """Pids of the app's worker processes (multiprocessing children, not its resource tracker)."""
    pids = []
    for child in psutil.Process(app_pid).children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "spawn_main" in cmd or "multiprocessing.forkserver" in cmd:
            pids.append(child.pid)
    return pids


def client_loop(url: str, user: str, stop: threading.Event, accepted: list[str], result: SoakResult,
                lock: threading.Lock, seed: int) -> None:
    """One user: submit, poll, sometimes cancel, download what finished."""
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    rng = random.Random(seed)
    client = Client(url, auth=(user, USERS[user]), verbose=False)
    mine: list[str] = []
    while not stop.is_set():
        try:
            _submit(client, user, rng, accepted, mine, result, lock)
            for job in mine[-4:]:  # the newest: the ones still changing
                status = client.predict(job, api_name="/job_status")["status"]
                if status == "done" and rng.random() < 0.5:
                    client.predict(job, api_name="/job_result")
                    with lock:
                        result.downloads += 1
                elif status in ("queued", "running") and rng.random() < 0.03:
                    client.predict(job, api_name="/cancel_job")
            client.predict("queued,running", 50, api_name="/list_jobs")
        except AppError as e:
            with lock:  # a refusal (queue limit, job finished meanwhile) is a clear error, not a failure
                result.refused += 1
                reason = str(e)[:70]
                result.refusal_reasons[reason] = result.refusal_reasons.get(reason, 0) + 1
            if "has not enabled verbose error reporting" in str(e):
                with lock:
                    result.problems.append(f"unhandled server error: {e}")
        except Exception as e:  # noqa: BLE001 - counted; the run goes on
            with lock:
                result.client_errors += 1
                if len(result.problems) < 20:
                    result.problems.append(f"client {user}: {type(e).__name__}: {e}")
        stop.wait(rng.uniform(0.2, 1.0))


def _submit(client: object, user: str, rng: random.Random, accepted: list[str], mine: list[str],
            result: SoakResult, lock: threading.Lock) -> None:
    """Submit one tiny job; a refusal (the per-user queue limit) is counted, and polling goes on."""
    from gradio_client.exceptions import AppError

    try:
        job_id = client.predict(f"soak {user} {rng.random():.6f}", "demo-fast", rng.randrange(1000),  # type: ignore
                                TINY, 0, api_name="/submit")
    except AppError as e:
        with lock:
            result.refused += 1
            reason = str(e)[:70]
            result.refusal_reasons[reason] = result.refusal_reasons.get(reason, 0) + 1
        return
    with lock:
        accepted.append(job_id)
        result.accepted += 1
    mine.append(job_id)


def killer_loop(app_pid: int, stop: threading.Event, result: SoakResult, seed: int, every_s: tuple[float, float]) -> None:
    """SIGKILL the worker process at random intervals."""
    rng = random.Random(seed)
    while not stop.wait(rng.uniform(*every_s)):
        pids = worker_pids(app_pid)
        if pids:
            try:
                os.kill(rng.choice(pids), signal.SIGKILL)
                result.kills += 1
            except ProcessLookupError:
                pass


def check_files(outputs: Path, jobs: dict[str, tuple[str, str | None, list[str]]], problems: list[str]) -> None:
    """No temporary files, no video without a job, no done job without its video."""
    owned = {Path(o).name for _, _, outs in jobs.values() for o in outs}
    for path in outputs.rglob("*"):
        if not path.is_file() or path.name.startswith("jobs.db") or path.parent.name == ".inputs" \
                or path.name.endswith(".lock"):
            continue
        if path.suffix in (".part", ".tmp") or path.name.startswith("."):
            problems.append(f"temporary file left behind: {path.name}")
        elif path.suffix == ".mp4" and path.name not in owned:
            problems.append(f"video without a job: {path.name}")
    for job_id, (status, _, outs) in jobs.items():
        if status == "done" and not any(o.endswith(".mp4") and Path(o).exists() for o in outs):
            problems.append(f"job {job_id} is done but its video is missing")


def run(minutes: float, clients: int, kill_every_s: tuple[float, float], seed: int = 0) -> SoakResult:
    """Run the soak for ``minutes`` with ``clients`` threads; returns the result (problems listed)."""
    root = Path(tempfile.mkdtemp(prefix="wan-soak-"))
    proc, url = start_app(root)
    app = psutil.Process(proc.pid)
    result = SoakResult(seconds=minutes * 60, clients=clients)
    accepted: list[str] = []
    lock, stop = threading.Lock(), threading.Event()
    rss: list[float] = []
    threads = [threading.Thread(target=client_loop, args=(url, ("ann", "bob")[i % 2], stop, accepted, result, lock,
                                                          seed + i), daemon=True) for i in range(clients)]
    threads.append(threading.Thread(target=killer_loop, args=(proc.pid, stop, result, seed, kill_every_s), daemon=True))
    try:
        for t in threads:
            t.start()
        t0 = time.monotonic()
        while time.monotonic() - t0 < minutes * 60:
            rss.append(app.memory_info().rss / 2**20)
            time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join(30)
        # The app keeps its database beside the outputs, never in them (Settings.jobs_db).
        db = Settings(outputs_dir=root / "outputs").jobs_db
        jobs = wait_for_all(db, accepted, timeout_s=180)
        time.sleep(IDLE_S + 3.0)  # the app removes a killed worker's half-written files once idle
        # Read again for the files: a submit still in flight when the clients stopped (a slow reply
        # on a loaded machine) made a job no client saw accepted; it was waited for too and may
        # have finished since.
        jobs = wait_for_all(db, accepted, timeout_s=60)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    summarize(result, jobs, accepted, rss)
    check_files(root / "outputs", jobs, result.problems)
    return result


def wait_for_all(db: Path, accepted: list[str], timeout_s: float) -> dict[str, tuple[str, str | None, list[str]]]:
    """Status, error and outputs of every job in the store, once all of them and every accepted one
    are finished (or at the timeout)."""
    deadline = time.monotonic() + timeout_s
    ended = ("done", "failed", "cancelled")
    while True:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
            rows = conn.execute("SELECT id, status, error, outputs FROM jobs").fetchall()
        jobs = {r[0]: (r[1], r[2], json.loads(r[3])) for r in rows}
        if (all(jobs.get(j, ("",))[0] in ended for j in accepted) and all(v[0] in ended for v in jobs.values())) \
                or time.monotonic() > deadline:
            return jobs
        time.sleep(1.0)


def summarize(result: SoakResult, jobs: dict[str, tuple[str, str | None, list[str]]], accepted: list[str],
              rss: list[float]) -> None:
    """Count outcomes, note lost or reason-less jobs and unbounded memory growth."""
    for job_id in accepted:
        status, error, _ = jobs.get(job_id, ("lost", None, []))
        if status == "done":
            result.done += 1
        elif status in ("failed", "cancelled"):
            setattr(result, status, getattr(result, status) + 1)
            if not error:
                result.problems.append(f"job {job_id} is {status} without a reason")
        else:
            result.problems.append(f"job {job_id} ended the run as {status}")
    third = max(1, len(rss) // 3)
    first, last = sum(rss[:third]) / third, sum(rss[-third:]) / third
    result.rss_start_mib, result.rss_end_mib, result.rss_max_mib = round(first, 1), round(last, 1), round(max(rss), 1)
    if last > first * RSS_GROWTH_FACTOR + RSS_GROWTH_SLACK_MIB:
        result.problems.append(f"app RSS grew from {first:.0f} MiB to {last:.0f} MiB")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--clients", type=int, default=6)
    p.add_argument("--kill-every", type=float, nargs=2, default=(8.0, 20.0), metavar=("MIN_S", "MAX_S"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    result = run(args.minutes, args.clients, tuple(args.kill_every), args.seed)
    print(json.dumps(asdict(result), indent=2))
    return 1 if result.problems else 0


if __name__ == "__main__":
    sys.exit(main())
