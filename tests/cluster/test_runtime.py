"""The worker runtime every executor shares: the disk fills (ENOSPC injected); the worker stops at the
worst moments (after the video, before the sidecar or the done report); GPU pins map to this
process's own GPU names or are refused in words."""

from __future__ import annotations

import errno
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from wan_studio.cluster.runtime import RuntimeConfig, WorkerRuntime
from wan_studio.engine import video_io
from wan_studio.engine.job import WORK_FOLDER
from wan_studio.engine.request import GenerationRequest, RequestError, validate
from wan_studio.memory.manager import ModelManager, default_loader


class _Worker:
    """A runtime on the demo model with ``send`` bound, as a transport holds it."""

    def __init__(self, name: str, out: Path, send: Any) -> None:
        models = out.parent / "m"
        config = RuntimeConfig(models_dir=str(models), outputs_dir=str(out))
        self.runtime = WorkerRuntime(name, config, manager=ModelManager(default_loader(models)))
        self.send = send

    def run(self, job_id: str, request: dict[str, Any], cancel: threading.Event) -> None:
        self.runtime.run_job(job_id, request, cancel, self.send)


def test_disk_full_while_writing_fails_the_job_with_the_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[dict[str, Any]] = []
    runner = _Worker("w", tmp_path / "out", sent.append)
    request = validate(GenerationRequest(prompt="a fox", width=64, height=64, num_frames=5, steps=1, seed=1))
    runner.run("ok", request.to_dict(), threading.Event())
    earlier = [Path(p) for p in sent[-1]["outputs"]]

    def no_space(*_a: Any, **_k: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(video_io.imageio_ffmpeg, "write_frames", no_space)
    runner.run("full", {**request.to_dict(), "seed": 2}, threading.Event())
    last = sent[-1]
    assert (last["ev"], last["job_id"]) == ("failed", "full")
    assert last["error"].startswith("the disk holding ") and " is full (" in last["error"] and "free space" in last["error"]
    assert all(p.exists() for p in earlier)
    # Only the earlier job's files, plus the failed job's step checkpoint kept in its work folder for a retry.
    assert sorted(p.name for p in (tmp_path / "out").rglob("*") if p.is_file() and ".work" not in p.parts) \
        == sorted(p.name for p in earlier)


class _Died(BaseException):
    """The worker process ending at this point (a kill): nothing after it runs."""


def _tiny(seed: int) -> dict[str, Any]:
    return validate(GenerationRequest(prompt="a fox", width=64, height=64, num_frames=5, steps=2, seed=seed)).to_dict()


def _videos(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*.mp4") if not p.name.startswith("."))


def test_worker_stopped_before_reporting_done_leaves_one_video_and_the_retry_adopts_it(tmp_path: Path) -> None:
    out = tmp_path / "out"

    def die_on_done(msg: dict[str, Any]) -> None:
        if msg["ev"] == "done":
            raise _Died

    with pytest.raises(_Died):
        _Worker("w", out, die_on_done).run("j1", _tiny(3),
                                                                                            threading.Event())
    written = _videos(out)
    assert len(written) == 1
    sent: list[dict[str, Any]] = []
    _Worker("w2", out, sent.append).run("j1", _tiny(3),
                                                                                      threading.Event())
    assert sent[-1]["ev"] == "done" and Path(sent[-1]["outputs"][0]) == written[0]
    assert not any(m["ev"] == "progress" and m["progress"]["stage"] == "denoising" for m in sent)  # not rendered again
    assert _videos(out) == written
    assert json.loads(Path(sent[-1]["outputs"][1]).read_text())["job_id"] == "j1"


def test_worker_stopped_between_video_and_sidecar_is_rewritten_under_the_same_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    real_write_json = video_io.write_json

    def die_on_sidecar(path: Path, data: dict[str, Any]) -> Path:  # after the settings went into the video
        raise _Died

    monkeypatch.setattr(video_io, "write_json", die_on_sidecar)
    with pytest.raises(_Died):
        _Worker("w", out, lambda m: None).run("j2", _tiny(4),
                                                                                             threading.Event())
    first = _videos(out)
    assert len(first) == 1 and not first[0].with_suffix(".json").exists()
    monkeypatch.setattr(video_io, "write_json", real_write_json)
    sent: list[dict[str, Any]] = []
    _Worker("w2", out, sent.append).run("j2", _tiny(4),
                                                                                      threading.Event())
    assert sent[-1]["ev"] == "done"
    assert _videos(out) == first == [Path(sent[-1]["outputs"][0])]
    assert not (out / WORK_FOLDER / "j2").exists()


def test_a_job_that_fails_after_an_interrupted_attempt_leaves_no_video(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    monkeypatch.setattr(video_io, "write_json", lambda path, data: (_ for _ in ()).throw(_Died()))
    with pytest.raises(_Died):
        _Worker("w", out, lambda m: None).run("j3", _tiny(5),
                                                                                             threading.Event())
    assert len(_videos(out)) == 1
    monkeypatch.setattr(video_io, "write_json", lambda path, data: (_ for _ in ()).throw(
        OSError(errno.EIO, "Input/output error")))
    sent: list[dict[str, Any]] = []
    _Worker("w2", out, sent.append).run("j3", _tiny(5),
                                                                                      threading.Event())
    assert sent[-1]["ev"] == "failed"
    assert _videos(out) == []


def _pinned(gpu: str) -> GenerationRequest:
    return validate(GenerationRequest(prompt="a fox", model="t2v-a14b", width=832, height=480, num_frames=81,
                                      steps=4, seed=1, overrides={"gpu": gpu}))


def test_a_pin_to_the_apps_gpu_runs_on_the_workers_own_name_for_it(tmp_path: Path) -> None:
    from wan_studio.catalog.specs import get_spec
    from wan_studio.memory.hardware import GIB, GpuInfo, Hardware

    # A worker started with CUDA_VISIBLE_DEVICES=1 sees the app's GPU 1 as its only GPU, cuda:0.
    hw = Hardware((GpuInfo(0, "RTX 3090", 24 * GIB, 23 * GIB),), 64 * GIB, 60 * GIB)
    runtime = WorkerRuntime("worker-1", RuntimeConfig(outputs_dir=str(tmp_path)), hardware=hw,
                            manager=ModelManager(default_loader(tmp_path)), pins={"cuda:1": "cuda:0"})
    plan = runtime.plans(get_spec("t2v-a14b"), _pinned("cuda:1"))[0]
    assert plan.placement("transformer").devices[0] == "cuda:0"
    with pytest.raises(RequestError, match=r"pinned to cuda:2, which worker worker-1 .* has cuda:0"):
        runtime.plans(get_spec("t2v-a14b"), _pinned("cuda:2"))
