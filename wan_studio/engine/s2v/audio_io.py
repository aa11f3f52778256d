"""Speech audio in: decode any of wav / mp3 / flac / m4a to 16 kHz mono float32 with the ffmpeg
binary that imageio-ffmpeg ships, and refuse audio a speech-to-video job cannot use.

Every refusal is an ``AudioError`` whose message says what is wrong and what to do.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import numpy as np

SAMPLE_RATE = 16_000
AUDIO_SUFFIXES = (".wav", ".mp3", ".flac", ".m4a")
MAX_AUDIO_BYTES = 200 * 1024 * 1024
MIN_SECONDS = 0.5
DEFAULT_MAX_SECONDS = 60.0
# Below this RMS (about -66 dBFS) there is no speech to follow; a mouth would not move.
SILENCE_RMS = 5e-4


class AudioError(ValueError):
    """Audio that cannot drive a speech-to-video job; the message is written for the user."""


@dataclass(frozen=True)
class SpeechAudio:
    """Decoded speech: mono float32 samples in [-1, 1] at ``SAMPLE_RATE`` Hz."""

    samples: np.ndarray
    source: Path

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return len(self.samples) / SAMPLE_RATE

    def frames(self, fps: int) -> int:
        """Video frames at ``fps`` needed to cover the audio (rounded up)."""
        return int(np.ceil(self.duration_s * fps - 1e-9))


def _decode(path: Path, limit_s: float) -> np.ndarray:
    """Raw decode through ffmpeg; stops after ``limit_s`` seconds so a 3-hour file costs nothing."""
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(path), "-vn",
           "-t", f"{limit_s:.3f}", "-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "f32le", "-"]
    proc = subprocess.run(cmd, capture_output=True, timeout=300)
    if proc.returncode != 0:
        detail = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        why = detail[-1] if detail else f"ffmpeg exit code {proc.returncode}"
        raise AudioError(f"the audio {path.name!r} cannot be decoded ({why}); "
                         "export it again as WAV, MP3, FLAC or M4A")
    return np.frombuffer(proc.stdout, dtype=np.float32).copy()


def load_speech(path: str | Path, max_seconds: float = DEFAULT_MAX_SECONDS) -> SpeechAudio:
    """Decode and check a speech file; raise ``AudioError`` for anything a job cannot use.

    Refuses: a missing, empty, oversized or unsupported file; undecodable data; audio shorter
    than ``MIN_SECONDS`` or longer than ``max_seconds``; silence.
    """
    p = Path(path)
    if not p.is_file():
        raise AudioError(f"the audio file {p.name!r} does not exist")
    if p.suffix.lower() not in AUDIO_SUFFIXES:
        raise AudioError(f"{p.name!r} is not a supported audio file; use one of "
                         f"{', '.join(s[1:].upper() for s in AUDIO_SUFFIXES)}")
    size = p.stat().st_size
    if size == 0:
        raise AudioError(f"the audio {p.name!r} is empty (0 bytes)")
    if size > MAX_AUDIO_BYTES:
        raise AudioError(f"the audio {p.name!r} is {size / 2**20:.0f} MiB; the limit is {MAX_AUDIO_BYTES // 2**20} MiB")
    # Decode a little past the limit: enough to tell "too long" from "exactly at the limit".
    samples = _decode(p, max_seconds + 0.5)
    if samples.size == 0:
        raise AudioError(f"the audio {p.name!r} holds no sound samples; check that it is not damaged")
    if not np.isfinite(samples).all():
        raise AudioError(f"the audio {p.name!r} is damaged (it decodes to invalid samples)")
    seconds = samples.size / SAMPLE_RATE
    if seconds > max_seconds + 1e-3:
        raise AudioError(f"the audio is longer than {max_seconds:g} s; trim it to at most {max_seconds:g} s "
                         "or split it into several jobs")
    if seconds < MIN_SECONDS:
        raise AudioError(f"the audio lasts {seconds:.2f} s; speech-to-video needs at least {MIN_SECONDS} s")
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    if rms < SILENCE_RMS:
        raise AudioError(f"the audio {p.name!r} is silent (level {20 * np.log10(max(rms, 1e-12)):.0f} dBFS); "
                         "record or pick a file with audible speech")
    return SpeechAudio(samples=samples, source=p)


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write mono float samples in [-1, 1] as 16-bit PCM WAV (for tests, examples and muxing)."""
    import wave

    p = Path(path)
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")
    with wave.open(str(p), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return p
