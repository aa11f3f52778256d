"""Importing the package has no side effects: no torch, no CUDA, until an entry point asks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_importing_the_package_imports_no_torch() -> None:
    done = _python("import wan_studio, sys; assert 'torch' not in sys.modules, 'torch imported'")
    assert done.returncode == 0, done.stderr


def test_a_worker_process_target_imports_no_torch() -> None:
    # What a spawned worker imports to unpickle its target, before its entry point runs.
    done = _python("import sys, wan_studio.cluster.local, wan_studio.cluster.worker, wan_studio.settings;"
                   "assert 'torch' not in sys.modules, 'torch imported'")
    assert done.returncode == 0, done.stderr


def test_bootstrap_hides_cuda_only_packages_without_cuda() -> None:
    done = _python("import os, sys; os.environ['CUDA_VISIBLE_DEVICES'] = '';"
                   "from wan_studio.bootstrap import bootstrap; bootstrap();"
                   "import importlib.util; print(importlib.util.find_spec('xformers') is None,"
                   " importlib.util.find_spec('bitsandbytes') is None)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True"]
