"""The file route of a shared app hands out a user's own finished videos and nothing else of the
outputs folder: not the job database, not work files, not another user's video, however the path
is spelled. A real Gradio server with an accounts file; the requests are raw HTTP, as an attacker
would send them."""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.security.conftest import PASSWORDS, AccountsServer
from wan_studio.jobs.store import RestoredJob

NOT_FOUND = {"detail": "Not Found"}


@pytest.fixture(scope="module")
def files(idle_server: AccountsServer) -> dict[str, Path]:
    """A finished video of ann's (mp4 + sidecar) and the files the app keeps beside the outputs."""
    studio = idle_server.studio
    out = idle_server.outputs
    day = out / "2026-12-01"
    day.mkdir(parents=True, exist_ok=True)
    video, sidecar = day / "120000-demo-7-ann.mp4", day / "120000-demo-7-ann.json"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"v" * 5000)
    sidecar.write_text('{"request": {"prompt": "ann private words"}, "video": {"file": "120000-demo-7-ann.mp4"}}')
    studio.queue.store.restore_done([RestoredJob("annvideo0001", {"prompt": "ann private words", "model": "demo"},  # type: ignore[attr-defined]
                                                 [str(video), str(sidecar)], 1.0, user="ann")])
    work = out / ".work" / "annvideo0002"
    work.mkdir(parents=True)
    (work / "outputs.json").write_text("{}")
    (out / ".inputs").mkdir(exist_ok=True)
    (out / ".inputs" / "annvideo0003.png").write_bytes(b"\x89PNG" + b"p" * 3000)
    (out / ".calibration").mkdir(exist_ok=True)
    (out / ".calibration" / "demo.json").write_text("{}")
    temp = day / ".120100-demo-8-ann.k3j2h1.json"
    temp.write_text('{"request": {"prompt": "half written"}}')
    unlisted = day / "130000-demo-9-nobody.mp4"  # a video no job lists
    unlisted.write_bytes(b"u" * 4000)
    db = studio.settings.jobs_db  # type: ignore[attr-defined]
    os.symlink(db, day / "db-link.mp4")
    os.symlink("/etc/passwd", day / "passwd-link.mp4")
    outside = out.parent / "elsewhere"
    outside.mkdir(exist_ok=True)
    os.symlink(video, outside / "ann-video-link.mp4")
    return {"video": video, "sidecar": sidecar, "db": db, "wal": Path(f"{db}-wal"), "lock": Path(f"{db}.lock"),
            "work": work / "outputs.json", "input": out / ".inputs" / "annvideo0003.png",
            "calibration": out / ".calibration" / "demo.json", "temp": temp, "unlisted": unlisted,
            "db_link": day / "db-link.mp4", "passwd_link": day / "passwd-link.mp4",
            "outside_link": outside / "ann-video-link.mp4"}


@pytest.fixture(scope="module")
def sessions(idle_server: AccountsServer, files: dict[str, Path]) -> Iterator[dict[str, httpx.Client]]:
    clients = {}
    for name in ("ann", "bob", "root"):
        c = httpx.Client(base_url=idle_server.url, timeout=30)
        assert c.post("login", data={"username": name, "password": PASSWORDS[name]}).status_code == 200
        clients[name] = c
    yield clients
    for c in clients.values():
        c.close()


def fetch(client: httpx.Client, spelled: str, method: str = "GET") -> httpx.Response:
    return client.request(method, f"gradio_api/file={spelled}")


def test_the_owner_and_an_admin_get_the_video_and_its_sidecar(sessions: dict[str, httpx.Client],
                                                               files: dict[str, Path]) -> None:
    for who in ("ann", "root"):
        for kind in ("video", "sidecar"):
            r = fetch(sessions[who], str(files[kind]))
            assert r.status_code == 200 and r.content == files[kind].read_bytes(), (who, kind)


def test_another_user_gets_404_for_the_video_as_for_a_missing_file(sessions: dict[str, httpx.Client],
                                                                  files: dict[str, Path]) -> None:
    missing = fetch(sessions["bob"], str(files["video"].with_name("no-such-video.mp4")))
    for kind in ("video", "sidecar", "outside_link"):
        r = fetch(sessions["bob"], str(files[kind]))
        assert (r.status_code, r.json()) == (404, NOT_FOUND) == (missing.status_code, missing.json()), kind
        assert "ann private words" not in r.text


@pytest.mark.parametrize("kind", ["db", "wal", "lock", "work", "input", "calibration", "temp", "unlisted",
                                  "db_link", "passwd_link"])
