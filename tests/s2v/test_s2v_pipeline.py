"""Speech-to-video end to end on the tiny pipeline: chunking follows the speech, motion carries
over, pose conditions, the mp4 holds the speech, cancel stops before anything is written."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wan_studio.engine.generate import GenerationCancelled, Progress, generate
from wan_studio.engine.request import GenerationRequest
from wan_studio.engine.s2v.audio_io import load_speech
from wan_studio.engine.s2v.pipeline import S2VPipeline, chunks_for, fit_size
from wan_studio.engine.s2v.runner import generate_s2v
from wan_studio.engine.video_io import audio_duration_s, read_mp4

from .conftest import speechlike


def _request(portrait: Path, audio: Path, **kw) -> GenerationRequest:
    # Built directly (not through validate) to run at 64×64, far below the app's minimum size.
    fields = dict(prompt="a person talking", model="s2v-14b", image=str(portrait), audio=str(audio),
                  width=64, height=64, steps=2, seed=7)
    fields.update(kw)
    return GenerationRequest(**fields).resolved()


def test_chunk_plan_follows_speech_length() -> None:
    assert [chunks_for(f, 80) for f in (16, 77, 78, 157, 158)] == [1, 1, 2, 2, 3]


def test_output_size_keeps_portrait_aspect_within_area() -> None:
    w, h = fit_size(720, 960, 1024 * 704)
    assert w % 64 == 0 and h % 64 == 0 and w * h <= 1024 * 704 and h > w


@pytest.fixture(scope="module")
def two_chunk_run(tmp_path_factory: pytest.TempPathFactory, s2v_pipe: S2VPipeline) -> tuple:
    """1.6 s of speech in chunks of 16 frames: 26 frames -> 2 chunks, through the runner."""
    from wan_studio.engine.s2v.audio_io import write_wav

    d = tmp_path_factory.mktemp("s2v")
    audio = write_wav(d / "speech.wav", speechlike(1.6))
    portrait = d / "face.png"
    Image.fromarray(np.full((256, 192, 3), 170, np.uint8)).save(portrait)
    seen: list[Progress] = []
    motion_inputs: list[tuple[int, ...]] = []
    hook = s2v_pipe.transformer.frame_packer.register_forward_hook(
        lambda _m, args, _out: motion_inputs.append(tuple(args[0].shape)))
    try:
        result = generate_s2v(s2v_pipe, _request(portrait, audio), d / "out", seen.append, chunk_frames=16)
    finally:
        hook.remove()
    return result, seen, audio, motion_inputs


def test_two_chunks_cover_the_speech_and_report_progress(two_chunk_run) -> None:
    result, seen, *_ = two_chunk_run
    sidecar = json.loads(result.sidecar_path.read_text())
    assert sidecar["chunks"] == 2
    assert sidecar["video"]["frames"] == 26  # ceil(1.6 s × 16 fps)
    steps = [p.step for p in seen if p.stage == "denoising"]
    assert steps == [1, 2, 3, 4] and seen[-1].stage == "done"


def test_the_last_chunks_decode_is_its_own_phase_with_an_eta(two_chunk_run) -> None:
    _, seen, *_ = two_chunk_run
    last_step = max(i for i, p in enumerate(seen) if p.stage == "denoising")
    decoding = [p for p in seen[last_step:] if p.stage == "decoding"]
    timed = [p for p in decoding if p.eta_s is not None]
    assert timed and timed[-1].decoded == 1.0 and "s left" in timed[0].message
    fractions = [p.fraction for p in seen]
    assert fractions == sorted(fractions)  # the bar never goes back
    assert all(p.stage != "decoding" for p in seen[:last_step])  # earlier chunks decode between steps


def test_speech_is_muxed_with_matching_duration(two_chunk_run) -> None:
    result, _, audio, _ = two_chunk_run
    frames, fps = read_mp4(result.video_path)
    video_s = len(frames) / fps
    muxed_s = audio_duration_s(result.video_path)
    assert muxed_s is not None, "the mp4 has no audio stream"
    assert abs(muxed_s - video_s) < 0.1
    assert abs(muxed_s - load_speech(audio).duration_s) < 0.1
    assert frames.shape[1:] == (64, 64, 3)


def test_second_chunk_sees_the_first_as_motion_context(two_chunk_run) -> None:
    # Chunk 1 starts from the portrait alone; chunk 2 gets the 73 last frames as 19 motion
    # latents in each of its 2 steps × (conditional + unconditional) passes.
    *_, motion_inputs = two_chunk_run
    assert motion_inputs == [(1, 16, 19, 8, 8)] * 4


def test_engine_dispatches_s2v_and_one_chunk_suffices_for_short_speech(s2v_pipe, portrait_file: Path,
                                                                      make_audio, tmp_path: Path) -> None:
    result = generate(s2v_pipe, _request(portrait_file, make_audio(0.6)), tmp_path / "out")
    sidecar = json.loads(result.sidecar_path.read_text())
    assert (sidecar["chunks"], sidecar["chunk_frames"], sidecar["video"]["frames"]) == (1, 80, 10)
    assert audio_duration_s(result.video_path) is not None


def test_pose_video_changes_the_result(s2v_pipe, portrait_file: Path) -> None:
    image = Image.open(portrait_file)
    audio = speechlike(0.8)
    pose = np.zeros((13, 96, 72, 3), np.uint8)
    pose[:, 30:60, 20:50] = 255
    plain = s2v_pipe(image, audio, max_area=64 * 64, chunk_frames=16, num_inference_steps=1, guidance_scale=1.0)
    posed = s2v_pipe(image, audio, max_area=64 * 64, chunk_frames=16, num_inference_steps=1, guidance_scale=1.0,
                     pose_video=pose)
    assert plain.frames.shape == posed.frames.shape == (13, 64, 64, 3)
    assert not np.allclose(plain.frames, posed.frames)


def test_cancel_stops_before_writing(s2v_pipe, portrait_file: Path, make_audio, tmp_path: Path) -> None:
    cancel = threading.Event()

    def on_progress(p: Progress) -> None:
        if p.stage == "denoising":
            cancel.set()

    with pytest.raises(GenerationCancelled, match="after step 1"):
        generate_s2v(s2v_pipe, _request(portrait_file, make_audio(1.0)), tmp_path / "out", on_progress, cancel,
                     chunk_frames=16)
    assert not list((tmp_path / "out").rglob("*.mp4"))


def test_thermal_hook_runs_between_s2v_steps(s2v_pipe, portrait_file: Path, make_audio, tmp_path: Path) -> None:
    seen: list[int] = []
    result = generate(s2v_pipe, _request(portrait_file, make_audio(0.6)), tmp_path / "out",
                      between_steps=seen.append)
    steps = json.loads(result.sidecar_path.read_text())["request"]["steps"]
    assert seen == list(range(0, steps + 1))  # once before the first step, then after each


def test_streamed_transformer_with_swapped_encoders_makes_the_same_video(portrait_file: Path, make_audio,
                                                                          tmp_path: Path) -> None:
    # The plan a 24 GB card gets for S2V-14B: its transformer streamed block by block (the 2.24 B
    # parameters outside the blocks kept where it runs), text, audio encoders and VAE taking turns
    # whole. Same frames as everything in place.
    from dataclasses import replace

    from tests.memory.helpers import cpu_plan
    from wan_studio.catalog.specs import DEMO_S2V
    from wan_studio.engine.s2v.tiny import build_s2v_pipeline
    from wan_studio.memory.apply import apply_plan, release_pipeline
    from wan_studio.memory.plan import TRANSFORMERS

    request = _request(portrait_file, make_audio(0.6))
    pipe = build_s2v_pipeline(seed=0)
    reference = read_mp4(generate(pipe, request, tmp_path / "plain").video_path)[0]
    plan = cpu_plan(DEMO_S2V)
    plan = replace(plan, placements=tuple(
        replace(p, offload="group_offload" if p.component in TRANSFORMERS else "model_offload")
        for p in plan.placements))
    apply_plan(pipe, plan)
    assert type(pipe.audio_encoder._hf_hook).__name__ == "PinnedOffloadHook"
    frames = read_mp4(generate(pipe, request, tmp_path / "planned").video_path)[0]
    np.testing.assert_array_equal(frames, reference)
    release_pipeline(pipe)


def test_the_sidecars_peak_vram_is_the_jobs_own(s2v_pipe, portrait_file: Path, make_audio, tmp_path: Path,
                                                monkeypatch) -> None:
    # On an H200 a warm 832×480 job reported the 16.8 GiB peak of the 1024×704 job before it.
    import torch

    peaks = [0]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "a GPU")
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *a, **k: peaks.append(0))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a, **k: 7 * 2**30 + len(peaks))
    first = generate_s2v(s2v_pipe, _request(portrait_file, make_audio(1.0)), tmp_path / "a", chunk_frames=16)
    second = generate_s2v(s2v_pipe, _request(portrait_file, make_audio(1.0)), tmp_path / "b", chunk_frames=16)
    assert len(peaks) == 3  # reset at the start of each job
    assert first.peak_vram_bytes == 7 * 2**30 + 2 and second.peak_vram_bytes == 7 * 2**30 + 3


def test_the_sidecar_times_what_runs_before_the_first_step(s2v_pipe, portrait_file: Path, make_audio,
                                                          tmp_path: Path) -> None:
    result = generate_s2v(s2v_pipe, _request(portrait_file, make_audio(1.0)), tmp_path / "out", chunk_frames=16)
    timings = json.loads(result.sidecar_path.read_text())["timings"]
    before = [timings[k] for k in ("speech_s", "text_s", "reference_s")]
    assert all(v > 0 for v in before), timings
    assert sum(before) < timings["first_step_s"] < timings["denoise_s"] <= timings["total_s"]


def test_a_step_is_timed_inside_a_chunk_not_across_the_decode_between_chunks() -> None:
    """Two chunks of two steps: 1 s steps, and 9 s between the chunks (the first chunk's decode and
    the motion encode, then a step). The sidecar's s/step is 1 s, not the 3.67 s a plain mean of
    every gap gives, and the gap is said apart."""
    from wan_studio.engine.s2v.runner import step_timings

    got = step_timings([10.0, 11.0, 20.0, 21.0], [0, 0, 1, 1])
    assert got == {"s_per_step": 1.0, "chunk_gap_s": 9.0}
    assert step_timings([5.0], [0]) == {}
