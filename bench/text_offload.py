"""A block-offloaded UMT5-XXL on the GPU: its peak and seconds per prompt beside the planner's.

Builds the full-size text encoder with random weights on the CPU (bf16, its embedding tied as in
real checkpoints), places it as a plan's ``group_offload`` text encoder does
(``apply.place_component``: streamed block by block with prefetch, packed pinned copies), then
encodes two 512-token prompts, three times, under ``--cap-gb``. Prints one ``RESULT`` JSON line.

  python3 bench/text_offload.py --cap-gb 24
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cap-gb", type=float, default=24.0)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()

    import torch
    from transformers import UMT5Config, UMT5EncoderModel

    from wan_studio.catalog import synthetic
    from wan_studio.catalog.specs import get_spec
    from wan_studio.memory import costs
    from wan_studio.memory.apply import place_component
    from wan_studio.memory.estimate import _onload_s, _text_compute_s, in_flight
    from wan_studio.memory.hardware import GIB, detect
    from wan_studio.memory.plan import Placement, Workload

    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, a.cap_gb * GIB / total), 0)
    t0 = time.perf_counter()
    # filled on the GPU (fast), then handed to the placement from the CPU as a load leaves it
    enc = synthetic.materialize(lambda: UMT5EncoderModel(UMT5Config(**synthetic.UMT5_CONFIG)), "cuda", torch.bfloat16)
    enc = enc.to("cpu")
    torch.cuda.empty_cache()
    built_s = time.perf_counter() - t0
    p = Placement("text_encoder", "cuda:0", "bf16", "group_offload")
    t0 = time.perf_counter()
    place_component(enc, p)
    place_s = time.perf_counter() - t0
    ids = torch.randint(0, 256_384, (1, 512), generator=torch.Generator().manual_seed(0)).cuda()
    mask = torch.ones_like(ids)
    rounds = []
    for _ in range(a.rounds):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        with torch.no_grad():
            for _prompt in range(2):
                enc(ids, attention_mask=mask).last_hidden_state.float().sum().item()
        torch.cuda.synchronize()
        rounds.append({"two_prompts_s": round(time.perf_counter() - t0, 3),
                       "peak_gib": round(torch.cuda.max_memory_allocated() / GIB, 3)})
    spec = get_spec("ti2v-5b")
    hw = detect()
    g = hw.gpus[0]
    work = Workload(1280, 704, 121, 2)
    pred_peak = (in_flight(spec, p) + costs.TEXT_WORK_BYTES) / GIB
    pred_s = costs.GPU_PROFILE.text_fixed_s + _onload_s(spec, p, g) + _text_compute_s(spec, p, g, work)
    print("RESULT " + json.dumps({"built_s": round(built_s, 1), "place_s": round(place_s, 2), "rounds": rounds,
                                  "pred_peak_gib": round(pred_peak, 2), "pred_text_s": round(pred_s, 2)}), flush=True)


if __name__ == "__main__":
    main()
