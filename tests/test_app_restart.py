"""The real ``python app.py`` process: killed with -9 mid-job and restarted; starting on a damaged database."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import httpx
import pytest
from gradio_client import Client

from tests.ui.test_jobs_api import SLOW, TINY, free_port
from wan_studio.jobs.store import JobStore

REPO = Path(__file__).resolve().parent.parent


def start_app(root: Path, port: int, preexec_fn: Callable[[], None] | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        [sys.executable, "app.py", "--outputs-dir", str(root / "outputs"), "--models-dir", str(root / "models"),
         "--port", str(port), "--workers", "1"],
        cwd=REPO, env=env, stdout=open(root / f"app-{port}.log", "wb"), stderr=subprocess.STDOUT,
        preexec_fn=preexec_fn)


def wait_up(proc: subprocess.Popen[bytes], port: int, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the app exited with {proc.returncode}"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError("the app did not come up")


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie is gone for our purpose (it runs nothing).
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z"


def test_kill_9_app_mid_job_then_restart_finishes_every_job_once(tmp_path: Path) -> None:
    port = free_port()
    app = start_app(tmp_path, port)
    try:
        wait_up(app, port)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        slow = client.predict("slow", "demo-fast", 11, SLOW, 0, api_name="/submit")
        tiny = client.predict("tiny", "demo-fast", 12, TINY, 0, api_name="/submit")
        deadline = time.monotonic() + 90
        while not client.predict(slow, api_name="/job_status")["progress_text"].startswith("step "):
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.05)
        workers = children(app.pid)
        app.send_signal(signal.SIGKILL)
        app.wait(10)
    finally:
        if app.poll() is None:
            app.kill()
    deadline = time.monotonic() + 15
    while not all(gone(p) for p in workers):  # orphaned workers must not finish the job on their own
        assert time.monotonic() < deadline, f"worker processes outlived the app: {workers}"
        time.sleep(0.2)

    port2 = free_port()
    app2 = start_app(tmp_path, port2)
    try:
        wait_up(app2, port2)
        client = Client(f"http://127.0.0.1:{port2}/", verbose=False)
        deadline = time.monotonic() + 120
        while {client.predict(j, api_name="/job_status")["status"] for j in (slow, tiny)} != {"done"}:
            assert time.monotonic() < deadline, client.predict("", 10, api_name="/list_jobs")
            time.sleep(0.3)
        listed = client.predict("", 100, api_name="/list_jobs")
    finally:
        app2.terminate()
        app2.wait(30)
    assert sorted(j["id"] for j in listed) == sorted([slow, tiny])
    by_id = {j["id"]: j for j in listed}
    assert by_id[slow]["attempts"] == 2 and by_id[tiny]["attempts"] == 1
    sidecars = [json.loads(p.read_text()) for p in (tmp_path / "outputs").rglob("*.json")]
    assert sorted(s["job_id"] for s in sidecars) == sorted([slow, tiny])  # none lost, none twice
    assert len(list((tmp_path / "outputs").rglob("*.mp4"))) == 2
    assert f"job {slow} requeued after the app stopped during attempt 1" in (tmp_path / f"app-{port2}.log").read_text()


def _damaged_start(tmp_path: Path, damage: bytes, mode: int | None = None,
                   preexec_fn: Callable[[], None] | None = None) -> tuple[Path, str, str]:
    """Start the app on an outputs folder whose old-layout ``jobs.db`` holds ``damage``; returns the
    moved-aside copy, the console output and the UI's config."""
    db = tmp_path / "outputs" / "jobs.db"
    db.parent.mkdir()
    db.write_bytes(damage)
    if mode is not None:
        db.chmod(mode)
    port = free_port()
    app = start_app(tmp_path, port, preexec_fn)
    try:
        wait_up(app, port, timeout_s=240)  # a loaded CI machine imports torch slowly
        config = httpx.get(f"http://127.0.0.1:{port}/config", timeout=10).text
    finally:
        app.terminate()
        app.wait(30)
    [backup] = (tmp_path / "outputs-state").glob("jobs.db.damaged-*")
    return backup, (tmp_path / f"app-{port}.log").read_text(), config


def test_a_damaged_database_is_moved_aside_and_the_app_starts_saying_so(tmp_path: Path) -> None:
    garbage = os.urandom(8192)
    backup, console, config = _damaged_start(tmp_path, garbage)
    assert backup.read_bytes() == garbage  # kept, never deleted
    assert f"The job list was damaged" in console and f"was moved to {backup}" in console
    assert "was damaged" in config and str(backup) in config  # the UI shows it too
    assert not (tmp_path / "outputs" / "jobs.db").exists()


CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, PR_CAPBSET_DROP = 1, 2, 24


def _without_root_file_access() -> None:
    """``preexec_fn``: the app keeps its user but, when that is root, loses the two capabilities that
    let root open any file whatever its mode (from the bounding set, so also after ``exec``); a
    mode-0 file is then as unreadable to it as to any other user. CI runs as root."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), f"cannot drop capability {cap} for the app")


def test_an_unreadable_database_is_moved_aside_and_kept(tmp_path: Path) -> None:
    """A sound job database the app may not read (mode 0) is moved aside, byte for byte, with a
    sentence; the same file readable opens as it is (so it is the permission that was seen)."""
    db = tmp_path / "sound.db"
    JobStore(db).close()
    sound = db.read_bytes()
    probe = subprocess.run([sys.executable, "-c", f"open({str(db)!r}).close()"], capture_output=True,
                           text=True, preexec_fn=_without_root_file_access)
    assert probe.returncode == 0, probe.stderr  # readable while its mode allows it
    db.chmod(0)
    probe = subprocess.run([sys.executable, "-c", f"open({str(db)!r}).close()"], capture_output=True,
                           text=True, preexec_fn=_without_root_file_access)
    assert "PermissionError" in probe.stderr  # the app's user really cannot read a mode-0 file

    backup, console, config = _damaged_start(tmp_path, sound, mode=0, preexec_fn=_without_root_file_access)
    assert "The job list was damaged (unable to open database file)" in console, console
    assert f"was moved to {backup}" in console and str(backup) in config
    backup.chmod(0o600)
    assert backup.read_bytes() == sound  # kept as it was, never rewritten or deleted
    assert (tmp_path / "outputs-state" / "jobs.db").exists()  # a fresh list in its place
