"""The README's set-up commands stay true: CI runs the test command written there, the CPU line
takes PyTorch's CPU wheels, the NVIDIA line PyPI's CUDA build, and optional extras stay optional."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CPU_TORCH = "pip install torch==2.13.0 --extra-index-url https://download.pytorch.org/whl/cpu"


def setup_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text.split("## Set up", 1)[1].split("\n## ", 1)[0]


def commands() -> list[str]:
    return re.findall(r"```bash\n(.+?)\n```", setup_section())


def requirement_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.add(re.split(r"[\[<>=;! ]", line, 1)[0].lower())
    return names


def test_readme_has_exactly_two_setup_commands_on_the_cpu_build():
    run, test = commands()
    assert run == f"{CPU_TORCH} && pip install -r requirements.txt && python app.py"
    assert test == f"{CPU_TORCH} && pip install -r requirements-dev.txt && python -m pytest"


def test_the_nvidia_line_takes_pypis_cuda_build_and_the_gpu_extras():
    nvidia = "pip install torch==2.13.0 && pip install -r requirements.txt -r requirements-gpu.txt && python app.py"
    assert f"`{nvidia}`" in setup_section()
    assert "download.pytorch.org" not in nvidia  # plain PyPI's torch is the CUDA build on Linux


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert commands()[1] in ci.splitlines()
    assert "set -euo pipefail" in ci


def test_cuda_and_cluster_extras_are_optional_but_the_tests_get_ray():
    core = requirement_names(ROOT / "requirements.txt")
    assert not core & {"ray", "bitsandbytes", "xformers"}
    assert {"bitsandbytes", "xformers"} <= requirement_names(ROOT / "requirements-gpu.txt")
    assert "ray" in requirement_names(ROOT / "requirements-cluster.txt")
    dev = (ROOT / "requirements-dev.txt").read_text(encoding="utf-8").splitlines()
    assert "-r requirements.txt" in dev and "-r requirements-cluster.txt" in dev
    for extra in ("requirements-gpu.txt", "requirements-cluster.txt"):
        assert extra in setup_section()
