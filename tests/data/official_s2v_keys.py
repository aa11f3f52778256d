"""Expected state-dict layout of the released speech-to-video transformer, written out by hand.

Derived by reading the official model definition (``WanModel_S2V`` with the released switches:
adaptive audio norm, frame-pack motion, no motion transformer, pose encoder with 16 channels),
independently of Wan Studio's implementation, so the test comparing the two can fail. Running
this file rewrites ``s2v_keys_full.json`` and ``s2v_keys_tiny.json``; at full size it yields the
1,260 tensors of ``Wan-AI/Wan2.2-S2V-14B``.
"""

from __future__ import annotations

import json
from pathlib import Path


def expected_keys(dim: int, ffn: int, layers: int, text_dim: int, freq_dim: int, audio_dim: int,
                  audio_layers: int, audio_tokens: int, injects: int, latent: int = 16) -> dict[str, list[int]]:
    """Key -> shape of the official transformer at the given sizes (patch 1×2×2)."""
    k: dict[str, list[int]] = {}

    def linear(name: str, i: int, o: int) -> None:
        k[f"{name}.weight"], k[f"{name}.bias"] = [o, i], [o]

    def attention(name: str) -> None:
        for p in "qkvo":
            linear(f"{name}.{p}", dim, dim)
        k[f"{name}.norm_q.weight"] = [dim]
        k[f"{name}.norm_k.weight"] = [dim]

    k["patch_embedding.weight"], k["patch_embedding.bias"] = [dim, latent, 1, 2, 2], [dim]
    linear("text_embedding.0", text_dim, dim)
    linear("text_embedding.2", dim, dim)
    linear("time_embedding.0", freq_dim, dim)
    linear("time_embedding.2", dim, dim)
    linear("time_projection.1", dim, 6 * dim)
    for b in range(layers):
        p = f"blocks.{b}"
        attention(f"{p}.self_attn")
        attention(f"{p}.cross_attn")
        k[f"{p}.norm3.weight"], k[f"{p}.norm3.bias"] = [dim], [dim]
        linear(f"{p}.ffn.0", dim, ffn)
        linear(f"{p}.ffn.2", ffn, dim)
        k[f"{p}.modulation"] = [1, 6, dim]
    linear("head.head", dim, 4 * latent)
    k["head.modulation"] = [1, 2, dim]
    k["cond_encoder.weight"], k["cond_encoder.bias"] = [dim, latent, 1, 2, 2], [dim]
    a = "casual_audio_encoder"
    k[f"{a}.weights"] = [1, audio_layers, 1, 1]
    q, h = dim // 4, dim // 2
    for name, i, o in (("conv1_local", audio_dim, q * audio_tokens), ("conv1_global", audio_dim, q),
                       ("conv2", q, h), ("conv3", h, dim)):
        k[f"{a}.encoder.{name}.conv.weight"], k[f"{a}.encoder.{name}.conv.bias"] = [o, i, 3], [o]
    linear(f"{a}.encoder.final_linear", dim, dim)
    k[f"{a}.encoder.padding_tokens"] = [1, 1, 1, dim]
    for j in range(injects):
        attention(f"audio_injector.injector.{j}")
        linear(f"audio_injector.injector_adain_layers.{j}.linear", dim, 2 * dim)
    k["trainable_cond_mask.weight"] = [3, dim]
    for name, kt, ks in (("proj", 1, 2), ("proj_2x", 2, 4), ("proj_4x", 4, 8)):
        k[f"frame_packer.{name}.weight"], k[f"frame_packer.{name}.bias"] = [dim, latent, kt, ks, ks], [dim]
    return k


FULL = dict(dim=5120, ffn=13824, layers=40, text_dim=4096, freq_dim=256, audio_dim=1024, audio_layers=25,
            audio_tokens=4, injects=12)
TINY = dict(dim=32, ffn=64, layers=3, text_dim=32, freq_dim=32, audio_dim=32, audio_layers=3,
            audio_tokens=4, injects=2)

if __name__ == "__main__":
    here = Path(__file__).parent
    for name, sizes in (("full", FULL), ("tiny", TINY)):
        keys = expected_keys(**sizes)
        (here / f"s2v_keys_{name}.json").write_text(json.dumps({"sizes": sizes, "keys": keys}, indent=0) + "\n")
        print(name, len(keys))
