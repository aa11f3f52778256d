"""Split stand-ins without Ray: an in-process peer on its own thread, real tiny pipelines."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import torch

from wan_studio.catalog.tiny import build_a14b_pipeline, build_ti2v_pipeline
from wan_studio.cluster.split import ExpertHost, PeerLost, SplitStats, SplitTransformer, pack, twin_with, unpack

CALL = dict(prompt="a red fox", negative_prompt="blurry", height=64, width=64, num_frames=5,
            num_inference_steps=4, guidance_scale=4.0, output_type="np")


class LocalPeer:
    """A peer GPU in this process: serves ``forward`` from ``pipe`` on one thread; can die."""

    def __init__(self, pipe: Any, die_after_calls: int | None = None) -> None:
        self.name = "local-peer"
        self.pipe = pipe
        self.host = ExpertHost(threading.Lock())
        self.pool = ThreadPoolExecutor(1)
        self.calls = 0
        self.die_after_calls = die_after_calls

    def forward(self, role: str, contexts: list[str], streamed: dict, templates: dict) -> Future:
        self.calls += 1
        if self.die_after_calls is not None and self.calls > self.die_after_calls:
            raise ConnectionError("peer went away")
        return self.pool.submit(self.host.forward, getattr(self.pipe, role), "job", role, contexts, streamed, templates)


def run(pipe: Any, **overrides: Any) -> np.ndarray:
    with torch.inference_mode():
        return pipe(**{**CALL, **overrides}, generator=torch.Generator().manual_seed(7)).frames[0]


@pytest.fixture(scope="module")
def ti2v():
    pipe = build_ti2v_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def cfg_twin(pipe: Any, peer: Any, stats: SplitStats) -> Any:
    proxy = SplitTransformer("transformer", pipe.transformer, pipe.transformer, peer, {"uncond"}, stats)
    return twin_with(pipe, transformer=proxy)


def test_pack_round_trips_bf16_and_expanded_tensors() -> None:
    x = torch.randn(2, 3, dtype=torch.bfloat16)
    assert torch.equal(unpack(pack(x)), x)
    t = torch.tensor(999.0).expand(1)  # the timestep as the pipeline builds it (stride 0)
    assert torch.equal(unpack(pack(t)), torch.tensor([999.0]))


def test_cfg_split_gives_the_same_video_and_moves_only_latents_and_predictions(ti2v) -> None:
    reference = run(ti2v)
    stats = SplitStats("cfg", "local-peer")
    peer = LocalPeer(build_ti2v_pipeline(seed=0))  # the peer's own copy of the same weights
    split = run(cfg_twin(ti2v, peer, stats))
    assert np.array_equal(split, reference)
    latent_bytes = 48 * 2 * 4 * 4 * 4  # channels × latent frames × 4 × 4, float32
    # Step 1 runs alone (the unconditional arguments are first seen there); then one call per step.
    assert stats.remote_steps == CALL["num_inference_steps"] - 1 == peer.calls
    assert stats.received_bytes == latent_bytes * stats.remote_steps
    assert latent_bytes * stats.remote_steps <= stats.sent_bytes <= (latent_bytes + 256) * stats.remote_steps
    # The negative prompt's embedding crossed once, not every step.
    assert 0 < stats.template_bytes <= 512 * 32 * 4


def test_cfg_split_finishes_alone_when_the_peer_dies(ti2v) -> None:
    reference = run(ti2v)
    stats = SplitStats("cfg", "local-peer")
    split = run(cfg_twin(ti2v, LocalPeer(build_ti2v_pipeline(seed=0), die_after_calls=1), stats))
    assert np.array_equal(split, reference)
    assert stats.peer_lost_at_step == 3


def expert_twins(die_after_calls: int | None = None) -> tuple[Any, Any, SplitStats]:
    full = build_a14b_pipeline("t2v", seed=0)
    full.set_progress_bar_config(disable=True)
    high_only = twin_with(full, transformer_2=None)
    peer = LocalPeer(twin_with(build_a14b_pipeline("t2v", seed=0), transformer=None), die_after_calls)
    stats = SplitStats("experts", peer.name)
    local = SplitTransformer("transformer", high_only.transformer, high_only.transformer, None, set(), stats)
    remote = SplitTransformer("transformer_2", high_only.transformer, None, peer, {"cond", "uncond"}, stats)
    return full, twin_with(high_only, transformer=local, transformer_2=remote), stats


def test_expert_split_gives_the_same_video_with_the_low_noise_expert_elsewhere() -> None:
    full, split_pipe, stats = expert_twins()
    steps = 6
    reference = run(full, num_inference_steps=steps)
    assert np.array_equal(run(split_pipe, num_inference_steps=steps), reference)
    assert split_pipe.transformer.local is not None and split_pipe.transformer_2.local is None
    assert 0 < stats.remote_steps < steps  # only the low-noise steps crossed
    # From the second low-noise step on, both branches come back from one call.
    assert stats.calls == stats.remote_steps + 1


def test_expert_split_reports_a_lost_peer() -> None:
    _full, split_pipe, _stats = expert_twins(die_after_calls=1)
    with pytest.raises(PeerLost, match="transformer_2 expert"):
        run(split_pipe, num_inference_steps=6)
