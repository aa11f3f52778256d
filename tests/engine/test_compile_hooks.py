"""Blocks under block offload compile to one shared graph (the offload hooks stay out of it), so a
session never reaches torch._dynamo's recompile limit; the output is the eager output."""

from __future__ import annotations

from typing import Any

import torch
from diffusers.hooks import apply_group_offloading
from torch._dynamo.utils import counters

from wan_studio.catalog.tiny import build_transformer
from wan_studio.engine.accel import compile_below_hooks


def _offloaded() -> Any:
    model = build_transformer(48, 48).eval()
    cpu = torch.device("cpu")
    apply_group_offloading(model, onload_device=cpu, offload_device=cpu, offload_type="block_level",
                           num_blocks_per_group=1)
    return model


def _run(model: Any) -> list[torch.Tensor]:
    x = torch.randn(1, 48, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    text = torch.randn(1, 16, model.config.text_dim, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        return [model(hidden_states=x, timestep=torch.tensor([t]), encoder_hidden_states=text, return_dict=False)[0]
                for t in (900, 500, 100)]


def _graphs(model: Any, compile_block: Any) -> tuple[int, list[torch.Tensor]]:
    torch._dynamo.reset()
    counters.clear()
    for block in model.blocks:
        compile_block(block)
    out = _run(model)
    return counters["stats"]["unique_graphs"], out


def test_offloaded_blocks_share_one_graph_below_the_hooks() -> None:
    eager = _run(_offloaded())
    whole, _ = _graphs(_offloaded(), lambda b: b.compile(backend="eager"))
    below, out = _graphs(_offloaded(), lambda b: compile_below_hooks(b, backend="eager"))
    assert whole == 2  # hooks traced: one graph per block (2 blocks)
    assert below == 1
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(out, eager))


def test_a_model_compiled_whole_then_streamed_runs_under_its_new_hooks() -> None:
    # A cached pipeline keeps its modules between jobs: a 5 s clip compiled its blocks whole
    # (model offload), a 10 s clip of the same model then streams them (block offload).
    model = build_transformer(48, 48).eval()
    eager = _run(model)
    torch._dynamo.reset()
    for block in model.blocks:
        block.compile(backend="eager", fullgraph=True)
    _run(model)
    cpu = torch.device("cpu")
    apply_group_offloading(model, onload_device=cpu, offload_device=cpu, offload_type="block_level",
                           num_blocks_per_group=1)
    for block in model.blocks:
        compile_below_hooks(block, backend="eager", fullgraph=True)
    out = _run(model)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(out, eager))