def test_nothing_else_under_the_outputs_or_beside_them_is_served_even_to_an_admin(
        sessions: dict[str, httpx.Client], files: dict[str, Path], kind: str) -> None:
    path = files[kind]
    size = path.stat().st_size if path.exists() else None
    for method in ("GET", "HEAD"):
        r = fetch(sessions["root"], str(path), method)
        assert r.status_code == 404, (kind, method)
        assert r.headers.get("content-length") != str(size)  # not even the size leaks
        assert "accept-ranges" not in r.headers


def _spellings(target: Path, outputs: Path) -> list[str]:
    rel = os.path.relpath(target, Path.cwd())
    via_dots = f"{outputs}/2026-12-01/../../{target.relative_to(outputs.parent)}"
    return [
        str(target),
        urllib.parse.quote(str(target), safe=""),  # every slash encoded
        str(target).replace("/", "//"),
        via_dots,
        via_dots.replace(".", "%2e"),  # dots encoded
        urllib.parse.quote(urllib.parse.quote(str(target), safe=""), safe=""),  # encoded twice over
        "".join(f"%{b:02X}" for b in str(target).encode()),  # every byte encoded
        rel,
        f"{outputs}/./2026-12-01/./../{target.relative_to(outputs)}" if outputs in target.parents else str(target),
    ]


@pytest.mark.parametrize("kind", ["db", "wal", "work", "temp"])
def test_no_spelling_of_a_kept_path_reaches_it(sessions: dict[str, httpx.Client], files: dict[str, Path],
                                              idle_server: AccountsServer, kind: str) -> None:
    for spelled in _spellings(files[kind], idle_server.outputs):
        r = fetch(sessions["root"], spelled)
        assert r.status_code in (403, 404), spelled  # 403: Gradio's own answer for paths outside the outputs
        assert r.content != (files[kind].read_bytes() if files[kind].exists() else None), spelled


def test_no_spelling_of_anns_video_reaches_bob(sessions: dict[str, httpx.Client], files: dict[str, Path],
                                              idle_server: AccountsServer) -> None:
    for spelled in _spellings(files["video"], idle_server.outputs):
        r = fetch(sessions["bob"], spelled)
        assert r.status_code in (403, 404) and r.content != files["video"].read_bytes(), spelled


def test_the_database_is_kept_outside_the_served_folder(idle_server: AccountsServer) -> None:
    db = idle_server.studio.settings.jobs_db  # type: ignore[attr-defined]
    assert db.exists() and idle_server.outputs.resolve() not in db.resolve().parents
    assert not list(idle_server.outputs.glob("jobs.db*"))


def test_without_a_login_nothing_is_served(idle_server: AccountsServer, files: dict[str, Path]) -> None:
    with httpx.Client(base_url=idle_server.url, timeout=30) as anonymous:
        r = fetch(anonymous, str(files["video"]))
        assert r.status_code == 401 and r.content != files["video"].read_bytes()


def test_a_jobs_live_preview_reaches_its_owner_and_an_admin_only(idle_server: AccountsServer,
                                                                 sessions: dict[str, httpx.Client]) -> None:
    from wan_studio.engine.job import work_dir_of
    from wan_studio.engine.request import GenerationRequest

    studio = idle_server.studio
    job = studio.queue.submit(GenerationRequest(prompt="ann preview", model="demo", width=64, height=64,  # type: ignore[attr-defined]
                                                num_frames=5, steps=2), owner="ann-tab", user="ann")
    preview = work_dir_of(idle_server.outputs, job.id) / "preview-000001.jpg"
    preview.parent.mkdir(parents=True)
    preview.write_bytes(b"\xff\xd8\xff\xe0" + b"j" * 2000)
    beside = preview.with_name("outputs.json")  # the rest of the job's work folder stays closed
    beside.write_text("{}")
    for who in ("ann", "root"):
        r = fetch(sessions[who], str(preview))
        assert r.status_code == 200 and r.content == preview.read_bytes(), who
    assert fetch(sessions["bob"], str(preview)).status_code == 404
    assert fetch(sessions["ann"], str(beside)).status_code == 404
    assert fetch(sessions["ann"], str(preview.with_name("preview-1.jpg.tmp"))).status_code == 404
    for spelled in _spellings(preview, idle_server.outputs)[1:]:  # other spellings never bypass the owner check
        assert fetch(sessions["bob"], spelled).content != preview.read_bytes(), spelled
    link = work_dir_of(idle_server.outputs, "annvideo0002") / "preview-000001.jpg"  # a work folder of no job, a symlink in it
    os.symlink(preview, link)
    assert fetch(sessions["root"], str(link)).status_code == 404
    with httpx.Client(base_url=idle_server.url, timeout=30) as anonymous:
        assert fetch(anonymous, str(preview)).status_code == 401
    preview.unlink()
    assert fetch(sessions["ann"], str(preview)).status_code == 404  # the job ended: gone
