"""Start-up as a user meets it: ``python app.py`` as a subprocess per case. Each problem a user can
cause is one sentence and a non-zero exit status, never a traceback (``--debug`` adds it)."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def app(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run ``python app.py ARGS`` to its end; stdout and stderr as text."""
    full_env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})}
    return subprocess.run([sys.executable, "app.py", *args], cwd=ROOT, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def one_sentence(res: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    """Assert the run failed with ``code`` and said ``words`` in one line with no traceback."""
    out = res.stdout + res.stderr
    assert res.returncode == code, out
    assert "Traceback" not in out, out
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out
    for w in words:
        assert w in lines[0], out
    return lines[0]


def test_help_version_and_a_mistyped_flag_import_nothing_heavy():
    probe = (
        "import runpy, sys\n"
        "sys.argv = ['app.py'] + sys.argv[1:]\n"
        "try:\n    runpy.run_path('app.py', run_name='__main__')\n"
        "except SystemExit as e:\n    code = e.code\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'gradio', 'transformers', 'huggingface_hub') if m in sys.modules)\n"
        "print('HEAVY', heavy, 'CODE', code, file=sys.stderr)\n"
    )
    for args, code in ((["--help"], 0), (["--version"], 0), (["--prot", "80"], 2)):
        res = subprocess.run([sys.executable, "-c", probe, *args], cwd=ROOT, capture_output=True, text=True,
                             timeout=120)
        assert f"HEAVY [] CODE {code}" in res.stderr, (args, res.stderr)
        assert "Traceback" not in res.stderr
    assert "Wan Studio 0." in app("--version").stdout
    assert "unrecognized arguments: --prot" in res.stderr


def test_unknown_model_keys_list_the_known_ones(tmp_path: Path):
    one_sentence(app("--download", "wan9"), 2, "unknown model", "ti2v-5b", "s2v-14b")
    one_sentence(app("--model", "wan9", "--outputs-dir", str(tmp_path)), 2, "--model wan9", "ti2v-5b")


def test_the_demo_needs_no_download():
    one_sentence(app("--download", "demo"), 2, "built into the app")


class Refuse(http.server.BaseHTTPRequestHandler):
    """A Hub that answers every request with 401, as for a gated model without a login."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(401)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"error": "Access to model Wan-AI/Wan2.2-TI2V-5B-Diffusers is restricted."}')

    do_HEAD = do_GET

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def refusing_hub() -> Iterator[str]:
    server = http.server.HTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_download_without_the_hub_says_so_and_that_it_resumes(tmp_path: Path, refusing_hub: str):
    models = tmp_path / "my models"
    offline = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}"}
    line = one_sentence(app("--download", "ti2v-5b", "--models-dir", str(models), env=offline), 3,
                        "Could not reach the Hugging Face Hub", "resumes")
    assert "Connection refused" in line
    refused = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": refusing_hub}
    one_sentence(app("--download", "ti2v-5b", "--models-dir", str(models), env=refused), 3,
                 "refused", "HTTP 401", "hf auth login", "resumes")
    debug = app("--download", "ti2v-5b", "--models-dir", str(models), "--debug", env=offline)
    assert debug.returncode == 3 and "Traceback" in debug.stderr  # for bug reports


def test_a_taken_port_suggests_another(tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        one_sentence(app("--port", str(port), "--outputs-dir", str(tmp_path / "out")), 2,
                     f"Port {port}", "already in use", f"--port {port + 1}")


def test_an_outputs_folder_that_cannot_hold_videos_is_refused(tmp_path: Path):
    a_file = tmp_path / "videos.txt"
    a_file.write_text("not a folder")
    one_sentence(app("--outputs-dir", str(a_file)), 2, "is a file, not a folder")
    one_sentence(app("--outputs-dir", str(a_file / "sub")), 2, "cannot create the outputs folder")
    one_sentence(app("--outputs-dir", "/proc"), 2, "cannot write to the outputs folder /proc")


def test_a_damaged_accounts_file_is_refused(tmp_path: Path):
    accounts = tmp_path / "accounts.txt"
    accounts.write_text("alice:plaintext-password\n")
    one_sentence(app("--accounts", str(accounts), "--outputs-dir", str(tmp_path / "o")), 3,
                 "line 1", "name:scrypt-hash:user|admin")
    accounts.write_bytes(b"\xff\xfe\x00garbage")
    one_sentence(app("--accounts", str(accounts), "--outputs-dir", str(tmp_path / "o")), 3,
                 "cannot read the accounts file")


def test_a_flag_whose_extra_is_missing_names_the_requirements_file(tmp_path: Path):
    # The package metadata lookup answers "not installed" for Ray and bitsandbytes.
    probe = (
        "import importlib.metadata as m, runpy, sys\n"
        "real = m.version\n"
        "def version(name):\n"
        "    if name in ('ray', 'bitsandbytes'):\n        raise m.PackageNotFoundError(name)\n"
        "    return real(name)\n"
        "m.version = version\n"
        "sys.argv = ['app.py'] + sys.argv[1:]\n"
        "runpy.run_path('app.py', run_name='__main__')\n"
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", probe, *args, "--outputs-dir", str(tmp_path)], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)

    one_sentence(run("--ray-address", "auto"), 2, "--ray-address needs ray", "pip install -r requirements-cluster.txt")
    one_sentence(run("--allow-8bit"), 2, "--allow-8bit needs bitsandbytes", "requirements-gpu.txt")


def test_a_comfyui_folder_that_is_not_one_is_refused_with_the_right_one(tmp_path: Path):
    out = str(tmp_path / "o")
    one_sentence(app("--comfyui-dir", str(tmp_path / "nope"), "--outputs-dir", out), 2,
                 f"--comfyui-dir {tmp_path / 'nope'} is not a folder", "diffusion_models/")
    (tmp_path / "ComfyUI" / "models" / "diffusion_models").mkdir(parents=True)
    one_sentence(app("--comfyui-dir", str(tmp_path / "ComfyUI"), "--outputs-dir", out), 2,
                 "is ComfyUI's own folder", f"--comfyui-dir {tmp_path / 'ComfyUI' / 'models'}")
