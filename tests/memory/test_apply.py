"""Plans applied to real tiny pipelines: same frames as unplanned; plan → diffusers calls."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from tests.memory.helpers import cpu_plan, run_frames
from tests.memory.test_planner import A14B_480, A14B_720, TI2V_720, box
from wan_studio.catalog.specs import DEMO, T2V_A14B, TI2V_5B
from wan_studio.memory.apply import PlanError, apply_plan, release_pipeline
from wan_studio.memory.loaders import TinyLoader
from wan_studio.memory.planner import choose


def tiny_pipe(spec: Any, storage: str = "bf16") -> Any:
    loader = TinyLoader()
    return loader.assemble(spec, {c.name: loader.load(spec, c.name, storage if c.name.startswith("transformer")
                                                       else c.dtype) for c in spec.components})


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return run_frames(tiny_pipe(T2V_A14B), T2V_A14B)


@pytest.mark.parametrize("offload", ["cpu", "model_offload", "group_offload"])
def test_offload_plans_give_the_same_frames(offload: str, reference: np.ndarray) -> None:
    pipe = tiny_pipe(T2V_A14B)
    apply_plan(pipe, cpu_plan(T2V_A14B, offload=offload))
    np.testing.assert_array_equal(run_frames(pipe, T2V_A14B), reference)
    release_pipeline(pipe)
    np.testing.assert_array_equal(run_frames(pipe, T2V_A14B), reference)


def test_fp8_storage_really_stores_fp8_and_stays_close(reference: np.ndarray) -> None:
    pipe = tiny_pipe(T2V_A14B, "fp8")
    block_weight = pipe.transformer.blocks[0].ffn.net[0].proj.weight
    assert block_weight.dtype == torch.float8_e4m3fn
    apply_plan(pipe, cpu_plan(T2V_A14B, storage="fp8"))
    frames = run_frames(pipe, T2V_A14B)
    assert np.abs(frames - reference).mean() < 0.02
    assert not np.array_equal(frames, reference)  # the cast did something


def test_released_group_offload_leaves_no_hooks() -> None:
    from diffusers.hooks.group_offloading import _is_group_offload_enabled

    pipe = tiny_pipe(DEMO)
    apply_plan(pipe, cpu_plan(DEMO, offload="group_offload"))
    assert _is_group_offload_enabled(pipe.vae) and _is_group_offload_enabled(pipe.transformer)
    release_pipeline(pipe)
    assert not any(_is_group_offload_enabled(m) for m in (pipe.vae, pipe.transformer, pipe.text_encoder))


class Recorder:
    """Stands in for a CUDA-only diffusers call on a real pipeline and records how it was called."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, name: str) -> Any:
        return lambda *args, **kwargs: self.calls.append((name, kwargs))


