"""wav2vec2 features of speech, laid out one column per video frame.

The released model was trained on every hidden state of wav2vec2 (embeddings + 24 layers of
``wav2vec2-large-xlsr-53-english``), resampled from the encoder's 50 steps per second to 30 and
then picked at each video frame's time. Frames past the end of the speech get zero features.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

from wan_studio.engine.s2v.audio_io import SAMPLE_RATE

ENCODER_FPS = 50  # wav2vec2 emits one step per 320 samples at 16 kHz
FEATURE_FPS = 30  # rate the features are resampled to before picking frames


@torch.no_grad()
def hidden_layers(model: Wav2Vec2Model, extractor: Wav2Vec2FeatureExtractor, samples: np.ndarray,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """All hidden states of ``model`` for 16 kHz ``samples``: (layers, steps at 50/s, hidden), fp32."""
    values = extractor(samples, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_values
    dtype = next(model.parameters()).dtype
    out = model(values.to(device=device, dtype=dtype), output_hidden_states=True)
    return torch.cat([h.float() for h in out.hidden_states], dim=0)


def resample(features: torch.Tensor, in_fps: float = ENCODER_FPS, out_fps: float = FEATURE_FPS) -> torch.Tensor:
    """Linear resampling in time of (layers, steps, hidden) from ``in_fps`` to ``out_fps``."""
    steps = int(features.shape[1] / in_fps * out_fps)
    x = F.interpolate(features.transpose(1, 2), size=max(steps, 1), mode="linear", align_corners=True)
    return x.transpose(1, 2)


def per_video_frame(features: torch.Tensor, fps: int, frames: int) -> torch.Tensor:
    """Pick one feature column per video frame: (layers, steps, hidden) at 30/s -> (1, layers, hidden, frames).

    Frames whose time is past the speech get zeros.
    """
    layers, steps, hidden = features.shape
    idx = np.round(np.arange(frames) / fps * FEATURE_FPS).astype(np.int64)
    out = features.new_zeros(layers, frames, hidden)
    inside = idx < steps
    out[:, torch.from_numpy(inside)] = features[:, torch.from_numpy(idx[inside])]
    return out.permute(0, 2, 1).unsqueeze(0)


def speech_features(model: Wav2Vec2Model, extractor: Wav2Vec2FeatureExtractor, samples: np.ndarray,
                    fps: int, frames: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Features for ``frames`` video frames at ``fps``: (1, layers, hidden, frames), fp32."""
    return per_video_frame(resample(hidden_layers(model, extractor, samples, device)), fps, frames)
