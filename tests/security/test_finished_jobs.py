"""A finished video is its owner's (and the admins'): through a real server with an accounts file,
a job of ann's runs to the end on the demo model, then every way in is tried as bob (refused), as
root (an admin: allowed) and as ann (she gets the very bytes on disk)."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from tests.security.conftest import PASSWORDS, free_port
from wan_studio.ui import queue_tab

TINY = json.dumps({"width": 64, "height": 64, "num_frames": 5, "steps": 1})


@dataclass
class Finished:
    url: str
    studio: object
    job_id: str
    video: Path
    sidecar: Path
    accounts: Path
    models: Path


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Finished]:
    """ann's job, done, on a server whose jobs run on a thread of this process (fast)."""
    from wan_studio.accounts import add_account
    from wan_studio.memory.manager import ModelManager, default_loader
    from wan_studio.services import Studio
    from wan_studio.settings import Settings
    from wan_studio.ui import rest
    from wan_studio.ui.blocks import build_app, launch_kwargs

    root = tmp_path_factory.mktemp("finished")
    accounts = root / "accounts.txt"
    for name, password in PASSWORDS.items():
        add_account(accounts, name, password, "admin" if name == "root" else "user")
    settings = Settings(models_dir=root / "models", outputs_dir=root / "outputs", accounts_file=accounts)
    (root / "models").mkdir()
    studio = Studio.create(settings, manager=ModelManager(default_loader(settings.models_dir)))
    studio.start()
    app = build_app(studio)
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
               auth=studio.accounts.check, **launch_kwargs(studio))
    rest.mount(app, studio)
    try:
        url = f"http://127.0.0.1:{port}/"
        ann = Client(url, auth=("ann", PASSWORDS["ann"]), verbose=False)
        job_id = ann.predict("ann's private lake", "demo-fast", 7, TINY, 0, api_name="/submit")
        job = studio.queue.wait(job_id, timeout_s=120)
        assert job.status == "done", job.error
        video = Path(next(o for o in job.outputs if o.endswith(".mp4")))
        sidecar = Path(next(o for o in job.outputs if o.endswith(".json")))
        yield Finished(url, studio, job_id, video, sidecar, accounts, root / "models")
    finally:
        app.close()
        studio.close()


def _get(url: str, user: str) -> tuple[int, bytes]:
    """GET ``url`` logged in as ``user`` (HTTP Basic for REST; a login cookie for Gradio's routes)."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    base = url.split("/gradio_api/")[0].split("/api/v1/")[0].split("/file=")[0].rstrip("/") + "/"
    login = urllib.parse.urlencode({"username": user, "password": PASSWORDS[user]}).encode()
    opener.open(urllib.request.Request(base + "login", data=login), timeout=10).read()
    token = base64.b64encode(f"{user}:{PASSWORDS[user]}".encode()).decode()
    try:
        with opener.open(urllib.request.Request(url, headers={"Authorization": f"Basic {token}"}), timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _file_url(f: Finished, path: Path) -> str:
    return f.url + "gradio_api/file=" + urllib.parse.quote(str(path))


def _request(name: str) -> gr.Request:
    return gr.Request(username=name, session_hash=f"session-{name}")


def test_the_owner_downloads_her_video_over_the_file_route(finished: Finished) -> None:
    status, body = _get(_file_url(finished, finished.video), "ann")
    assert status == 200
    assert body == finished.video.read_bytes() and body[4:8] == b"ftyp"  # the mp4 itself


def test_the_admin_may_download_anyones_finished_video(finished: Finished) -> None:
    status, body = _get(_file_url(finished, finished.video), "root")
    assert status == 200 and body == finished.video.read_bytes()
    root = Client(finished.url, auth=("root", PASSWORDS["root"]), verbose=False)
    video, _sidecar, params = root.predict(finished.job_id, api_name="/job_result")
    assert Path(video).read_bytes() == finished.video.read_bytes()
    assert params["request"]["prompt"] == "ann's private lake"


def test_another_user_cannot_fetch_a_finished_video_over_the_file_route(finished: Finished) -> None:
    for path in (finished.video, finished.sidecar):
        status, body = _get(_file_url(finished, path), "bob")
        assert status in (403, 404), path
        assert b"ann's private lake" not in body and b"ftyp" not in body


def test_another_user_cannot_get_a_finished_job_result(finished: Finished) -> None:
    bob = Client(finished.url, auth=("bob", PASSWORDS["bob"]), verbose=False)
    with pytest.raises(AppError, match=f"job {finished.job_id} belongs to another user; only its owner or an "
                                       "admin may download it"):
        bob.predict(finished.job_id, api_name="/job_result")
    status = bob.predict(finished.job_id, api_name="/job_status")
    assert status["status"] == "done" and "prompt" not in status["request"] and status["plan"] == ""


def test_rest_shows_a_finished_job_to_another_user_without_its_words(finished: Finished) -> None:
    status, body = _get(finished.url + f"api/v1/jobs/{finished.job_id}", "bob")
    assert status == 200
    view = json.loads(body)
    assert view["status"] == "done" and view["mine"] is False
    assert "ann's private lake" not in body.decode() and "outputs" not in view and view["plan"] == ""
    status, body = _get(finished.url + f"api/v1/jobs/{finished.job_id}", "root")
    assert json.loads(body)["request"]["prompt"] == "ann's private lake"


def test_the_queue_tab_hides_a_finished_job_from_another_user(finished: Finished) -> None:
    studio = finished.studio
    jobs = studio.queue.store.list(limit=1000)  # type: ignore[attr-defined]
    bob, ann, root = (studio.caller(n, f"session-{n}") for n in ("bob", "ann", "root"))  # type: ignore
    bob_row = {r[0]: r for r in queue_tab.job_rows(jobs, bob)}[finished.job_id]
    assert bob_row[5] == "(another user's job)" and bob_row[6] == ""  # no prompt, no seed
    assert {r[0]: r for r in queue_tab.job_rows(jobs, ann)}[finished.job_id][6] == 7
    # The gallery (and so "load these settings") lists the video for ann and root only.
    assert str(finished.sidecar) not in queue_tab.gallery_items(studio, bob)[1]  # type: ignore[arg-type]
    assert str(finished.sidecar) in queue_tab.gallery_items(studio, ann)[1]  # type: ignore[arg-type]
    assert str(finished.sidecar) in queue_tab.gallery_items(studio, root)[1]  # type: ignore[arg-type]
    # Deleting or retrying it is refused to bob, and the job stays as it was.
    for action in ("delete", "retry"):
        msg = queue_tab._act(studio, action)(finished.job_id, 0, _request("bob"))  # type: ignore[arg-type]
        assert "belongs to another user" in msg
    assert studio.queue.get(finished.job_id).status == "done"  # type: ignore[attr-defined]


@pytest.mark.parametrize("where", ["outputs' parent", "accounts file", "models folder"])
def test_nothing_beside_or_above_the_videos_is_served(finished: Finished, where: str) -> None:
    """An accounts file or models folder beside the outputs, or the outputs' parent itself, is never
    served, to anyone: not even an admin gets them over the file route."""
    (finished.models / "model.safetensors").write_bytes(b"WEIGHT-BYTES")
    target = {"outputs' parent": finished.accounts.parent, "accounts file": finished.accounts,
              "models folder": finished.models / "model.safetensors"}[where]
    for user in ("ann", "root"):
        status, body = _get(_file_url(finished, target), user)
        assert status in (403, 404), (where, user)
        assert finished.accounts.read_bytes()[:24] not in body and b"WEIGHT-BYTES" not in body
