"""Full-size random-weight components (benchmarks) build on the meta device and fill correctly."""

from __future__ import annotations

import torch

from wan_studio.catalog.specs import T2V_A14B


def test_full_size_wan21_vae_matches_the_catalog_size_and_is_filled() -> None:
    from wan_studio.catalog.synthetic import build_component

    vae = build_component(T2V_A14B, "vae", "cpu")
    params = sum(p.numel() for p in vae.parameters())
    expected = next(c.params for c in T2V_A14B.components if c.name == "vae")
    assert abs(params - expected) / expected < 0.01
    weights = [p for p in vae.parameters() if p.dim() > 1]
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in weights)
    assert 0.015 < float(weights[0].detach().std()) < 0.025  # filled with N(0, 0.02), not left empty


def test_rotary_tables_survive_materialisation() -> None:
    from diffusers import WanTransformer3DModel

    from wan_studio.catalog import synthetic

    config = synthetic.TRANSFORMER_CONFIGS["ti2v-5b"] | synthetic.TRANSFORMER_COMMON | {"num_layers": 1}
    built = synthetic.materialize(lambda: WanTransformer3DModel(**config), "cpu", torch.bfloat16)
    assert built.patch_embedding.weight.dtype == torch.bfloat16
    assert torch.isfinite(built.rope.freqs_cos).all() and float(built.rope.freqs_cos[0].min()) == 1.0


def test_the_text_encoder_is_saved_with_its_embedding_tied_as_real_checkpoints_are(tmp_path) -> None:
    # Untied, a benchmark's full-size UMT5 held its 2 GB token embedding twice on the GPU, and the
    # planner was fitted to a text phase 1.96 GiB larger than any real model's.
    from transformers import UMT5Config, UMT5EncoderModel

    from wan_studio.catalog import synthetic

    config = synthetic.UMT5_CONFIG | dict(d_model=64, d_ff=128, d_kv=8, num_heads=8, num_layers=2, vocab_size=1000)
    built = synthetic.materialize(lambda: UMT5EncoderModel(UMT5Config(**config)), "cpu", torch.bfloat16)
    assert built.shared.weight.data_ptr() == built.encoder.embed_tokens.weight.data_ptr()
    built.save_pretrained(tmp_path)
    loaded = UMT5EncoderModel.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert loaded.shared.weight.data_ptr() == loaded.encoder.embed_tokens.weight.data_ptr()
    assert sum(p.numel() for p in loaded.parameters()) == 1000 * 64 + sum(
        p.numel() for n, p in loaded.named_parameters() if "embed" not in n and "shared" not in n)
