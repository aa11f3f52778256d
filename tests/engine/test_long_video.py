"""Long clips: window plan, blended seams, per-window prompts, resume after a crash."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from wan_studio.engine.generate import GenerationCancelled, Progress
from wan_studio.engine.long_video import LongClip, blended_frames, generate_long, plan_long_clip
from wan_studio.engine.request import GenerationRequest, RequestError, validate
from wan_studio.engine.video_io import read_mp4, write_mp4


def base(**kw) -> GenerationRequest:
    fields = dict(prompt="a train crossing a bridge", model="demo", width=64, height=64, num_frames=9,
                  fps=8, steps=2, seed=3)
    fields.update(kw)
    return validate(GenerationRequest(**fields))


@pytest.mark.parametrize("total, window, overlap, n", [
    (9, 9, 2, 1), (16, 9, 2, 2), (17, 9, 1, 2), (49, 17, 4, 4), (24 * 60, 121, 8, 13),
])
def test_window_count_covers_the_clip(total, window, overlap, n):
    clip = LongClip(total, window, overlap, ("p",))
    windows = clip.windows()
    assert len(windows) == n
    assert windows[-1].start + window >= total  # the last window reaches the end
    assert len(windows) == 1 or windows[-2].start + window < total  # and no window is spare
    assert [w.start for w in windows] == [k * (window - overlap) for k in range(n)]


@pytest.mark.parametrize("kw, words", [
    (dict(total_frames=5, overlap=2), "shorter than one window"),
    (dict(total_frames=40, overlap=0), "overlap must be"),
    (dict(total_frames=40, overlap=6), "overlap must be"),
    (dict(total_frames=8 * 200, overlap=2), "at most 120 s"),
    (dict(total_frames=30, overlap=2, prompts=["a", "b"]), "one per window"),
])
def test_bad_long_clip_settings_are_refused(kw, words):
    with pytest.raises(RequestError, match=words):
        plan_long_clip(base(), **kw)


def test_text_only_model_cannot_make_long_clips():
    with pytest.raises(RequestError, match="image-to-video"):
        plan_long_clip(validate(GenerationRequest(prompt="x", model="t2v-a14b")), 200, 4)


def test_seams_are_blended_not_repeated(tmp_path: Path):
    clip = LongClip(total_frames=20, window_frames=9, overlap=3, prompts=("p",))
    videos = []
    for k in range(len(clip.windows())):
        frames = np.full((9, 32, 32, 3), 30 + 80 * k, np.uint8)
        videos.append(write_mp4(tmp_path / f"w{k}.mp4", frames, 8))
    out = np.stack(list(blended_frames(videos, clip)))
    assert len(out) == 20
    level = out.reshape(20, -1).mean(axis=1)
    # Window 0 alone, then three cross-faded frames rising towards window 1, then window 1 alone.
    assert np.allclose(level[:6], 30, atol=3)
    assert 30 + 5 < level[6] < level[7] < level[8] < 110 - 5
    assert np.allclose(level[9:12], 110, atol=3)
    assert 110 < level[12] < level[13] < level[14] < 190


def test_long_clip_end_to_end_with_prompts_per_window(demo_pipe, tmp_path: Path, monkeypatch):
    from diffusers import WanImageToVideoPipeline, WanPipeline

    seen: list[str] = []
    for cls in (WanPipeline, WanImageToVideoPipeline):
        original = cls.encode_prompt

        def spy(self, prompt, *a, _original=original, **k):
            seen.append(prompt)
            return _original(self, prompt, *a, **k)

        monkeypatch.setattr(cls, "encode_prompt", spy)
    r = base()
    clip = plan_long_clip(r, total_frames=20, overlap=2, prompts=["dawn", "noon", "dusk"])
    progress: list[Progress] = []
    result = generate_long(demo_pipe, r, clip, tmp_path / "work", tmp_path / "out", on_progress=progress.append)
    frames, fps = read_mp4(result.video_path)
    assert frames.shape == (20, 64, 64, 3) and fps == 8
    assert seen == ["dawn", "noon", "dusk"]
    assert {p.message.split(" · ")[0] for p in progress if p.stage == "denoising"} == {
        "window 1/3", "window 2/3", "window 3/3"}
    fractions = [p.fraction for p in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    side = json.loads(result.sidecar_path.read_text())
    assert side["long_clip"]["windows"] == 3 and side["video"]["frames"] == 20


def test_resume_reruns_only_missing_windows(demo_pipe, tmp_path: Path):
    r = base(prompt="a river")
    clip = plan_long_clip(r, total_frames=30, overlap=2)
    assert len(clip.windows()) == 4
    cancel = threading.Event()
    made: list[int] = []

    def crash_in_third_window(p: Progress) -> None:
        if p.stage == "denoising" and p.step == 1:
            made.append(p.window)
            if p.window == 2:
                cancel.set()

    work = tmp_path / "work"
    with pytest.raises(GenerationCancelled):
        generate_long(demo_pipe, r, clip, work, tmp_path / "out", crash_in_third_window, cancel)
    assert made == [0, 1, 2] and not list((tmp_path / "out").rglob("*.mp4"))
    made.clear()
    result = generate_long(demo_pipe, r, clip, work, tmp_path / "out", crash_in_third_window)
    assert made == [2, 3]
    assert json.loads(result.sidecar_path.read_text())["long_clip"]["resumed_windows"] == [0, 1]
    resumed, _ = read_mp4(result.video_path)
    fresh = generate_long(demo_pipe, r, clip, tmp_path / "work2", tmp_path / "out2")
    straight, _ = read_mp4(fresh.video_path)
    assert resumed.shape == straight.shape == (30, 64, 64, 3)
    assert np.abs(resumed.astype(int) - straight.astype(int)).mean() < 2  # same video, up to mp4 rounding


def test_changed_settings_do_not_reuse_old_windows(demo_pipe, tmp_path: Path):
    r = base()
    clip = plan_long_clip(r, total_frames=16, overlap=2)
    generate_long(demo_pipe, r, clip, tmp_path / "work", tmp_path / "out")
    other = base(seed=99)
    result = generate_long(demo_pipe, other, plan_long_clip(other, 16, 2), tmp_path / "work", tmp_path / "out")
    assert json.loads(result.sidecar_path.read_text())["long_clip"]["resumed_windows"] == []


def test_execute_runs_a_long_clip_with_a_cache_and_records_both(demo_pipe, tmp_path: Path):
    from wan_studio.engine.job import execute

    r = validate(GenerationRequest(prompt="a kite", model="demo", width=64, height=64, num_frames=9, fps=8,
                                   steps=4, seed=2, total_frames=14, window_overlap=2,
                                   step_cache="first_block", cache_threshold=0.2))
    result = execute(demo_pipe, r, tmp_path / "out", loras_dir=tmp_path / "loras", work_dir=tmp_path / "work")
    side = json.loads(result.sidecar_path.read_text())
    assert side["long_clip"]["windows"] == 2 and side["video"]["frames"] == 14
    assert side["step_cache"]["kind"] == "first_block"
    assert read_mp4(result.video_path)[0].shape == (14, 64, 64, 3)


@pytest.mark.parametrize("fields, words", [
    (dict(step_cache="teacache"), "unknown step cache"),
    (dict(cache_threshold=0.1), "needs a step_cache"),
    (dict(window_overlap=2), "need total_frames"),
    (dict(total_frames=30, window_prompts=["a", ""]), "empty"),
    (dict(loras=["x.safetensors:notanumber"]), "LoRA is written"),
    (dict(total_frames=3), "between 5"),
])
def test_advanced_fields_are_validated(fields, words):
    with pytest.raises(RequestError, match=words):
        validate(GenerationRequest(prompt="x", model="demo", width=64, height=64, num_frames=9, seed=1, **fields))


def test_long_clip_sidecar_records_speed_options_and_a_window_stopped_mid_way_resumes_at_its_step(
        demo_pipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    r = base(prompt="a harbour", steps=4)
    clip = plan_long_clip(r, total_frames=16, overlap=2)
    cancel = threading.Event()

    def stop_in_second_window(p: Progress) -> None:
        if p.stage == "denoising" and p.window == 1 and p.step == 3:
            cancel.set()

    work = tmp_path / "work"
    with pytest.raises(GenerationCancelled):
        generate_long(demo_pipe, r, clip, work, tmp_path / "out", stop_in_second_window, cancel,
                      step_checkpoints=True)
    assert (work / "steps-window-001.pt").is_file()
    # checkpoints are spaced by their measured cost against the step time: the newest one kept
    # before the stop is where the second window must resume
    import torch

    kept = torch.load(work / "steps-window-001.pt", map_location="cpu", weights_only=False)["step"]
    assert 1 <= kept <= 3
    monkeypatch.setattr(demo_pipe, "wan_speed", {"attention": "sdpa", "compile": False}, raising=False)
    result = generate_long(demo_pipe, r, clip, work, tmp_path / "out", step_checkpoints=True)
    side = json.loads(result.sidecar_path.read_text())
    assert side["speed"] == {"attention": "sdpa", "compile": False}
    assert side["long_clip"]["resumed_windows"] == [0] and side["long_clip"]["resumed_steps"] == {"1": kept}
    assert "peak_vram_gib" in side and not list(work.glob("steps-*"))
