"""Step checkpoints on the tiny real pipelines: a run stopped mid-way resumes at its last kept step
and makes the video an uninterrupted run makes; stale checkpoints are ignored; files are removed."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from wan_studio.catalog.tiny import build_a14b_pipeline
from wan_studio.engine.checkpoint import StepCheckpoints, request_key
from wan_studio.engine.generate import GenerationCancelled, Progress, generate, render
from wan_studio.engine.request import GenerationRequest, validate
from wan_studio.engine.video_io import read_mp4


def _request(**kw) -> GenerationRequest:
    base = dict(prompt="a lighthouse in a storm", model="demo", width=64, height=64, num_frames=5, fps=8,
                steps=6, seed=7)
    return GenerationRequest(**{**base, **kw}).resolved()


def _checkpoints(folder: Path, r: GenerationRequest) -> StepCheckpoints:
    # budget 1.0: a checkpoint after every step, whatever the step time on this CPU
    return StepCheckpoints(folder, request_key(r.to_dict()), budget=1.0)


def _stopped_at(pipe, r: GenerationRequest, folder: Path, step: int) -> None:
    """Run ``r`` and stop it (as a kill would) after ``step`` finished steps."""
    cancel = threading.Event()

    def stop(done: int) -> None:
        if done == step:
            cancel.set()

    with pytest.raises(GenerationCancelled):
        render(pipe, r, cancel=cancel, between_steps=stop, checkpoints=_checkpoints(folder, r))


def _resumed(pipe, r: GenerationRequest, folder: Path) -> tuple[np.ndarray, int | None, list[int]]:
    steps: list[int] = []

    def seen(p: Progress) -> None:
        if p.stage == "denoising":
            steps.append(p.step)

    done = render(pipe, r, seen, checkpoints=_checkpoints(folder, r))
    return done.frames, done.resumed_from, steps


def test_stopped_run_resumes_at_its_checkpoint_and_makes_the_same_video(demo_pipe, tmp_path: Path) -> None:
    r = _request()
    whole = render(demo_pipe, r).frames
    _stopped_at(demo_pipe, r, tmp_path, 4)
    frames, resumed, steps = _resumed(demo_pipe, r, tmp_path)
    assert resumed == 4 and steps == [5, 6]  # only the two missing steps ran
    assert np.abs(frames.astype(int) - whole.astype(int)).max() <= 1


def test_image_to_video_resumes_to_the_same_video(demo_pipe, tmp_path: Path, image_file: Path) -> None:
    r = _request(image=str(image_file), steps=5)
    whole = render(demo_pipe, r).frames
    _stopped_at(demo_pipe, r, tmp_path, 2)
    frames, resumed, _ = _resumed(demo_pipe, r, tmp_path)
    assert resumed == 2
    assert np.abs(frames.astype(int) - whole.astype(int)).max() <= 1


def test_two_expert_job_resumed_before_the_boundary_keeps_the_expert_order(tmp_path: Path) -> None:
    pipe = build_a14b_pipeline("t2v")
    pipe.set_progress_bar_config(disable=True)
    r = GenerationRequest(prompt="a red fox running", model="t2v-a14b", width=64, height=64, num_frames=5,
                          steps=8, seed=3).resolved()
    log: list[str] = []
    pipe.transformer.register_forward_pre_hook(lambda *_: log.append("high"))
    pipe.transformer_2.register_forward_pre_hook(lambda *_: log.append("low"))
    whole = render(pipe, r).frames
    uninterrupted = list(log)
    highs = uninterrupted.count("high") // 2  # two forwards per step (guidance)
    assert 1 < highs < 8, "the test needs a boundary inside the run"
    log.clear()
    _stopped_at(pipe, r, tmp_path, 1)
    log.clear()
    frames, resumed, _ = _resumed(pipe, r, tmp_path)
    assert resumed == 1
    assert log == uninterrupted[2:]  # the remaining steps, each on the expert it had before
    assert np.abs(frames.astype(int) - whole.astype(int)).max() <= 1


def test_a_checkpoint_of_another_request_is_ignored(demo_pipe, tmp_path: Path) -> None:
    _stopped_at(demo_pipe, _request(seed=1), tmp_path, 3)
    other = _request(seed=2)
    whole = render(demo_pipe, other).frames
    frames, resumed, steps = _resumed(demo_pipe, other, tmp_path)
    assert resumed is None and steps[0] == 1
    assert np.array_equal(frames, whole)


def test_the_video_removes_its_checkpoint_and_the_sidecar_says_where_it_resumed(demo_pipe, tmp_path: Path) -> None:
    r = validate(GenerationRequest(prompt="a lighthouse in a storm", model="demo", width=192, height=128,
                                   num_frames=9, fps=8, steps=4, seed=5))
    work = tmp_path / "work"
    _stopped_at(demo_pipe, r, work, 3)
    assert _checkpoints(work, r).path.is_file()
    result = generate(demo_pipe, r, tmp_path / "out", checkpoints=_checkpoints(work, r))
    side = json.loads(result.sidecar_path.read_text())
    assert side["checkpoints"]["resumed_from_step"] == 3
    assert list(work.iterdir()) == []
    fresh = generate(demo_pipe, r, tmp_path / "out")
    a, _ = read_mp4(result.video_path)
    b, _ = read_mp4(fresh.video_path)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_a_run_resumed_after_its_last_step_says_it_is_decoding(demo_pipe, tmp_path: Path) -> None:
    """Stopped after its last step (killed before the decode): the retry denoises nothing, and its
    progress goes from encoding to decoding, with the decode's share, as an uninterrupted run's."""
    r = _request()
    whole = render(demo_pipe, r).frames
    _stopped_at(demo_pipe, r, tmp_path, 6)
    seen: list[Progress] = []
    done = render(demo_pipe, r, seen.append, checkpoints=_checkpoints(tmp_path, r))
    assert done.resumed_from == 6
    stages = [p.stage for p in seen]
    assert "denoising" not in stages and "decoding" in stages
    assert any(p.stage == "decoding" and p.decoded > 0 for p in seen)  # the decode's own progress
    assert np.abs(done.frames.astype(int) - whole.astype(int)).max() <= 1
