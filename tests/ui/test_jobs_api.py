"""Named job endpoints and ``/generate`` through a real Gradio server on 127.0.0.1, with gradio_client."""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from wan_studio.engine.video_io import read_mp4
from wan_studio.services import Studio
from wan_studio.settings import Settings

TINY = json.dumps({"width": 64, "height": 64, "num_frames": 5, "steps": 2})
SLOW = json.dumps({"width": 128, "height": 128, "num_frames": 9, "steps": 100})
PREVIEWED = json.dumps({"width": 256, "height": 256, "num_frames": 33, "steps": 100})  # cancelled after 3 steps


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Studio, str]]:
    from wan_studio.ui.blocks import build_app, launch_kwargs

    root = tmp_path_factory.mktemp("api")
    studio = Studio.create(Settings(models_dir=root / "models", outputs_dir=root / "outputs", workers=2))
    studio.start()
    app = build_app(studio)
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
               **launch_kwargs(studio))
    yield studio, f"http://127.0.0.1:{port}/"
    app.close()
    studio.close()


@pytest.fixture(scope="module")
def client(server: tuple[Studio, str]) -> Client:
    return Client(server[1], verbose=False)


def _wait_status(client: Client, job_id: str, wanted: set[str], timeout_s: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.predict(job_id, api_name="/job_status")
        if status["status"] in wanted:
            return status
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} stuck at {status}")


def test_submit_status_result_list(client: Client) -> None:
    job_id = client.predict("a red fox in snow", "demo-fast", 42, TINY, 0, api_name="/submit")
    assert isinstance(job_id, str) and len(job_id) == 12
    status = _wait_status(client, job_id, {"done"})
    assert status["attempts"] == 1 and status["request"]["seed"] == 42 and status["progress"] == 1.0
    video, sidecar, data = client.predict(job_id, api_name="/job_result")
    frames, _ = read_mp4(Path(video))
    assert frames.shape == (5, 64, 64, 3)
    assert json.loads(Path(sidecar).read_text())["job_id"] == job_id == data["job_id"]
    listed = client.predict("done", 1000, api_name="/list_jobs")
    assert job_id in [j["id"] for j in listed] and all(j["status"] == "done" for j in listed)


def test_cancel_job_stops_a_running_job(client: Client) -> None:
    job_id = client.predict("slow", "demo-fast", 1, SLOW, 0, api_name="/submit")
    _wait_status(client, job_id, {"running"})
    client.predict(job_id, api_name="/cancel_job")
    status = _wait_status(client, job_id, {"cancelled", "done"})
    assert status["status"] == "cancelled"
    with pytest.raises(AppError, match="is cancelled"):
        client.predict(job_id, api_name="/job_result")


def test_a_running_job_shows_a_live_preview_that_changes_every_step(server: tuple[Studio, str],
                                                                    client: Client) -> None:
    import httpx

    from wan_studio.engine.job import preview_of

    studio, url = server
    job_id = client.predict("a preview", "demo-fast", 3, PREVIEWED, 0, api_name="/submit")
    pictures: dict[str, bytes] = {}
    deadline = time.monotonic() + 90
    with httpx.Client(base_url=url, timeout=30) as http:
        while len(pictures) < 3 and time.monotonic() < deadline:
            status = client.predict(job_id, api_name="/job_status")
            assert status["status"] in ("queued", "running"), (status, pictures)
            link = status["preview_url"]
            if link and link not in pictures:
                try:
                    r = http.get(link.lstrip("/"))
                except httpx.RemoteProtocolError:  # the demo's millisecond steps removed it while it was sent
                    continue
                if r.status_code == 200:  # 404: removed before it was asked for
                    pictures[link] = r.content
    assert len(pictures) == 3 and all(p[:3] == b"\xff\xd8\xff" for p in pictures.values())  # JPEGs
    assert len(set(pictures.values())) == 3  # each step a new picture
    client.predict(job_id, api_name="/cancel_job")
    status = _wait_status(client, job_id, {"cancelled"})
    assert status["preview_url"] is None and preview_of(studio.settings.outputs_dir, job_id) is None


def test_clear_errors_for_bad_calls(client: Client) -> None:
    with pytest.raises(AppError, match="no job with id 'nope'"):
        client.predict("nope", api_name="/job_status")
    with pytest.raises(AppError, match="settings_json may only set"):
        client.predict("x", "demo-fast", -1, '{"image": "/etc/passwd"}', 0, api_name="/submit")
    with pytest.raises(AppError, match="multiple of 32"):
        client.predict("x", "demo-fast", -1, '{"width": 70}', 0, api_name="/submit")
    with pytest.raises(AppError, match="unknown status"):
        client.predict("finished", 10, api_name="/list_jobs")


def test_generate_endpoint_still_returns_the_video_through_a_worker(server: tuple[Studio, str],
                                                                      client: Client) -> None:
    studio, _ = server
    video, files, params, status = client.predict("a cat", None, "demo-fast", 7, api_name="/generate")
    assert read_mp4(Path(video))[0].shape == (17, 256, 256, 3)
    assert params["seed"] == 7 and status.startswith("Done in")
    assert len(files) == 2
    assert studio.manager.loaded() == {}  # this (the Gradio) process never loaded a pipeline
    assert any("demo" in w.loaded for w in studio.queue.executor.workers())


def test_200_concurrent_submissions_become_200_jobs_each_run_once(server: tuple[Studio, str]) -> None:
    studio, url = server
    clients = [Client(url, verbose=False) for _ in range(20)]

    def submit_ten(c: int) -> list[str]:
        # One client per thread: a gradio_client Client is not meant to be shared across threads.
        return [clients[c].predict(f"load {i}", "demo-fast", i, TINY, 0, api_name="/submit")
                for i in range(c, 200, 20)]

    with ThreadPoolExecutor(max_workers=20) as pool:
        ids = [job_id for batch in pool.map(submit_ten, range(20)) for job_id in batch]
    assert len(set(ids)) == 200
    store = studio.queue.store
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline and any(not store.get(i).finished for i in ids):
        time.sleep(0.5)
    jobs = [store.get(i) for i in ids]
    assert [j.status for j in jobs] == ["done"] * 200
    assert all(j.attempts == 1 for j in jobs)
    assert sorted(j.request["seed"] for j in jobs) == list(range(200))
    sidecars = [json.loads(Path(j.outputs[1]).read_text()) for j in jobs]
    assert sorted(s["job_id"] for s in sidecars) == sorted(ids)
    made = [p for p in studio.settings.outputs_dir.rglob("*.json") if json.loads(p.read_text()).get("job_id") in set(ids)]
    assert len(made) == 200  # no job ran twice


def test_beginner_cancel_button_stops_its_own_generate(server: tuple[Studio, str], client: Client) -> None:
    studio, _ = server
    pending = client.submit("a slow cat", None, "demo-fast", 8, api_name="/generate")
    deadline = time.monotonic() + 60
    while not any(j.owner == client.session_hash for j in studio.queue.store.list(("running",))):
        assert time.monotonic() < deadline, "the /generate job never started"
        time.sleep(0.01)
    assert client.predict(api_name="/cancel") == "Cancelling after the current step…"
    video, _files, _params, status = pending.result(timeout=60)
    assert video is None and status.startswith("Cancelled (cancelled")
    assert client.predict(api_name="/cancel") == "Nothing is running."
