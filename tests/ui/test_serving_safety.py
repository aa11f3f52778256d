"""The server hands out files from the outputs folder only, and refuses oversized uploads."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from gradio_client import Client, handle_file


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.mark.parametrize("target", [
    "/etc/passwd",
    "../../../../etc/passwd",
    "%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "app.py",
    "wan_studio/settings.py",
])
def test_files_outside_outputs_are_not_served(server, target: str):
    for prefix in ("gradio_api/file=", "file="):
        url = server.url + prefix + (target if "%" in target else urllib.parse.quote(target))
        assert status_of(url) in (403, 404), url


def test_a_server_path_passed_as_the_image_is_refused(server, tmp_path: Path):
    """A raw API call naming a real picture on the server (never uploaded) must not get it read.

    Raw HTTP on purpose: gradio_client would upload a path that exists on the caller's machine,
    which here is the same machine, and so hide what the server does with a bare path.
    """
    import json

    from PIL import Image

    secret = tmp_path / "secret.png"
    Image.new("RGB", (64, 64), (200, 10, 10)).save(secret)
    before = sorted(server.outputs.rglob("*.mp4"))
    jobs_before = [j.id for j in server.studio.queue.store.list(limit=10_000)]
    body = json.dumps({"data": ["x", {"path": str(secret), "meta": {"_type": "gradio.FileData"}},
                                "demo-fast", 1]}).encode()
    req = urllib.request.Request(server.url + "gradio_api/call/generate", data=body,
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=10)
    reply = refused.value.read().decode()
    assert refused.value.code == 400 and "only uploaded files are read" in reply
    assert str(secret) not in reply and "Traceback" not in reply
    # The call has ended: no job was queued from it, so no video can come of it later.
    assert [j.id for j in server.studio.queue.store.list(limit=10_000)] == jobs_before
    assert sorted(server.outputs.rglob("*.mp4")) == before


def test_oversized_upload_is_refused(server, tmp_path: Path):
    limit_mb = server.studio.settings.max_upload_mb
    big = tmp_path / "huge.png"
    with open(big, "wb") as f:
        f.truncate((limit_mb + 1) * 1024 * 1024)
    client = Client(server.url, verbose=False)
    with pytest.raises(ValueError, match=f"huge.png exceeds the maximum file size of {limit_mb * 1024 * 1024} bytes"):
        client.predict("x", handle_file(str(big)), "demo-fast", 1, api_name="/generate")
