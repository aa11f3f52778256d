"""The README's run command: ``python app.py`` serves the page; flags behave as documented."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from app import share_credentials
from wan_studio.settings import Settings, settings_from_args

ROOT = Path(__file__).resolve().parent.parent


def start(args: list[str], tmp_path: Path) -> tuple[subprocess.Popen, str]:
    from tests.ui.conftest import free_port

    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port), "--outputs-dir", str(tmp_path / "out"),
         "--models-dir", str(tmp_path / "models"), *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    return proc, f"http://127.0.0.1:{port}/"


def wait_for_output(proc: subprocess.Popen, pattern: str, timeout: float = 300) -> str:
    seen = ""
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        seen += line
        if re.search(pattern, seen):
            return seen
    raise AssertionError(f"no {pattern!r} in app output:\n{seen}")


def test_run_command_serves_the_page_on_the_demo_model(tmp_path: Path):
    proc, url = start([], tmp_path)
    try:
        out = wait_for_output(proc, r"--share opens a public link", timeout=300)  # ours, not Gradio's
        assert re.search(r"Wan Studio is ready at http://127\.0\.0\.1:\d+/", out)
        assert "share=True" not in out and "Running on local URL" not in out
        html = urllib.request.urlopen(url, timeout=10).read().decode()
        assert "Wan Studio" in html
        from gradio_client import Client

        video, _files, params, _status = Client(url, verbose=False).predict(
            "a windmill", None, "demo-fast", 3, api_name="/generate")
        assert params["model"] == "demo" and Path(video["video"] if isinstance(video, dict) else video).exists()
        assert list((tmp_path / "out").rglob("*.mp4"))
        import httpx  # scripts' JSON route is served beside Gradio's

        queued = httpx.post(f"{url}api/v1/jobs", json={"prompt": "a mill", "settings": {"steps": 1}}, timeout=30)
        assert queued.status_code == 201 and queued.json()["status"] == "queued"
    finally:
        proc.terminate()
        proc.wait(60)  # a clean stop: the workers finish or are stopped, running jobs are handed back


def test_share_without_internet_generates_a_password_and_keeps_serving(tmp_path: Path):
    proc, url = start(["--share"], tmp_path)
    try:
        out = wait_for_output(proc, r"still serving locally")
        assert "frpc" not in out and "Could not create share link" not in out  # Gradio's text: --debug only
        m = re.search(r"user '(\w+)' and password '([^']+)'", out)
        assert m, out
        from gradio_client import Client
        from gradio_client.exceptions import AuthenticationError

        with pytest.raises(AuthenticationError, match="credentials were not provided"):
            Client(url, verbose=False)  # no login, no access
        Client(url, auth=(m.group(1), m.group(2)), verbose=False).view_api(print_info=False)
    finally:
        proc.terminate()
        proc.wait(60)  # a clean stop waits for the workers (up to 10 s each) before exiting


def test_share_uses_the_given_login_and_never_opens_without_one():
    assert share_credentials(Settings(share=True, auth=("ann", "pw1"))) == ("ann", "pw1")
    user, password = share_credentials(Settings(share=True))
    assert user == "wan" and len(password) >= 16
    assert share_credentials(Settings()) is None


def test_flags_are_parsed_into_settings(tmp_path: Path):
    s = settings_from_args(["--host", "0.0.0.0", "--port", "9000", "--models-dir", str(tmp_path / "m"),
                            "--outputs-dir", str(tmp_path / "o"), "--auth", "me:p:w", "--share"])
    assert (s.host, s.port, s.models_dir, s.outputs_dir, s.auth, s.share) == (
        "0.0.0.0", 9000, tmp_path / "m", tmp_path / "o", ("me", "p:w"), True)


def test_malformed_auth_is_refused(capsys):
    with pytest.raises(SystemExit):
        settings_from_args(["--auth", "nopassword"])
    assert "user:password" in capsys.readouterr().err


def test_download_of_an_unknown_model_lists_the_known_ones():
    res = subprocess.run([sys.executable, "app.py", "--download", "wan9"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2 and "ti2v-5b" in res.stderr


def test_unreachable_ray_cluster_is_a_clear_error(tmp_path: Path):
    res = subprocess.run([sys.executable, "app.py", "--ray-address", "127.0.0.1:1", "--outputs-dir",
                          str(tmp_path / "out"), "--port", "0"], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert res.returncode == 2
    assert "cannot reach the Ray cluster" in res.stderr and "ray start --head" in res.stderr