def test_planned_24gb_a14b_480p_maps_to_fp8_and_model_offload_on_gpu0(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = choose(T2V_A14B, A14B_480, box())
    pipe = tiny_pipe(T2V_A14B, plan.storage)
    apply_plan(pipe, plan)
    for name in ("text_encoder", "transformer", "transformer_2", "vae"):  # pinned model offload to GPU 0
        hook = getattr(pipe, name)._hf_hook
        assert type(hook).__name__ == "PinnedOffloadHook" and hook.execution_device == torch.device("cuda:0")
    assert pipe.transformer_2.blocks[0].attn1.to_q.weight.dtype == torch.float8_e4m3fn
    assert pipe.vae.use_tiling
    assert (pipe.vae.tile_sample_min_height, pipe.vae.tile_sample_stride_width) == (256, 192)


def test_planned_ti2v_decodes_in_the_planned_big_tiles(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = choose(TI2V_5B, TI2V_720, box())
    pipe = tiny_pipe(TI2V_5B, plan.storage)
    pipe.vae.enable_tiling(999, 999, 999, 999)  # a cached pipeline planned before keeps nothing stale
    apply_plan(pipe, plan)
    vae = pipe.vae
    assert vae.use_tiling and (vae.tile_sample_min_height, vae.tile_sample_min_width) == (512, 512)
    assert (vae.tile_sample_stride_height, vae.tile_sample_stride_width) == (448, 448)


def test_planned_24gb_a14b_720p_streams_the_experts_and_swaps_text_encoder_and_vae_in_whole(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Streamed block by block, the text encoder took 19-22 s per job and the decode ~3x its
    # model-offload time on the H200; both fit the card alone, so they take turns on it whole.
    plan = choose(T2V_A14B, A14B_720, box(ram_gib=128))
    pipe = tiny_pipe(T2V_A14B)
    rec = Recorder()
    for name in ("transformer", "transformer_2", "text_encoder", "vae"):
        monkeypatch.setattr(getattr(pipe, name), "enable_group_offload", rec(name), raising=False)
    apply_plan(pipe, plan)
    assert sorted(name for name, _ in rec.calls) == ["transformer", "transformer_2"]
    for _, kwargs in rec.calls:
        assert kwargs["onload_device"] == torch.device("cuda:0") and kwargs["use_stream"] is True
        assert kwargs["offload_type"] == "block_level" and kwargs["num_blocks_per_group"] == 1
    for name in ("text_encoder", "vae"):
        hook = getattr(pipe, name)._hf_hook
        assert type(hook).__name__ == "PinnedOffloadHook" and hook.execution_device == torch.device("cuda:0")


def test_sequential_plan_maps_to_sequential_offload(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = choose(TI2V_5B, TI2V_720, box(gib=12))
    from dataclasses import replace

    plan = replace(plan, placements=tuple(replace(p, offload="sequential") for p in plan.placements))
    pipe = tiny_pipe(TI2V_5B)
    rec = Recorder()
    monkeypatch.setattr(pipe, "enable_sequential_cpu_offload", rec("sequential"))
    apply_plan(pipe, plan)
    assert rec.calls == [("sequential", {"device": torch.device("cuda:0")})]


def test_plans_diffusers_cannot_do_are_refused_before_anything_moves() -> None:
    from dataclasses import replace

    plan = choose(T2V_A14B, A14B_480, box(2, ram_gib=48))
    pipe = tiny_pipe(T2V_A14B)
    vae_elsewhere = replace(plan, placements=tuple(
        replace(p, device="cuda:1") if p.component == "vae" else p for p in plan.placements))
    with pytest.raises(PlanError, match="VAE must sit on the primary device"):
        apply_plan(pipe, vae_elsewhere)
    mixed = replace(plan, placements=tuple(replace(p, offload="model_offload") for p in plan.placements))
    with pytest.raises(PlanError, match="cannot be mixed"):
        apply_plan(pipe, mixed)
    assert pipe.transformer.device.type == "cpu" and pipe.transformer_2.device.type == "cpu"


def test_text_encoder_on_cpu_gets_a_device_hook_and_latents_stay_on_the_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from wan_studio.memory.planner import candidates
    from wan_studio.memory.plan import Limits

    plan = next(p for p, _ in candidates(TI2V_5B, TI2V_720, box(), Limits())
                if p.label == "text encoder on CPU, transformer on GPU 0")
    pipe = tiny_pipe(TI2V_5B)
    moved: list[str] = []
    for name in ("transformer", "vae"):  # no CUDA here: record the moves instead of making them
        monkeypatch.setattr(getattr(pipe, name), "to", lambda device, _n=name: moved.append(f"{_n}->{device}"))
    apply_plan(pipe, plan)
    assert moved == ["transformer->cuda:0", "vae->cuda:0"]
    assert pipe.text_encoder._hf_hook.execution_device == "cpu" and pipe.text_encoder._hf_hook.io_same_device
    assert pipe.vae._hf_hook.execution_device == "cuda:0"
    assert pipe._execution_device == torch.device("cuda:0")  # where the pipeline makes its latents


def test_one_expert_per_gpu_maps_to_two_devices_with_hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    import diffusers.hooks

    plan = choose(T2V_A14B, A14B_480, box(2, ram_gib=48))
    pipe = tiny_pipe(T2V_A14B, plan.storage)
    moved: list[str] = []
    for name in ("transformer", "transformer_2", "vae"):
        monkeypatch.setattr(getattr(pipe, name), "to", lambda device, _n=name: moved.append(f"{_n}->{device}"))
    streamed: list[dict[str, Any]] = []
    monkeypatch.setattr(diffusers.hooks, "apply_group_offloading", lambda module, **kw: streamed.append(kw))
    import accelerate.hooks

    hooked: list[str] = []  # accelerate's hook also moves the expert's top-level tensors: record it
    monkeypatch.setattr(accelerate.hooks, "set_module_tensor_to_device",
                        lambda module, name, device, **kw: hooked.append(f"{name}->{device}"))
    apply_plan(pipe, plan)
    assert sorted(moved) == ["transformer->cuda:0", "transformer_2->cuda:1", "vae->cuda:0"]
    assert hooked == ["scale_shift_table->cuda:1"]
    assert streamed[0]["onload_device"] == torch.device("cuda:0")  # the text encoder, streamed
    assert pipe.transformer_2._hf_hook.execution_device == "cuda:1"
    assert pipe._execution_device == torch.device("cuda:0")


def test_split_across_two_gpus_uses_accelerates_balanced_map(monkeypatch: pytest.MonkeyPatch) -> None:
    import accelerate
    import diffusers

    from wan_studio.memory.apply import _split
    from wan_studio.memory.plan import Placement

    expert = diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=64, ffn_dim=64, num_layers=8, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=256)
    size = sum(t.numel() * t.element_size() for t in expert.parameters())
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index: (10 * size, 10 * size))
    placed: dict[str, Any] = {}
    monkeypatch.setattr(accelerate, "dispatch_model", lambda module, device_map, main_device: placed.update(
        device_map=device_map, main_device=main_device))
    plan = choose(T2V_A14B, A14B_480, box(2, ram_gib=48))
    _split(expert, Placement("transformer", "cuda:0,cuda:1", "bf16", "balanced"), plan)
    blocks = {k: v for k, v in placed["device_map"].items() if k.startswith("blocks.")}
    assert set(blocks.values()) == {0, 1}  # the blocks really are shared out
    assert placed["main_device"] == "cuda:0"


def test_block_offload_keeps_the_layers_around_the_blocks_where_they_run(monkeypatch: pytest.MonkeyPatch) -> None:
    # diffusers moves a streamed model's own layers (embedders, output head) back to the CPU with a
    # blocking copy after every forward: 0.67 s per A14B 720p step on an H200. They stay put instead,
    # and go there with the placement, so a worker's first job holds what its later jobs hold.
    from diffusers.hooks import apply_group_offloading

    import wan_studio.memory.apply as apply

    from diffusers.hooks.group_offloading import ModuleGroup

    pipe = tiny_pipe(T2V_A14B)
    gpu = torch.device("cuda:0")  # set up only (no CUDA needed until a tensor moves)
    apply_group_offloading(pipe.transformer, onload_device=gpu, offload_type="block_level", num_blocks_per_group=1)
    onloaded: list[Any] = []
    monkeypatch.setattr(ModuleGroup, "onload_", lambda group: onloaded.append(group))
    assert apply.keep_top_level_on_gpu(pipe.transformer)
    top = pipe.transformer._diffusers_hook.get_hook("group_offloading").group
    block = pipe.transformer.blocks[0]._diffusers_hook.get_hook("group_offloading").group
    assert top.offload_device == gpu and block.offload_device == torch.device("cpu")  # blocks still stream
    # moved with the placement, before any forward (the GPU test below sees where they are)
    assert onloaded == [top]
    kept: list[str] = []
    monkeypatch.setattr(apply, "keep_top_level_on_gpu", lambda m: kept.append(type(m).__name__))
    apply_plan(tiny_pipe(T2V_A14B), cpu_plan(T2V_A14B, offload="group_offload"))
    assert kept == ["WanTransformer3DModel"] * 2  # the experts; not the text encoder or the VAE


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_the_planned_a14b_720p_streams_blocks_keeps_the_rest_and_evicts_the_text_encoder(
        reference: np.ndarray) -> None:
    plan = choose(T2V_A14B, A14B_720, box(ram_gib=128))
    pipe = tiny_pipe(T2V_A14B)
    apply_plan(pipe, plan)
    where: list[tuple[str, str, str]] = []
    pipe.transformer.blocks[0].register_forward_hook(lambda *_: where.append((
        pipe.transformer.patch_embedding.weight.device.type, pipe.text_encoder.shared.weight.device.type,
        pipe.transformer_2.blocks[0].attn1.to_q.weight.device.type)))
    # placed with the plan: the layers around the blocks are on the GPU before the first forward
    assert pipe.transformer.patch_embedding.weight.device.type == "cuda"
    assert pipe.transformer.blocks[0].attn1.to_q.weight.device.type == "cpu"
    frames = run_frames(pipe, T2V_A14B)
    assert np.abs(frames - reference).max() < 0.02
    # while the first expert ran: its own layers on the GPU, the text encoder gone, the other expert's
    # blocks on the CPU
    assert where and all(w == ("cuda", "cpu", "cpu") for w in where)
    assert pipe.transformer.patch_embedding.weight.device.type == "cuda"  # still there after the job
    assert pipe.transformer.blocks[0].attn1.to_q.weight.device.type == "cpu"
    # the streamed weights wait in packed pinned slabs, once: no per-tensor pinned copy beside them
    groups = {id(g): g for m in (pipe.transformer, pipe.transformer_2) for sub in m.modules()
              if (g := getattr(getattr(sub, "_diffusers_hook", None) and sub._diffusers_hook.get_hook(
                  "group_offloading"), "group", None)) is not None and g.stream is not None}
    copies = [(t, host) for g in groups.values() for t, host in g.cpu_param_dict.items()]
    assert copies and all(host.is_pinned() for _, host in copies)
    assert all(t.data_ptr() == host.data_ptr() for t, host in copies if t.device.type == "cpu")
    slabs = {host.untyped_storage().data_ptr() for _, host in copies}
    assert len(slabs) < len(copies) / 4  # many weights share one slab


def test_a_block_offloaded_text_encoder_streams_its_blocks_not_the_whole_encoder() -> None:
    # diffusers streams the lists among the children of the module it is given; UMT5's blocks are
    # one level down, so the whole 10.6 GiB encoder used to move as one group for each prompt
    # (S2V-14B on an H200: 14.63 GiB peak where 11.71 was planned, 21 s for two prompts).
    from transformers import UMT5Config, UMT5EncoderModel

    from wan_studio.catalog import synthetic
    from wan_studio.memory.apply import place_component
    from wan_studio.memory.pinned_offload import offload_group
    from wan_studio.memory.plan import Placement

    config = synthetic.UMT5_CONFIG | dict(d_model=64, d_ff=128, d_kv=8, num_heads=8, num_layers=3, vocab_size=1000)
    encoder = synthetic.materialize(lambda: UMT5EncoderModel(UMT5Config(**config)), "cpu", torch.float32)
    ids = torch.randint(0, 1000, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = encoder(ids).last_hidden_state
    place_component(encoder, Placement("text_encoder", "cpu", "bf16", "group_offload"))
    groups = {id(g): g for g in (offload_group(m) for m in encoder.modules()) if g is not None}
    streamed = [g for g in groups.values() if any(m is encoder.encoder.block[0] for m in g.modules)]
    assert len(streamed) == 1 and len(streamed[0].modules) == 1  # block 0 is a group of its own
    assert len(groups) == 1 + len(encoder.encoder.block)  # the encoder stack's own layers, one per block
    # The tied token embedding (the model's ``shared``, 2.1 GB of UMT5-XXL) is in no group: it
    # stays on the host and looks up a prompt's rows there (it moved to the GPU and back for each
    # prompt: 2.9 GiB peak, ~1.7 s a prompt on an H200).
    embed = encoder.encoder.embed_tokens
    assert embed.weight is encoder.shared.weight and embed.weight.device.type == "cpu"
    assert all(m is not embed and embed.weight is not getattr(m, "weight", None)
               for g in groups.values() for m in [*g.modules, *(x for mod in g.modules for x in mod.modules())])
    assert all(embed.weight is not t for g in groups.values() for t in g.parameters)
    with torch.no_grad():
        assert torch.equal(encoder(ids).last_hidden_state, before)
    from wan_studio.memory.apply import release_component

    release_component(encoder)  # another plan next: the embedding's hooks go with the rest
    assert not embed._forward_hooks and not embed._forward_pre_hooks
