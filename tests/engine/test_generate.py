"""The engine turns a request into a playable mp4 + sidecar through the real Wan pipeline code."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from wan_studio.engine.generate import GenerationCancelled, Progress, generate
from wan_studio.engine.request import GenerationRequest, validate
from wan_studio.engine.video_io import OutputWriteError, frames_to_uint8, read_mp4, write_mp4


def request(**kw) -> GenerationRequest:
    base = dict(prompt="a lighthouse in a storm", model="demo", width=192, height=128, num_frames=9,
                fps=8, steps=3, seed=7)
    base.update(kw)
    return validate(GenerationRequest(**base))


def test_mp4_has_the_requested_frames_size_and_fps(demo_pipe, tmp_path: Path):
    result = generate(demo_pipe, request(), tmp_path)
    frames, fps = read_mp4(result.video_path)
    assert frames.shape == (9, 128, 192, 3)
    assert fps == 8
    assert frames.std() > 1  # not a blank video


def test_sidecar_records_every_parameter(demo_pipe, tmp_path: Path):
    r = request(seed=11)
    result = generate(demo_pipe, r, tmp_path, extra_sidecar={"placement": "cpu"})
    side = json.loads(result.sidecar_path.read_text())
    assert side["request"] == r.to_dict()
    assert side["seed"] == 11 and side["model"] == "demo" and side["demo_random_weights"] is True
    assert side["video"] == {"file": result.video_path.name, "width": 192, "height": 128, "frames": 9,
                             "fps": 8, "duration_s": 1.125}
    assert side["placement"] == "cpu"
    assert side["timings"]["total_s"] > 0 and "decode_s" in side["timings"]
    assert side["peak_vram_gib"] is None  # no CUDA here
    assert result.sidecar_path.stem == result.video_path.stem


def test_same_seed_same_video_other_seed_other_video(demo_pipe, tmp_path: Path):
    a, _ = read_mp4(generate(demo_pipe, request(seed=5), tmp_path).video_path)
    b, _ = read_mp4(generate(demo_pipe, request(seed=5), tmp_path).video_path)
    c, _ = read_mp4(generate(demo_pipe, request(seed=6), tmp_path).video_path)
    assert np.array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 1


def test_image_to_video_uses_the_image(demo_pipe, tmp_path: Path, image_file: Path):
    t2v, _ = read_mp4(generate(demo_pipe, request(), tmp_path).video_path)
    result = generate(demo_pipe, request(image=str(image_file)), tmp_path)
    i2v, _ = read_mp4(result.video_path)
    assert i2v.shape == t2v.shape
    assert np.abs(i2v.astype(int) - t2v.astype(int)).mean() > 1
    assert json.loads(result.sidecar_path.read_text())["mode"] == "image-to-video"


def test_progress_reports_every_step_with_an_eta(demo_pipe, tmp_path: Path):
    seen: list[Progress] = []
    generate(demo_pipe, request(steps=4), tmp_path, on_progress=seen.append)
    steps = [p.step for p in seen if p.stage == "denoising"]
    assert steps == [1, 2, 3, 4]
    assert [p.stage for p in seen][0] == "encoding" and seen[-1].stage == "done"
    assert any(p.eta_s is not None for p in seen if p.stage == "denoising")
    assert "step 2/4" in [p.message for p in seen if p.stage == "denoising"][1]
    fractions = [p.fraction for p in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_cancel_stops_between_steps_and_writes_nothing(demo_pipe, tmp_path: Path, monkeypatch):
    cancel = threading.Event()
    decoded = []
    monkeypatch.setattr(demo_pipe.vae, "decode", lambda *a, **k: decoded.append(1))

    def on_progress(p: Progress) -> None:
        if p.stage == "denoising" and p.step == 2:
            cancel.set()

    with pytest.raises(GenerationCancelled, match="after step 2 of 5"):
        generate(demo_pipe, request(steps=5), tmp_path, on_progress=on_progress, cancel=cancel)
    assert decoded == []  # the partial latents were never decoded
    assert list(tmp_path.rglob("*")) == []


def test_unwritable_output_folder_is_a_clear_error(tmp_path: Path):
    blocker = tmp_path / "outputs"
    blocker.write_text("a file where the outputs folder should be")
    frames = np.zeros((5, 32, 32, 3), np.uint8)
    with pytest.raises(OutputWriteError, match="could not write"):
        write_mp4(blocker / "day" / "x.mp4", frames, 8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outputs"]


def test_full_disk_is_reported_as_such(tmp_path: Path, monkeypatch):
    import errno
    import imageio_ffmpeg

    def no_space(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(imageio_ffmpeg, "write_frames", no_space)
    with pytest.raises(OutputWriteError, match="disk holding .* is full"):
        write_mp4(tmp_path / "x.mp4", np.zeros((5, 32, 32, 3), np.uint8), 8)
    assert list(tmp_path.iterdir()) == []


def test_text_to_video_gives_the_transformer_one_timestep_and_the_same_frames(demo_pipe, image_file):
    # TI2V's per-token timestep is only needed when an image fixes the first frame: text jobs run
    # the cheaper scalar form, which must give the frames the per-token form gives.
    from wan_studio.engine.generate import render

    seen: list[tuple[int, ...]] = []
    hook = demo_pipe.transformer.register_forward_pre_hook(
        lambda _m, _a, kw: seen.append(tuple(kw["timestep"].shape)), with_kwargs=True)
    try:
        scalar = render(demo_pipe, request()).frames
        assert seen and all(len(s) == 1 for s in seen)
        assert demo_pipe.config.expand_timesteps is True  # put back for the next job
        seen.clear()
        render(demo_pipe, request(image=str(image_file)))
        assert seen and all(len(s) == 2 for s in seen)  # image jobs keep a timestep per token
    finally:
        hook.remove()
    demo_pipe.register_to_config(expand_timesteps=True)
    r = request()
    per_token = demo_pipe(prompt=r.prompt, height=r.height, width=r.width, num_frames=r.num_frames,
                          num_inference_steps=r.steps, guidance_scale=r.guidance,
                          generator=torch.Generator().manual_seed(r.seed), output_type="np").frames[0]
    diff = np.abs(frames_to_uint8(per_token).astype(int) - scalar.astype(int))
    assert diff.max() <= 1
