"""Speech files in every supported format decode to 16 kHz mono; unusable audio is refused clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wan_studio.engine.s2v.audio_io import SAMPLE_RATE, AudioError, load_speech, write_wav


@pytest.mark.parametrize("ext", ["wav", "mp3", "flac", "m4a"])
def test_formats_decode_to_16k_mono_with_their_length(make_audio, ext: str) -> None:
    speech = load_speech(make_audio(1.5, ext=ext, rate=44100))
    assert abs(speech.duration_s - 1.5) < 0.06  # lossy codecs pad by a few ms
    assert speech.samples.dtype == np.float32 and speech.samples.ndim == 1
    # Resampled, not relabelled: the 140 Hz fundamental is still at 140 Hz at 16 kHz.
    spectrum = np.abs(np.fft.rfft(speech.samples[:SAMPLE_RATE]))
    assert abs(np.argmax(spectrum) - 140) <= 2


def test_frames_cover_the_audio(make_audio) -> None:
    assert load_speech(make_audio(1.55)).frames(16) == 25  # 24.8 frames -> 25


def test_silence_is_refused(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "quiet.wav", np.random.default_rng(0).normal(0, 1e-5, 16000))
    with pytest.raises(AudioError, match="silent"):
        load_speech(path)


def test_corrupt_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken.mp3"
    path.write_bytes(b"ID3" + bytes(range(256)) * 40)
    with pytest.raises(AudioError, match="cannot be decoded|no sound"):
        load_speech(path)


def test_over_long_audio_is_refused_without_decoding_it_all(make_audio) -> None:
    with pytest.raises(AudioError, match="longer than 2 s"):
        load_speech(make_audio(4.0), max_seconds=2.0)


def test_too_short_audio_is_refused(make_audio) -> None:
    with pytest.raises(AudioError, match="at least 0.5 s"):
        load_speech(make_audio(0.2))


@pytest.mark.parametrize("name,content,match", [
    ("talk.txt", b"hello", "not a supported audio file"),
    ("empty.wav", b"", "empty"),
])
def test_wrong_or_empty_files_are_refused(tmp_path: Path, name: str, content: bytes, match: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(AudioError, match=match):
        load_speech(path)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="does not exist"):
        load_speech(tmp_path / "nope.wav")
