"""A full disk in words, through a real server: a submit is refused with "the disk holding … is full
(X MB free)", a running job that meets a full disk ends failed with that reason and keeps its work
files, and once space is back jobs run again without restarting the app.

Two ways: an injected ``ENOSPC`` (always runs) and a real small tmpfs as the outputs folder (needs
root to mount; CI runs as root)."""

from __future__ import annotations

import errno
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from tests.cluster.test_local import _mount_tmpfs
from tests.security.conftest import PASSWORDS, AccountsServer, free_port
from wan_studio.engine import video_io
from wan_studio.engine.job import work_dir_of

TINY = json.dumps({"width": 64, "height": 64, "num_frames": 5, "steps": 2})
FULL = r"the disk holding \S+ is full \(\d+\.\d MB free\)"


def launch(root: Path, inline: bool, **settings: Any) -> AccountsServer:
    from wan_studio.accounts import add_account
    from wan_studio.memory.manager import ModelManager, default_loader
    from wan_studio.services import Studio
    from wan_studio.settings import Settings
    from wan_studio.ui.blocks import build_app, launch_kwargs

    accounts = root / "accounts.txt"
    for name, password in PASSWORDS.items():
        add_account(accounts, name, password, "admin" if name == "root" else "user")
    s = Settings(models_dir=root / "models", outputs_dir=root / "outputs", accounts_file=accounts,
                 workers=None if inline else 1, **settings)
    studio = Studio.create(s, manager=ModelManager(default_loader(s.models_dir)) if inline else None)
    studio.start()
    app = build_app(studio)
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
               auth=studio.accounts.check, **launch_kwargs(studio))
    return AccountsServer(f"http://127.0.0.1:{port}/", studio, app, root / "outputs")


def wait_finished(client: Client, job_id: str, timeout_s: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        view = client.predict(job_id, api_name="/job_status")
        if view["status"] in ("done", "failed", "cancelled"):
            return view
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish")


def temp_files(outputs: Path) -> list[Path]:
    return [p for p in outputs.rglob(".*") if p.is_file() and ".work" not in p.parts and ".inputs" not in p.parts]


@pytest.fixture(scope="module")
def inline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AccountsServer]:
    server = launch(tmp_path_factory.mktemp("disk-inline"), inline=True)
    yield server
    server.app.close()  # type: ignore[attr-defined]
    server.studio.close()  # type: ignore[attr-defined]


def test_a_submit_on_a_full_disk_is_refused_in_words(inline: AccountsServer) -> None:
    q = inline.studio.queue  # type: ignore[attr-defined]
    before = len(q.store.list(limit=10_000))
    old = q.disk_reserve_bytes
    q.disk_reserve_bytes = 2**62  # more than any disk has free: the disk counts as full
    try:
        ann = Client(inline.url, auth=inline.auth("ann"), verbose=False)
        with pytest.raises(AppError, match=FULL):
            ann.predict("a fox in snow", "demo-fast", 1, TINY, 0, api_name="/submit")
        with httpx.Client(base_url=inline.url, timeout=30) as http:
            assert http.post("login", data={"username": "ann", "password": PASSWORDS["ann"]}).status_code == 200
            r = http.post("gradio_api/run/submit", json={"data": ["a fox", "demo-fast", 1, TINY, 0]})
        assert r.status_code == 400 and "is full (" in r.json()["error"]
    finally:
        q.disk_reserve_bytes = old
    assert len(q.store.list(limit=10_000)) == before


def test_a_job_meeting_a_full_disk_fails_with_the_reason_and_runs_again_once_space_is_back(
        inline: AccountsServer, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(*_a: Any, **_k: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    ann = Client(inline.url, auth=inline.auth("ann"), verbose=False)
    monkeypatch.setattr(video_io.imageio_ffmpeg, "write_frames", no_space)
    job = ann.predict("a fox in snow", "demo-fast", 11, TINY, 0, api_name="/submit")
    view = wait_finished(ann, job)
    assert view["status"] == "failed"
    assert " is full (" in view["error"] and "while writing" in view["error"], view["error"]
    assert temp_files(inline.outputs) == []
    assert not list(inline.outputs.rglob("*-11-*.mp4"))
    kept = work_dir_of(inline.outputs, job)
    assert kept.is_dir() and any(kept.iterdir())  # its step checkpoint stays for the retry
    monkeypatch.undo()  # space is back
    again = ann.predict("a fox in snow", "demo-fast", 12, TINY, 0, api_name="/submit")
    assert wait_finished(ann, again)["status"] == "done"
    inline.studio.queue.retry(job)  # type: ignore[attr-defined]
    assert wait_finished(ann, job)["status"] == "done"


def _fill(folder: Path, leave_bytes: int = 0) -> Path:
    """Write a file taking all but ``leave_bytes`` of the disk holding ``folder``."""
    import shutil

    filler = folder / f"filler-{leave_bytes}"
    with open(filler, "wb") as f:
        try:
            while shutil.disk_usage(folder).free > leave_bytes:
                f.write(b"\0" * min(65536, max(4096, shutil.disk_usage(folder).free - leave_bytes)))
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC
    return filler


def test_a_real_full_disk_under_a_worker_process(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    if not _mount_tmpfs(outputs, "8m"):
        pytest.skip("needs root to mount a small tmpfs (the injected ENOSPC test above covers the rest)")
    server = None
    try:
        server = launch(tmp_path, inline=False, disk_reserve_mb=1)
        ann = Client(server.url, auth=server.auth("ann"), verbose=False)
        filler = _fill(outputs)
        with pytest.raises(AppError, match=FULL):
            ann.predict("a fox in snow", "demo-fast", 1, TINY, 0, api_name="/submit")
        filler.unlink()
        # Room to be accepted, then the disk fills while the job runs.
        roomy = _fill(outputs, leave_bytes=1024 * 1024 + 256 * 1024)
        job = ann.predict("a fox in snow", "demo-fast", 2, TINY, 0, api_name="/submit")
        filled = threading.Event()

        def fill_when_running() -> None:
            while ann.predict(job, api_name="/job_status")["status"] == "queued":
                time.sleep(0.05)
            _fill(outputs)
            filled.set()

        threading.Thread(target=fill_when_running, daemon=True).start()
        view = wait_finished(ann, job)
        assert filled.is_set() and view["status"] == "failed" and " is full (" in (view["error"] or ""), view
        assert temp_files(outputs) == []
        for p in outputs.glob("filler-*"):
            p.unlink()
        roomy.unlink(missing_ok=True)
        again = ann.predict("a fox in snow", "demo-fast", 3, TINY, 0, api_name="/submit")
        assert wait_finished(ann, again)["status"] == "done"  # the same app, its worker running again
    finally:
        if server is not None:
            server.app.close()  # type: ignore[attr-defined]
            server.studio.close()  # type: ignore[attr-defined]
        subprocess.run(["umount", str(outputs)], capture_output=True)
