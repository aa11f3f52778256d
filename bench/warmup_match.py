"""Does a cold worker's compile warm-up give the real transformer's first step a compiled graph
under block offload? An A14B expert's configuration (first ``--layers`` blocks, random bf16
weights) placed as the worker places it (``memory.apply.place_component``: diffusers block offload
with streams, packed pinned copies) and sped up as the worker does (``accel.apply_speed``), after
the throwaway warm-up of ``engine.warmup`` at 832×480×81; then two forwards as the pipeline makes
them (no_grad inside inference mode). Prints each forward's seconds, the graphs dynamo compiled
in it and why it recompiled.

  python3 bench/warmup_match.py            # GPU: A14B expert, 3 blocks
"""

from __future__ import annotations

import argparse
import logging
import time
from types import SimpleNamespace

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--no-warmup", action="store_true")
    a = p.parse_args()
    from diffusers import WanTransformer3DModel
    from torch._dynamo.utils import counters

    from wan_studio.engine import accel, warmup
    from wan_studio.memory.apply import place_component
    from wan_studio.memory.plan import Placement

    torch._logging.set_logs(recompiles=True, graph_breaks=True)
    logging.basicConfig(level=logging.WARNING)
    cfg = dict(patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=36,
               out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=a.layers,
               cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
    t0 = time.perf_counter()
    model = WanTransformer3DModel.from_config(cfg).to(torch.bfloat16).eval()
    print(f"built in {time.perf_counter() - t0:.1f} s")
    shapes = warmup.shapes_for(model.config, 832, 480, 81, 16, False)
    if not a.no_warmup:
        t0 = time.perf_counter()
        prepare = warmup.speed_preparer({"group_offload"}, "bf16", accel.SpeedOptions())
        ran = warmup.run_throwaway(WanTransformer3DModel, model.config, shapes, prepare, "cuda:0", torch.bfloat16)
        print(f"warm-up ran={ran} in {time.perf_counter() - t0:.1f} s; graphs {dict(counters['stats'])}")
    place_component(model, Placement("transformer", "cuda:0", "bf16", "group_offload"))
    record = accel.apply_speed(SimpleNamespace(transformer=model), {"group_offload"}, "bf16")
    print("speed", record)
    c, f, h, w = shapes.latent
    with torch.inference_mode():
        hidden = torch.randn(1, c, f, h, w, device="cuda", dtype=torch.bfloat16)
        text = torch.randn(1, 512, 4096, device="cuda", dtype=torch.bfloat16)
        for i in range(3):
            counters.clear()
            t = torch.tensor([999 - i], device="cuda", dtype=torch.int64).expand(1)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            with torch.no_grad():
                model(hidden_states=hidden, timestep=t, encoder_hidden_states=text, encoder_hidden_states_image=None,
                      attention_kwargs=None, return_dict=False)
            torch.cuda.synchronize()
            print(f"forward {i + 1}: {time.perf_counter() - t0:.2f} s; graphs {dict(counters['stats'])}", flush=True)


if __name__ == "__main__":
    main()
