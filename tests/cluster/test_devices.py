"""A worker's device mask is in its environment before its first CUDA call."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from wan_studio.cluster.devices import MASK_VARIABLE, mask_for
from wan_studio.cluster.local import LocalExecutor
from wan_studio.cluster.runtime import RuntimeConfig

# Loaded by every Python process started with this folder on PYTHONPATH: records each torch.cuda
# entry point called and the device mask the process had at that moment.
RECORDER = '''
import os
record = os.environ.get("CUDA_CALLS_RECORD")
if record:
    def _note(name):
        with open(record, "a") as f:
            f.write(f"{os.getpid()} {name} {os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')!s}\\n")
    _note("start")
    import torch

    def _wrap(owner, name):
        real = getattr(owner, name)
        def recorded(*a, **k):
            _note(name)
            return real(*a, **k)
        setattr(owner, name, recorded)

    for _name in ("is_available", "device_count", "init", "_lazy_init", "current_device", "mem_get_info",
                  "get_device_properties", "get_device_name", "synchronize"):
        _wrap(torch.cuda, _name)
    _wrap(torch._C, "_cuda_getDeviceCount")
'''


def _calls(record: Path) -> list[list[str]]:
    """(pid, entry point, mask) of every recorded call."""
    return [line.split(" ", 2) for line in record.read_text().splitlines()] if record.exists() else []


def _calls_after_start(record: Path) -> bool:
    return any(name != "start" for _pid, name, _mask in _calls(record))


def test_mask_of_each_device() -> None:
    assert (mask_for("cuda:1"), mask_for("cpu")) == ("1", "")
    with pytest.raises(ValueError, match="cpu' or 'cuda:<index>'"):
        mask_for("gpu1")


def test_worker_sees_its_mask_from_its_first_instruction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(RECORDER)
    record = tmp_path / "calls.txt"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("CUDA_CALLS_RECORD", str(record))
    monkeypatch.delenv(MASK_VARIABLE, raising=False)
    executor = LocalExecutor(RuntimeConfig(models_dir=str(tmp_path / "models"), outputs_dir=str(tmp_path / "outputs")),
                             ["cuda:1"])
    executor.start(lambda e: None)
    try:
        # The worker reads its hardware while it starts: wait for those calls, not for the whole start.
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not _calls_after_start(record):
            time.sleep(0.2)
    finally:
        executor.shutdown()
    assert MASK_VARIABLE not in os.environ  # the app's own environment is left as it was
    mine = [(name, mask) for pid, name, mask in _calls(record) if pid == str(executor.workers()[0].pid)]
    # The worker made CUDA calls (reading its hardware), and every one saw only GPU 1.
    assert ("start", "1") in mine and any(name != "start" for name, _ in mine), mine
    assert {mask for _, mask in mine} == {"1"}, mine
