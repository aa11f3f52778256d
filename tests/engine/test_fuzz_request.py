"""Property tests: any request either validates or fails with a clear RequestError — nothing else."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wan_studio.catalog.specs import CATALOG
from wan_studio.engine.request import GenerationRequest, RequestError, check_image, validate

numbers = st.one_of(st.none(), st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
                    st.booleans(), st.text(max_size=5))
prompts = st.one_of(st.text(max_size=300), st.text(min_size=3990, max_size=4010),
                    st.just("x" * 100_000), st.just(""), st.none(), st.integers())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    prompt=prompts,
    model=st.one_of(st.sampled_from(sorted(CATALOG)), st.text(max_size=10)),
    width=numbers, height=numbers, num_frames=numbers, fps=numbers, steps=numbers,
    guidance=numbers, shift=numbers, seed=numbers,
)
def test_any_request_validates_or_is_refused_clearly(prompt, model, width, height, num_frames, fps, steps,
                                                       guidance, shift, seed):
    req = GenerationRequest(prompt=prompt, model=model, width=width, height=height, num_frames=num_frames,
                            fps=fps, steps=steps, guidance=guidance, shift=shift, seed=seed)
    try:
        r = validate(req)
    except RequestError as e:
        assert str(e) and "Traceback" not in str(e)
        return
    spec = CATALOG[r.model]
    assert r.width % spec.size_multiple == 0 and r.height % spec.size_multiple == 0
    assert (r.num_frames - 1) % 4 == 0 and 5 <= r.num_frames <= spec.max_frames
    assert isinstance(r.prompt, str) and 0 < len(r.prompt) <= 4000
    assert 1 <= r.steps <= 100 and 0 <= r.seed < 2**32
    assert all(type(v) is int for v in (r.width, r.height, r.num_frames, r.fps, r.steps, r.seed))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=4096), prefix=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF", b"GIF89a"]))
def test_any_bytes_as_an_image_are_read_or_refused_clearly(tmp_path: Path, data: bytes, prefix: bytes):
    path = tmp_path / "upload.png"
    path.write_bytes(prefix + data)
    try:
        w, h = check_image(path)
    except RequestError as e:
        assert str(e)
        return
    assert w >= 16 and h >= 16
