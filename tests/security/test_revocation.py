"""Removing a user from the accounts file, or giving them a new password, ends their logins within a
few seconds: the browser's cookie (UI events, the file route, REST), a remembered HTTP Basic
password and a logged-in gradio_client. A real server with an accounts file."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from gradio_client import Client

from tests.security.conftest import PASSWORDS, AccountsServer
from wan_studio.accounts import add_account
from wan_studio.jobs.store import RestoredJob

TINY = json.dumps({"width": 64, "height": 64, "num_frames": 5, "steps": 2})
WITHIN_S = 5.0


def eventually(check: Callable[[], bool], within_s: float = WITHIN_S) -> float:
    """Seconds until ``check()`` holds; fails after ``within_s``."""
    t0 = time.monotonic()
    while not check():
        assert time.monotonic() - t0 < within_s, "still logged in"
        time.sleep(0.2)
    return time.monotonic() - t0


def logged_in(name: str, url: str, password: str | None = None) -> httpx.Client:
    c = httpx.Client(base_url=url, timeout=30)
    assert c.post("login", data={"username": name, "password": password or PASSWORDS[name]}).status_code == 200
    return c


def video_of(server: AccountsServer, user: str) -> Path:
    day = server.outputs / "2026-12-02"
    day.mkdir(parents=True, exist_ok=True)
    video, sidecar = day / f"video-{user}.mp4", day / f"video-{user}.json"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + user.encode() * 100)
    sidecar.write_text('{"request": {}, "video": {"file": "%s"}}' % video.name)
    server.studio.queue.store.restore_done([RestoredJob(f"video-{user}", {"prompt": "p", "model": "demo"},  # type: ignore[attr-defined]
                                                        [str(video), str(sidecar)], 1.0, user=user)])
    return video


def rewrite_without(accounts: Path, name: str) -> None:
    lines = [ln for ln in accounts.read_text().splitlines() if ln.split(":", 1)[0] != name]
    tmp = accounts.with_suffix(".new")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(accounts)


@pytest.fixture(scope="module")
def rest_server(idle_server: AccountsServer) -> AccountsServer:
    from wan_studio.ui import rest

    rest.mount(idle_server.app, idle_server.studio)  # type: ignore[arg-type]
    return idle_server


def test_a_removed_user_is_logged_out_everywhere(rest_server: AccountsServer) -> None:
    server = rest_server
    accounts = server.outputs.parent / "accounts.txt"
    video = video_of(server, "ann")
    browser = logged_in("ann", server.url)
    client = Client(server.url, auth=server.auth("ann"), verbose=False)
    job = client.predict("ann's job", "demo-fast", 1, TINY, 0, api_name="/submit")
    basic = httpx.Client(base_url=server.url, timeout=30, auth=server.auth("ann"))
    bob = logged_in("bob", server.url)
    # Everything works while she is in the file (and the Basic password is now remembered).
    assert browser.get(f"gradio_api/file={video}").status_code == 200
    assert browser.get(f"api/v1/jobs/{job}").status_code == 200
    assert basic.get(f"api/v1/jobs/{job}").status_code == 200

    rewrite_without(accounts, "ann")
    eventually(lambda: browser.get(f"gradio_api/file={video}").status_code == 401)
    assert browser.get(f"api/v1/jobs/{job}").status_code == 401
    assert browser.post("gradio_api/queue/join", json={"data": [], "fn_index": 0, "session_hash": "x"}).status_code == 401
    assert basic.get(f"api/v1/jobs/{job}").status_code == 401
    with pytest.raises(httpx.HTTPStatusError, match="401 Unauthorized"):
        client.predict("", 10, api_name="/list_jobs")
    assert browser.post("login", data={"username": "ann", "password": PASSWORDS["ann"]}).status_code != 200
    # Others are not affected.
    assert bob.get(f"api/v1/jobs/{job}").status_code == 200
    for c in (browser, basic, bob):
        c.close()


def test_a_new_password_ends_the_old_logins(rest_server: AccountsServer) -> None:
    server = rest_server
    accounts = server.outputs.parent / "accounts.txt"
    video = video_of(server, "bob")
    browser = logged_in("bob", server.url)
    client = Client(server.url, auth=server.auth("bob"), verbose=False)
    old_basic = httpx.Client(base_url=server.url, timeout=30, auth=server.auth("bob"))
    assert old_basic.get("api/v1/jobs/video-bob").status_code == 200
    assert browser.get(f"gradio_api/file={video}").status_code == 200

    add_account(accounts, "bob", "bob-new-password", "user")
    took = eventually(lambda: browser.get(f"gradio_api/file={video}").status_code == 401)
    assert took < WITHIN_S
    assert old_basic.get("api/v1/jobs/video-bob").status_code == 401
    with pytest.raises(httpx.HTTPStatusError, match="401 Unauthorized"):
        client.predict("", 10, api_name="/list_jobs")
    fresh = logged_in("bob", server.url, "bob-new-password")
    assert fresh.get(f"gradio_api/file={video}").status_code == 200
    assert Client(server.url, auth=("bob", "bob-new-password"), verbose=False).predict("", 10, api_name="/list_jobs") \
        is not None
    for c in (browser, old_basic, fresh):
        c.close()
