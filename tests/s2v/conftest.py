"""Fixtures for speech-to-video tests: speech-like audio made in code, portraits, a tiny pipeline."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Callable

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image


def speechlike(seconds: float, rate: int = 16000) -> np.ndarray:
    """A voiced, syllable-rate modulated tone: loud enough to count as speech, made without TTS."""
    t = np.arange(int(seconds * rate)) / rate
    voice = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((140, 280, 420, 700), start=1))
    syllables = 0.5 * (1 + np.sin(2 * np.pi * 4 * t))
    return (0.2 * voice * syllables).astype(np.float32)


@pytest.fixture
def make_audio(tmp_path: Path) -> Callable[..., Path]:
    """``make_audio(seconds, ext="wav", rate=16000)`` writes speech-like audio, converting via ffmpeg."""
    from wan_studio.engine.s2v.audio_io import write_wav

    def make(seconds: float, ext: str = "wav", rate: int = 16000, name: str = "speech") -> Path:
        wav = write_wav(tmp_path / f"{name}-{rate}.wav", speechlike(seconds, rate), rate)
        if ext == "wav":
            return wav
        out = tmp_path / f"{name}.{ext}"
        subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(wav), str(out)], check=True)
        return out

    return make


@pytest.fixture
def portrait_file(tmp_path: Path) -> Path:
    """A 192×256 (3:4) picture with a face-like oval, made in code."""
    yy, xx = np.mgrid[0:256, 0:192]
    face = ((xx - 96) / 60) ** 2 + ((yy - 110) / 80) ** 2 < 1
    arr = np.zeros((256, 192, 3), np.uint8)
    arr[..., 2] = 120
    arr[face] = (225, 180, 150)
    path = tmp_path / "portrait.png"
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture(scope="session")
def s2v_pipe() -> "S2VPipeline":  # noqa: F821 - imported inside
    """One tiny speech-to-video pipeline for the session."""
    from wan_studio.engine.s2v.tiny import build_s2v_pipeline

    return build_s2v_pipeline(seed=0)
