"""Tiny Wan2.2-style pipelines with seeded random weights, built offline in code.

They run the real diffusers Wan pipeline code end to end on a CPU in seconds. The demo model in the
UI is one of these; the tests use them for everything. The output is coloured noise, never real
video: the weights are random.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

from diffusers import (
    AutoencoderKLWan,
    UniPCMultistepScheduler,
    WanImageToVideoPipeline,
    WanPipeline,
    WanTransformer3DModel,
)

TEXT_DIM = 32
SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (every UTF-8 byte is a token) that needs no training or download.

    Pad is id 0 and end-of-sequence id 1, as in UMT5.
    """
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


def build_text_encoder(vocab_size: int, seed: int = 0) -> UMT5EncoderModel:
    """A two-layer UMT5 encoder with ``TEXT_DIM`` features."""
    torch.manual_seed(seed)
    config = UMT5Config(
        vocab_size=vocab_size,
        d_model=TEXT_DIM,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        feed_forward_proj="gated-gelu",
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return UMT5EncoderModel(config).eval()


def build_wan22_vae(seed: int = 0) -> AutoencoderKLWan:
    """A Wan2.2-style VAE: 16x spatial / 4x temporal compression, 48 latent channels, patch 2."""
    torch.manual_seed(seed)
    return AutoencoderKLWan(
        base_dim=8,
        z_dim=48,
        in_channels=12,
        out_channels=12,
        is_residual=True,
        patch_size=2,
        latents_mean=[0.0] * 48,
        latents_std=[1.0] * 48,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        scale_factor_spatial=16,
        scale_factor_temporal=4,
        temperal_downsample=[False, True, True],
    ).eval()


def build_wan21_vae(seed: int = 0) -> AutoencoderKLWan:
    """A Wan2.1-style VAE: 8x spatial / 4x temporal compression, 16 latent channels."""
    torch.manual_seed(seed)
    return AutoencoderKLWan(
        base_dim=8,
        z_dim=16,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    ).eval()


def build_transformer(in_channels: int, out_channels: int, seed: int = 0) -> WanTransformer3DModel:
    """A two-layer Wan transformer with the real block structure."""
    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=in_channels,
        out_channels=out_channels,
        text_dim=TEXT_DIM,
        freq_dim=64,
        ffn_dim=64,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=256,
    ).eval()


def build_scheduler(shift: float) -> UniPCMultistepScheduler:
    """The Wan solver: UniPC with flow prediction and shifted flow sigmas."""
    return UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift
    )


def build_ti2v_pipeline(seed: int = 0, shift: float = 5.0) -> WanPipeline:
    """A tiny TI2V-5B-style pipeline (Wan2.2 VAE, 48-channel transformer, ``expand_timesteps``)."""
    tokenizer = build_tokenizer()
    return WanPipeline(
        tokenizer=tokenizer,
        text_encoder=build_text_encoder(len(tokenizer), seed),
        vae=build_wan22_vae(seed),
        transformer=build_transformer(48, 48, seed),
        scheduler=build_scheduler(shift),
        expand_timesteps=True,
    )

def build_a14b_pipeline(task: str = "t2v", seed: int = 0) -> WanPipeline | WanImageToVideoPipeline:
    """A tiny two-expert (A14B-style) pipeline: Wan2.1 VAE, high-noise ``transformer`` and
    low-noise ``transformer_2`` with the official switch point (0.875 T2V, 0.9 I2V) and shift.

    ``task`` is ``"t2v"`` (16 input channels) or ``"i2v"`` (36: noise + frame mask + image latents).
    """
    if task not in ("t2v", "i2v"):
        raise ValueError(f"task must be 't2v' or 'i2v', got {task!r}")
    tokenizer = build_tokenizer()
    in_ch = 16 if task == "t2v" else 36
    common = dict(
        tokenizer=tokenizer,
        text_encoder=build_text_encoder(len(tokenizer), seed),
        vae=build_wan21_vae(seed),
        transformer=build_transformer(in_ch, 16, seed),
        transformer_2=build_transformer(in_ch, 16, seed + 1),
        scheduler=build_scheduler(12.0 if task == "t2v" else 5.0),
        boundary_ratio=0.875 if task == "t2v" else 0.9,
    )
    if task == "t2v":
        return WanPipeline(**common)
    return WanImageToVideoPipeline(**common, image_encoder=None, image_processor=None)


def build_demo(task: str, shift: float, seed: int = 0) -> object:
    """The built-in demo pipeline of a task: tiny TI2V, or tiny speech-to-video for ``"s2v"``."""
    if task == "s2v":
        # Lazy: the speech-to-video model is defined with the engine; only this demo needs it here.
        from wan_studio.engine.s2v.tiny import build_s2v_pipeline

        return build_s2v_pipeline(seed=seed, shift=shift)
    return build_ti2v_pipeline(seed=seed, shift=shift)
