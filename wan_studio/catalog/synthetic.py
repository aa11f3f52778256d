"""Full-size Wan2.2 components with random weights, built directly on a device (benchmarks).

Weights are created on the meta device, materialised with ``to_empty`` on the target device and
filled there (no host copy, no download): a 14B expert takes seconds on a GPU. Buffers that carry
values (rotary tables) are built for real and copied back after ``to_empty``. The output is noise;
only memory and time are meaningful.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from wan_studio.catalog.specs import ModelSpec

INIT_STD = 0.02

TRANSFORMER_CONFIGS: dict[str, dict[str, Any]] = {
    "ti2v-5b": dict(num_attention_heads=24, in_channels=48, out_channels=48, ffn_dim=14336, num_layers=30),
    "t2v-a14b": dict(num_attention_heads=40, in_channels=16, out_channels=16, ffn_dim=13824, num_layers=40),
    "i2v-a14b": dict(num_attention_heads=40, in_channels=36, out_channels=16, ffn_dim=13824, num_layers=40),
}
TRANSFORMER_COMMON: dict[str, Any] = dict(
    patch_size=(1, 2, 2), attention_head_dim=128, text_dim=4096, freq_dim=256, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
UMT5_CONFIG: dict[str, Any] = dict(
    d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24, vocab_size=256_384,
    feed_forward_proj="gated-gelu", relative_attention_num_buckets=32, relative_attention_max_distance=128,
    pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
WAN22_VAE_CONFIG: dict[str, Any] = dict(
    base_dim=160, decoder_base_dim=256, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
    temperal_downsample=[False, True, True], is_residual=True, in_channels=12, out_channels=12, patch_size=2,
    scale_factor_spatial=16, scale_factor_temporal=4, latents_mean=[0.0] * 48, latents_std=[1.0] * 48)


def materialize(factory: Callable[[], torch.nn.Module], device: str | torch.device, dtype: torch.dtype,
                seed: int = 0) -> torch.nn.Module:
    """Build ``factory()`` with meta weights, allocate it on ``device`` in ``dtype`` and fill it.

    Matrices get N(0, 0.02); norm scales 1; biases 0. Value-carrying buffers are kept.
    """
    from accelerate import init_empty_weights

    # Parameters are created in ``dtype`` (no fp32 detour: a 14B expert would need 57 GB).
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with init_empty_weights(include_buffers=False):
            module = factory()
    finally:
        torch.set_default_dtype(previous)
    buffers = {name: b.clone() for name, b in module.named_buffers()}
    module = module.to_empty(device=device)
    # Built on meta, UMT5's token embedding comes out as two tensors (``shared`` and the encoder's
    # ``embed_tokens``); real checkpoints tie them. Untied, the saved encoder held the 2 GB embedding
    # twice, and every benchmark's text phase measured 1.96 GiB no real model has.
    if hasattr(module, "tie_weights"):
        module.tie_weights()
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() == 1 and ("norm" in name or "scale" in name):
                p.fill_(1.0)
            elif p.dim() == 1:
                p.zero_()
            else:
                p.normal_(0.0, INIT_STD, generator=gen)
        for name, b in module.named_buffers():
            b.copy_(buffers[name].to(b.dtype))
    return module.eval()


def build_component(spec: ModelSpec, name: str, device: str | torch.device = "cuda",
                    seed: int = 0) -> torch.nn.Module:
    """Component ``name`` of ``spec`` at full size: transformers and UMT5 in bf16, VAEs in fp32."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    if name in ("transformer", "transformer_2"):
        try:
            config = TRANSFORMER_CONFIGS[spec.key] | TRANSFORMER_COMMON
        except KeyError:
            raise ValueError(f"no synthetic transformer for {spec.key}; known: {', '.join(TRANSFORMER_CONFIGS)}") from None
        return materialize(lambda: WanTransformer3DModel(**config), device, torch.bfloat16,
                           seed + (1 if name == "transformer_2" else 0))
    if name == "text_encoder":
        return materialize(lambda: UMT5EncoderModel(UMT5Config(**UMT5_CONFIG)), device, torch.bfloat16, seed)
    if name == "vae":
        config = WAN22_VAE_CONFIG if spec.vae == "wan2.2" else {}
        return materialize(lambda: AutoencoderKLWan(**config), device, torch.float32, seed)
    raise ValueError(f"no synthetic builder for the {name} of {spec.title}")


def build_pipeline(spec: ModelSpec, device: str | torch.device = "cuda", seed: int = 0) -> Any:
    """The diffusers pipeline of ``spec`` at full size with random weights on ``device``."""
    from wan_studio.catalog import tiny
    from wan_studio.catalog.assembly import build_pipeline as assemble

    modules = {c.name: build_component(spec, c.name, device, seed) for c in spec.components}
    return assemble(spec, modules, tiny.build_tokenizer(), tiny.build_scheduler(spec.shift))
