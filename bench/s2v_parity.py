"""Check Wan Studio's speech-to-video transformer and audio features against the official code.

Loads one random state dict into both the official ``WanModel_S2V`` and ``S2VTransformer`` (at a
small width, 25 wav2vec2 layers as released) and compares their predictions with and without
motion context; then compares the per-frame audio feature layout. CPU, fp32, a few seconds.

    git clone https://github.com/Wan-Video/Wan2.2 /tmp/Wan2.2   # or any checkout of it
    pip install einops                                          # the official module needs it
    python bench/s2v_parity.py --official /tmp/Wan2.2

flash-attn is not needed: the official attention entry point is replaced by PyTorch SDPA here.
Prints one line ``RESULT {json}``; exit status 1 when a difference exceeds ``--tol``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.machinery
import importlib.util
import json
import os
import sys
import types

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def import_official(root: str) -> tuple[types.ModuleType, types.ModuleType]:
    """The official S2V model and audio modules, without the package ``__init__`` side imports."""
    for name, sub in (("wan", ""), ("wan.modules", "modules"), ("wan.distributed", "distributed"),
                      ("wan.modules.s2v", "modules/s2v")):
        pkg = types.ModuleType(name)
        pkg.__path__ = [os.path.join(root, "wan", sub)]
        sys.modules[name] = pkg
    attention = importlib.import_module("wan.modules.attention")

    def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        # Sequences here are unpadded, so the official length arguments change nothing.
        out = F.scaled_dot_product_attention(q.transpose(1, 2).float(), k.transpose(1, 2).float(),
                                             v.transpose(1, 2).float())
        return out.transpose(1, 2)

    attention.flash_attention = sdpa
    if importlib.util.find_spec("librosa") is None:  # imported by the audio module, unused by what we call
        stub = types.ModuleType("librosa")
        stub.__spec__ = importlib.machinery.ModuleSpec("librosa", None)
        sys.modules["librosa"] = stub
    return (importlib.import_module("wan.modules.s2v.model_s2v"),
            importlib.import_module("wan.modules.s2v.audio_encoder"))


def _text_encoder_diff(g: torch.Generator) -> float:
    """Official UMT5 encoder vs ``transformers.UMT5EncoderModel`` fed the converted weights."""
    from transformers import UMT5EncoderModel

    from wan_studio.engine.s2v.checkpoint import convert_t5, umt5_xxl_config

    # The official module evaluates torch.cuda.current_device() in a default argument at import.
    current, torch.cuda.current_device = torch.cuda.current_device, lambda: 0
    try:
        t5 = importlib.import_module("wan.modules.t5")
    finally:
        torch.cuda.current_device = current
    torch.manual_seed(2)
    official = t5.T5Encoder(vocab=300, dim=32, dim_attn=32, dim_ffn=48, num_heads=4, num_layers=2,
                            num_buckets=32, shared_pos=False, dropout=0.0).eval()
    with torch.no_grad():
        for p in official.parameters():
            p.normal_(0, 0.3)
    cfg = umt5_xxl_config(vocab_size=300)
    cfg.d_model, cfg.d_kv, cfg.d_ff, cfg.num_layers, cfg.num_heads = 32, 8, 48, 2, 4
    ours = UMT5EncoderModel(cfg).eval()
    ours.load_state_dict(convert_t5(official.state_dict()), strict=True)
    ids = torch.randint(2, 300, (1, 20), generator=g)
    mask = torch.ones(1, 20, dtype=torch.long)
    mask[:, 15:] = 0  # padded tail, as with a short prompt
    with torch.no_grad():
        a = official(ids, mask)[:, :15]
        b = ours(ids, attention_mask=mask).last_hidden_state[:, :15]
    return (a - b).abs().max().item()


def _vae_diffs(g: torch.Generator) -> dict[str, float]:
    """Official Wan2.1 VAE (random weights, full size) vs diffusers' VAE after the key conversion
    Wan Studio's loader uses, through the pipeline's own latent normalisation."""
    from diffusers import AutoencoderKLWan
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    from wan_studio.engine.s2v.pipeline import S2VPipeline

    vae21 = importlib.import_module("wan.modules.vae2_1")
    torch.manual_seed(3)
    net = vae21.WanVAE_(dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                        temperal_downsample=[False, True, True], dropout=0.0).eval()
    original = vae21._video_vae
    vae21._video_vae = lambda *a, **k: net  # build the official wrapper around our random network
    try:
        official = vae21.Wan2_1_VAE(vae_pth=None, device="cpu")
    finally:
        vae21._video_vae = original
    ours = AutoencoderKLWan().eval()
    ours.load_state_dict(convert_wan_vae_to_diffusers(net.state_dict()), strict=True)
    shim = types.SimpleNamespace(vae=ours, transformer=types.SimpleNamespace(dtype=torch.float32))
    shim._latent_norm = types.MethodType(S2VPipeline._latent_norm, shim)
    video = torch.rand(1, 3, 5, 64, 64, generator=g) * 2 - 1
    with torch.no_grad():
        z_official = official.encode([video[0]])[0]
        z_ours = S2VPipeline.encode_video(shim, video, torch.device("cpu"))[0]
        x_official = official.decode([z_official])[0]
        x_ours = S2VPipeline.decode_latents(shim, z_official[None], torch.device("cpu"))[0]
    return {"vae_encode_max_diff": (z_official - z_ours).abs().max().item(),
            "vae_decode_max_diff": (x_official - x_ours).abs().max().item()}


def shared_transformers(model_s2v: types.ModuleType) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The official ``WanModel_S2V`` at toy width with non-trivial random weights, and
    ``S2VTransformer`` loaded from its state dict (25 wav2vec2 layers as released)."""
    from wan_studio.engine.s2v.config import S2VConfig
    from wan_studio.engine.s2v.transformer import S2VTransformer

    torch.manual_seed(0)
    official = model_s2v.WanModel_S2V(
        cond_dim=16, audio_dim=32, num_audio_token=4, enable_adain=True, adain_mode="attn_norm",
        audio_inject_layers=[0, 2], zero_init=False, zero_timestep=True, enable_motioner=False,
        add_last_motion=True, enable_framepack=True, framepack_drop_mode="padd", in_dim=16, dim=48, ffn_dim=64,
        freq_dim=32, text_dim=32, out_dim=16, num_heads=2, num_layers=3, text_len=64).eval()
    with torch.no_grad():
        for p in official.parameters():  # the official init zeroes the head; use non-trivial weights
            p.normal_(0, 0.2 if p.dim() > 1 else 0.1)
    ours = S2VTransformer(S2VConfig(dim=48, ffn_dim=64, num_heads=2, num_layers=3, text_dim=32, text_len=64,
                                    freq_dim=32, audio_dim=32, audio_layers=25, audio_inject_layers=(0, 2))).eval()
    ours.load_state_dict(official.state_dict(), strict=True)
    return official, ours


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official", required=True, help="checkout of Wan-Video/Wan2.2 (the folder holding wan/)")
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()
    model_s2v, audio_encoder = import_official(os.path.abspath(args.official))
    from wan_studio.engine.s2v.audio_features import per_video_frame, resample
    official, ours = shared_transformers(model_s2v)

    g = torch.Generator().manual_seed(1)
    h, w, t = 16, 24, 4
    lat, ref = torch.randn(1, 16, t, h, w, generator=g), torch.randn(1, 16, 1, h, w, generator=g)
    mot, cond = torch.randn(1, 16, 19, h, w, generator=g), torch.randn(1, 16, t, h, w, generator=g)
    ctx, audio = torch.randn(1, 11, 32, generator=g), torch.randn(1, 25, 32, 4 * t, generator=g)
    step = torch.tensor([734.0])
    result: dict[str, float] = {}
    for drop in (True, False):
        with torch.no_grad():
            a = official([lat[0]], t=step, context=[ctx[0]], seq_len=None, ref_latents=ref, motion_latents=mot,
                         cond_states=cond, audio_input=audio, motion_frames=[73, 19], drop_motion_frames=drop)[0]
            b = ours(lat, step, ctx, ref, None if drop else mot, cond, audio)[0]
        result["first_chunk_max_diff" if drop else "later_chunk_max_diff"] = (a - b).abs().max().item()

    encoder = audio_encoder.AudioEncoder.__new__(audio_encoder.AudioEncoder)
    encoder.video_rate = 30
    worst = 0.0
    for steps in (120, 249, 400):
        z = torch.randn(1, steps, 32, generator=g)
        bucket, chunks = encoder.get_audio_embed_bucket_fps(
            audio_encoder.linear_interpolation(z, input_fps=50, output_fps=30), fps=16, batch_frames=80, m=0)
        mine = per_video_frame(resample(z), 16, chunks * 80)[0, 0].T
        worst = max(worst, (bucket - mine).abs().max().item())
    result["audio_features_max_diff"] = worst
    result["text_encoder_max_diff"] = _text_encoder_diff(g)
    result.update(_vae_diffs(g))
    print("RESULT " + json.dumps(result))
    sys.exit(0 if max(result.values()) <= args.tol else 1)


if __name__ == "__main__":
    main()
