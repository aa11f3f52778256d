"""Every example of the README runs as written against the real app (``python app.py``): the
Python script through gradio_client and the curl lines through bash. Only the port differs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_app_restart import wait_up
from tests.ui.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
SETUP = README.split("## Set up", 1)[1].split("\n## ", 1)[0]


def examples(language: str) -> list[str]:
    """The README's fenced examples in ``language``, outside the set-up commands."""
    return [block for block in re.findall(rf"```{language}\n(.+?)\n```", README, re.S) if block not in SETUP]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("readme-app")
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--outputs-dir", str(root / "outputs"),
                             "--models-dir", str(root / "models")], cwd=ROOT, env=env,
                            stdout=open(root / "app.log", "wb"), stderr=subprocess.STDOUT)
    try:
        wait_up(proc, port, timeout_s=600)  # a loaded CI machine can take minutes to import torch
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(60)


def as_written(code: str, address: str) -> str:
    assert "127.0.0.1:7860" in code, "the example talks to the app's default address"
    return code.replace("127.0.0.1:7860", address)


def test_the_readme_has_a_python_and_a_curl_example():
    assert len(examples("python")) == 1 and "gradio_client" in examples("python")[0]
    assert len(examples("bash")) == 1 and "curl" in examples("bash")[0]


def test_the_python_example_prints_the_video_and_its_timings(app_url: str, tmp_path: Path):
    script = tmp_path / "example.py"
    script.write_text(as_written(examples("python")[0], app_url), encoding="utf-8")
    res = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    path, _, timings = res.stdout.strip().splitlines()[-1].partition(" ")  # after "Loaded as API"
    assert path.endswith(".mp4") and Path(path).is_file()
    assert "total_s" in timings


def test_the_curl_example_queues_reads_and_cancels_a_job(app_url: str, tmp_path: Path):
    res = subprocess.run(["bash", "-euo", "pipefail", "-c", as_written(examples("bash")[0], app_url)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    queued, status, cancelled = json_documents(res.stdout)
    assert queued == {"job_id": queued["job_id"], "status": "queued"} and len(queued["job_id"]) == 12
    assert status["id"] == queued["job_id"] and status["status"] in ("queued", "running")
    assert cancelled["id"] == queued["job_id"] and cancelled["status"] in ("cancelled", "running")


def json_documents(text: str) -> list[dict]:
    """The JSON objects curl printed one after the other."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while (at := text.find("{", at)) != -1:
        doc, end = decoder.raw_decode(text, at)
        found.append(doc)
        at = end
    return found
