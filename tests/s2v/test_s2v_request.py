"""Request validation for speech-to-video and the optional last frame of image-to-video."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wan_studio.engine.request import GenerationRequest, RequestError, validate
from wan_studio.engine.s2v.audio_io import write_wav


def _s2v(**kw) -> GenerationRequest:
    return GenerationRequest(prompt="a woman speaking", model="s2v-14b", **kw)


def test_valid_request_resolves_official_defaults(portrait_file: Path, make_audio) -> None:
    r = validate(_s2v(image=str(portrait_file), audio=str(make_audio(1.0))))
    assert (r.steps, r.shift, r.guidance, r.fps, (r.width, r.height)) == (40, 3.0, 4.5, 16, (1024, 704))


def test_audio_is_required(portrait_file: Path) -> None:
    with pytest.raises(RequestError, match="needs a speech audio file"):
        validate(_s2v(image=str(portrait_file)))


def test_silent_audio_is_refused(portrait_file: Path, tmp_path: Path) -> None:
    silent = write_wav(tmp_path / "s.wav", np.zeros(16000, np.float32))
    with pytest.raises(RequestError, match="silent"):
        validate(_s2v(image=str(portrait_file), audio=str(silent)))


@pytest.mark.parametrize("size,match", [((900, 200), "wide panorama"), ((200, 700), "tall strip"),
                                        ((100, 120), "at least 128 pixels")])
def test_non_portrait_images_are_refused(tmp_path: Path, make_audio, size: tuple[int, int], match: str) -> None:
    path = tmp_path / "pic.png"
    Image.new("RGB", size, (90, 90, 90)).save(path)
    with pytest.raises(RequestError, match=match):
        validate(_s2v(image=str(path), audio=str(make_audio(1.0))))


def test_audio_on_a_video_model_is_refused(make_audio) -> None:
    with pytest.raises(RequestError, match="does not use audio"):
        validate(GenerationRequest(prompt="x", model="t2v-a14b", audio=str(make_audio(1.0))))


def test_last_frame_only_for_image_to_video(image_file: Path) -> None:
    with pytest.raises(RequestError, match="does not take a last frame"):
        validate(GenerationRequest(prompt="x", model="ti2v-5b", image=str(image_file), last_image=str(image_file)))
    r = validate(GenerationRequest(prompt="x", model="i2v-a14b", image=str(image_file), last_image=str(image_file)))
    assert (r.guidance, r.guidance_2, r.shift, r.steps, r.num_frames) == (3.5, 3.5, 5.0, 40, 81)


def test_the_planner_counts_the_chunks_the_speech_needs(portrait_file: Path, make_audio) -> None:
    from wan_studio.engine.s2v.pipeline import chunks_for
    from wan_studio.memory.plan import Workload

    for seconds, want in ((4.5, 1), (5.0, 2), (11.0, 3)):
        speech = make_audio(seconds, name=f"speech-{seconds}")
        req = validate(GenerationRequest(prompt="a woman talks", model="s2v-14b", image=str(portrait_file),
                                         audio=str(speech)))
        assert chunks_for(int(seconds * 16 + 0.999), 80) == want  # the runner's own count
        assert req.speech_chunks == want and Workload.from_request(req).chunks == want
    assert GenerationRequest(prompt="a fox").speech_chunks == 1


def test_the_planner_sizes_the_clip_the_pipeline_writes(portrait_file: Path, make_audio) -> None:
    # A 5 s speech is two 80-frame chunks but an 80-frame mp4; the frame follows the portrait's
    # aspect within the size asked for. Counted as 160 frames at the size asked, the write was
    # predicted 2.4 s against 1.4-1.6 s measured at 832×480 on the H200.
    from PIL import Image

    from wan_studio.engine.s2v.pipeline import fit_size
    from wan_studio.memory.plan import Workload

    req = validate(GenerationRequest(prompt="a woman talks", model="s2v-14b", image=str(portrait_file),
                                     audio=str(make_audio(5.0, name="five")), width=832, height=480))
    with Image.open(portrait_file) as im:
        want = fit_size(im.width, im.height, 832 * 480)
    work = Workload.from_request(req)
    assert (work.width, work.height) == want and work.chunks == 2
    assert work.written_frames == 80 and work.frames * work.chunks == 160
    assert Workload.from_request(validate(GenerationRequest(prompt="a fox", model="ti2v-5b"))).written_frames == 121
