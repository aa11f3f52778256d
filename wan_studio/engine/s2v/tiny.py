"""A tiny speech-to-video pipeline with seeded random weights, built offline in code (tests, demo).

The real graph end to end at toy width: UMT5 (2 layers), Wan2.1-style VAE, a 3-block
``S2VTransformer`` and a 2-layer wav2vec2. Output is noise, never real video.
"""

from __future__ import annotations

import torch
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

from wan_studio.catalog import tiny as base
from wan_studio.engine.s2v.config import TINY, S2VConfig
from wan_studio.engine.s2v.pipeline import S2VPipeline
from wan_studio.engine.s2v.transformer import S2VTransformer


def build_audio_encoder(hidden: int = 32, layers: int = 2, seed: int = 0) -> Wav2Vec2Model:
    """A wav2vec2 with the real 320× convolutional front end (50 steps/s at 16 kHz), toy width."""
    torch.manual_seed(seed)
    cfg = Wav2Vec2Config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                         intermediate_size=2 * hidden, conv_dim=(16,) * 7, num_conv_pos_embeddings=16,
                         num_conv_pos_embedding_groups=2, feat_extract_norm="layer", do_stable_layer_norm=True,
                         vocab_size=32)
    return Wav2Vec2Model(cfg).eval()


def build_s2v_pipeline(seed: int = 0, config: S2VConfig = TINY, shift: float = 3.0) -> S2VPipeline:
    """The tiny pipeline; ``config`` must match the tiny text encoder (text_dim 32) and wav2vec2."""
    tokenizer = base.build_tokenizer()
    torch.manual_seed(seed)
    transformer = S2VTransformer(config).eval()
    pipe = S2VPipeline(
        tokenizer=tokenizer,
        text_encoder=base.build_text_encoder(len(tokenizer), seed),
        vae=base.build_wan21_vae(seed),
        transformer=transformer,
        scheduler=base.build_scheduler(shift),
        audio_encoder=build_audio_encoder(config.audio_dim, config.audio_layers - 1, seed),
        feature_extractor=Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, do_normalize=True,
                                                   return_attention_mask=False),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
