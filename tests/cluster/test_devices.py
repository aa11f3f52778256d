"""A worker's device mask is in its environment before its first CUDA call."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from wan_studio.cluster.devices import MASK_VARIABLE, mask_for, register_threads, start_with_env, worker_environment
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


def test_gpu_worker_pins_with_several_threads_on_a_machine_of_many_cores() -> None:
    env = worker_environment("cuda:1", environ={}, cpu_count=16)
    assert env == {MASK_VARIABLE: "1",
                   "PYTORCH_CUDA_ALLOC_CONF": "pinned_use_cuda_host_register:True,pinned_num_register_threads:8"}


def test_register_threads_are_a_power_of_two_torch_accepts() -> None:
    assert [register_threads(n) for n in (None, 1, 2, 4, 6, 12, 64)] == [1, 1, 1, 2, 2, 4, 8]


def test_a_users_allocator_settings_are_kept_and_extended() -> None:
    env = worker_environment("cuda:0", environ={"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}, cpu_count=16)
    assert env["PYTORCH_CUDA_ALLOC_CONF"] == ("expandable_segments:True,pinned_use_cuda_host_register:True,"
                                              "pinned_num_register_threads:8")
    # torch reads PYTORCH_ALLOC_CONF only when the CUDA-specific one is unset: extend what it reads
    env = worker_environment("cuda:0", environ={"PYTORCH_ALLOC_CONF": "max_split_size_mb:512"}, cpu_count=16)
    assert "PYTORCH_CUDA_ALLOC_CONF" not in env
    assert env["PYTORCH_ALLOC_CONF"].startswith("max_split_size_mb:512,pinned_use_cuda_host_register:True")


def test_a_users_own_pinning_choice_wins() -> None:
    mine = {"PYTORCH_CUDA_ALLOC_CONF": "pinned_use_cuda_host_register:False"}
    assert worker_environment("cuda:0", environ=mine, cpu_count=64) == {MASK_VARIABLE: "0"}


def test_cpu_and_two_core_workers_get_only_their_mask() -> None:
    assert worker_environment("cpu", environ={}, cpu_count=64) == {MASK_VARIABLE: ""}
    assert worker_environment("cuda:0", environ={}, cpu_count=2) == {MASK_VARIABLE: "0"}


def test_started_worker_sees_the_settings_and_the_parent_keeps_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    import multiprocessing as mp

    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_report_env, args=(child,))
    start_with_env(proc, worker_environment("cuda:0", cpu_count=16))
    seen = parent.recv() if parent.poll(60) else None
    proc.join(30)
    assert seen is not None and seen["PYTORCH_CUDA_ALLOC_CONF"].endswith("pinned_num_register_threads:8")
    assert seen[MASK_VARIABLE] == "0"
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"


def _report_env(conn: object) -> None:
    conn.send({k: os.environ.get(k) for k in (MASK_VARIABLE, "PYTORCH_CUDA_ALLOC_CONF")})  # type: ignore[attr-defined]
