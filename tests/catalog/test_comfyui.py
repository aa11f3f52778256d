"""A ComfyUI models folder works as it is: the tiny TI2V model written as ComfyUI single files
(released key names, fp16, fp8_scaled with its scales, GGUF Q8_0 / Q4_0 written by the ``gguf``
package) makes the same video as the Diffusers-layout model within each format's error; what is
missing, truncated or for a different model is named; GGUF sizes reach the planner."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.catalog import comfy_files as cf
from wan_studio.catalog import loading, tiny
from wan_studio.catalog.comfyui import ComfyUIFolder, TokenizerUnavailable, hub_tokenizer
from wan_studio.catalog.formats import Found, Sources, with_gguf
from wan_studio.catalog.specs import get_spec
from wan_studio.memory.hardware import GIB, Hardware, gpu
from wan_studio.memory.loaders import FolderLoader
from wan_studio.memory.plan import Workload
from wan_studio.memory import planner

TI2V = get_spec("ti2v-5b")
TRANSFORMER = "diffusion_models/wan2.2_ti2v_5B_fp16.safetensors"
TEXT = "text_encoders/umt5_xxl_fp16.safetensors"
VAE = "vae/wan2.2_vae.safetensors"


@pytest.fixture(scope="module")
def reference():
    """The Diffusers-layout tiny TI2V pipeline the files are written from."""
    return tiny.build_ti2v_pipeline(seed=3)


@pytest.fixture(scope="module")
def want(reference) -> np.ndarray:
    """The Diffusers-layout model's frames, made once."""
    return frames(reference)


@pytest.fixture(scope="module")
def written(reference, tmp_path_factory) -> Path:
    """A ComfyUI folder: fp16 transformer (with ComfyUI's prefix), UMT5, Wan2.2 VAE, and the same
    transformer as fp8_scaled, GGUF Q8_0 and Q4_0 kept aside for the tests that swap them in."""
    root = tmp_path_factory.mktemp("ComfyUI") / "models"
    original = cf.transformer_to_original(reference.transformer.state_dict())
    cf.save(cf.transformer_to_original(reference.transformer.state_dict(), "model.diffusion_model."),
            root / TRANSFORMER, torch.float16)
    cf.save(cf.umt5_to_comfy(reference.text_encoder.state_dict()), root / TEXT, torch.float16)
    cf.save(cf.wan22_vae_to_original(reference.vae.state_dict()), root / VAE)
    spare = root / "spare"  # a folder ComfyUI's layout does not have: nothing there is found
    cf.save(cf.to_fp8_scaled(original), spare / "wan2.2_ti2v_5B_fp8_scaled.safetensors")
    plain = {k: (v.to(torch.float8_e4m3fn) if k.endswith(".weight") and v.dim() == 2 else v) for k, v in
             cf.to_fp8_scaled(original).items() if not k.endswith(".scale_weight")}
    cf.save(plain, spare / "wan2.2_ti2v_5B_fp8_e4m3fn_unscaled.safetensors")
    for quant in ("Q8_0", "Q4_0"):
        cf.save_gguf(original, spare / f"Wan2.2-TI2V-5B-{quant}.gguf", quant)
    return root


@pytest.fixture
def folder(written: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "models"
    shutil.copytree(written, dst)
    return dst


def comfy(root: Path, reference) -> ComfyUIFolder:
    """The format with the tiny models' configs and tokenizer (the app uses the released ones)."""
    parts = {"transformer": reference.transformer, "text_encoder": reference.text_encoder, "vae": reference.vae}
    return ComfyUIFolder(root, configs=lambda spec, name, info: cf.clean_config(parts[name].config),
                         tokenizer=tiny.build_tokenizer)


def frames(pipe) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    out = pipe("a boat", height=64, width=64, num_frames=5, num_inference_steps=2, max_sequence_length=32,
               generator=torch.Generator().manual_seed(0), output_type="np")
    return out.frames[0]


def load_pipe(fmt: ComfyUIFolder, storage: str = "fp32"):
    found = fmt.detect(TI2V)
    assert found is not None and found.usable, found and found.describe()
    modules = {c.name: fmt.load(found, c.name, storage if c.name == "transformer" else "fp32")
               for c in TI2V.components}
    return fmt.assemble(found, modules)


def swap_transformer(root: Path, name: str) -> None:
    """Leave only ``name`` (from the spare files) as the TI2V transformer."""
    (root / TRANSFORMER).unlink()
    target = root / ("unet" if name.endswith(".gguf") else "diffusion_models") / name
    target.parent.mkdir(exist_ok=True)
    shutil.copy(root / "spare" / name, target)


def test_the_comfyui_files_make_the_video_of_the_diffusers_model(written: Path, reference, want):
    fmt = comfy(written, reference)
    found = fmt.detect(TI2V)
    assert [p.component for p in found.parts] == ["transformer", "text_encoder", "vae"]
    np.testing.assert_allclose(frames(load_pipe(fmt)), want, atol=3e-3)  # fp16 files


def test_fp8_scaled_weights_are_multiplied_by_their_scales(folder: Path, reference, want):
    swap_transformer(folder, "wan2.2_ti2v_5B_fp8_scaled.safetensors")
    scaled = np.abs(frames(load_pipe(comfy(folder, reference))) - want).max()
    (folder / "diffusion_models" / "wan2.2_ti2v_5B_fp8_scaled.safetensors").unlink()
    unscaled_file = folder / "spare" / "wan2.2_ti2v_5B_fp8_e4m3fn_unscaled.safetensors"
    shutil.copy(unscaled_file, folder / "diffusion_models" / unscaled_file.name)
    unscaled = np.abs(frames(load_pipe(comfy(folder, reference))) - want).max()
    assert scaled < 0.05
    # without the scales the weights are hundreds of times too large: the video is lost (or NaN)
    assert not unscaled < 0.05


@pytest.mark.parametrize("quant, atol", [("Q8_0", 0.03), ("Q4_0", 0.1)])
def test_gguf_transformers_make_the_video_within_their_quantisation_error(folder: Path, reference, want, quant, atol):
    swap_transformer(folder, f"Wan2.2-TI2V-5B-{quant}.gguf")
    fmt = comfy(folder, reference)
    part = fmt.detect(TI2V).part("transformer")
    assert part.label == f"GGUF {quant}" and part.path.parent.name == "unet"
    pipe = load_pipe(fmt, "gguf")
    assert type(pipe.transformer.blocks[0].attn1.to_q.weight).__name__ == "GGUFParameter"  # kept quantised
    np.testing.assert_allclose(frames(pipe), want, atol=atol)


def test_the_model_list_names_what_was_found_with_sizes(written: Path, reference):
    avail = loading.availability(TI2V, written.parent / "no-diffusers-models", written)
    assert avail.status == "ready" and avail.usable
    size = (written / TRANSFORMER).stat().st_size
    assert f"{TRANSFORMER} ({size / 1e3:.0f} kB, fp16)" in avail.detail
    assert TEXT in avail.detail and VAE in avail.detail


def test_a_missing_component_is_named(folder: Path, reference):
    (folder / VAE).unlink()
    avail = loading.availability(TI2V, folder.parent / "none", folder)
    assert avail.status == "incomplete"
    assert "missing: vae/wan2.2_vae.safetensors" in avail.detail
    assert TRANSFORMER in avail.detail  # what was found is still listed
    loader = FolderLoader(folder.parent / "none", sources=Sources([comfy(folder, reference)]))
    with pytest.raises(loading.IncompleteModel, match="vae/wan2.2_vae.safetensors"):
        loader.load(TI2V, "vae", "fp32")


def test_a_truncated_file_is_named(folder: Path):
    path = folder / TRANSFORMER
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    avail = loading.availability(TI2V, folder.parent / "none", folder)
    assert avail.status == "incomplete"
    assert f"{path} is truncated ({len(data) // 2:,} of {len(data):,} bytes)" in avail.detail


def test_a_file_for_a_different_model_is_named(folder: Path):
    t2v = tiny.build_transformer(16, 16, seed=0)  # an A14B-shaped transformer under the TI2V name
    cf.save(cf.transformer_to_original(t2v.state_dict()), folder / TRANSFORMER)
    avail = loading.availability(TI2V, folder.parent / "none", folder)
    assert avail.status == "incomplete"
    assert (f"{folder / TRANSFORMER} is a T2V (text to video) transformer (16 input channels), "
            f"not one for {TI2V.title} (48)") in avail.detail


def test_the_gguf_file_size_reaches_the_planner(folder: Path, reference):
    swap_transformer(folder, "Wan2.2-TI2V-5B-Q8_0.gguf")
    gguf = folder / "unet" / "Wan2.2-TI2V-5B-Q8_0.gguf"
    spec = Sources([comfy(folder, reference)]).resolved_spec(TI2V)
    c = spec.components[0]
    assert c.gguf_only and c.gguf_quant == "Q8_0"
    assert 0.9 * gguf.stat().st_size < c.gguf_bytes <= gguf.stat().st_size
    plan = planner.choose(spec, Workload(256, 256, 17, 2), Hardware((), 64 * GIB, 64 * GIB))
    assert plan.storage == "gguf" and plan.placement("transformer").storage == "gguf"


def test_the_planner_prefers_gguf_when_the_ram_would_not_hold_the_experts():
    """T2V-A14B on a 48 GiB PC with a 24 GB card: beside the 11 GB text encoder, two bf16 experts
    (57 GB) or fp8 ones (29 GB) do not fit its RAM; the Q5_K GGUF pair (2 × 10.1 GB, the size of
    city96's files) does, and the plan says so."""
    a14b = get_spec("t2v-a14b")
    q5 = int(10.1e9)
    spec = with_gguf(a14b, {"transformer": (q5, "Q5_K", False), "transformer_2": (q5, "Q5_K", False)})
    hw = Hardware((gpu(0, 24),), 48 * GIB, 46 * GIB)
    work = Workload(832, 480, 81, 40)
    plan = planner.choose(spec, work, hw)
    assert plan.storage == "gguf"
    assert plan.why.startswith(f"GGUF Q5_K: {plan.host_ram_bytes / GIB:.0f} GiB of RAM instead of ")
    with pytest.raises(planner.NoPlanFits):
        planner.choose(a14b, work, hw)  # without the GGUF files nothing fits this RAM
    big = replace(hw, host_total_bytes=256 * GIB, host_free_bytes=250 * GIB)
    assert planner.choose(spec, work, big).storage != "gguf"  # with RAM to spare, the better weights


def test_without_a_cached_tokenizer_offline_the_reason_is_said(tmp_path: Path):
    with pytest.raises(TokenizerUnavailable, match="not in the Hugging Face cache and this machine is offline"):
        hub_tokenizer(cache_dir=tmp_path, offline=True)


def test_a14b_experts_are_told_apart_by_name_and_checked_by_shape(tmp_path: Path):
    """Header-only (nothing is loaded): the high-noise file becomes ``transformer``, the low-noise
    one ``transformer_2``; an I2V expert is not taken for T2V, and its missing twin is named."""
    root = tmp_path / "models"
    for task, ch in (("t2v", 16), ("i2v", 36)):
        for seed, noise in enumerate(("high", "low") if task == "t2v" else ("high",)):
            state = cf.transformer_to_original(tiny.build_transformer(ch, 16, seed=seed).state_dict())
            cf.save(cf.to_fp8_scaled(state), root / f"diffusion_models/wan2.2_{task}_{noise}_noise_14B_fp8_scaled.safetensors")
    cf.save(cf.umt5_to_comfy(tiny.build_text_encoder(259).state_dict()), root / TEXT, torch.float16)
    # the latent width in the header is what tells the Wan2.1 VAE from the Wan2.2 one
    cf.save(cf.wan22_vae_to_original(tiny.build_wan21_vae().state_dict()), root / "vae/wan_2.1_vae.safetensors")
    fmt = ComfyUIFolder(root, tokenizer=tiny.build_tokenizer)
    t2v = fmt.detect(get_spec("t2v-a14b"))
    assert t2v.usable, t2v.describe()
    assert {p.component: p.path.name for p in t2v.parts} == {
        "transformer": "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors",
        "transformer_2": "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors",
        "text_encoder": "umt5_xxl_fp16.safetensors", "vae": "wan_2.1_vae.safetensors"}
    assert all(p.label == "fp8_scaled" for p in t2v.parts[:2])
    i2v = fmt.detect(get_spec("i2v-a14b"))
    assert i2v.missing == ("diffusion_models/wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors (or fp16, or GGUF)",)
    assert fmt.detect(TI2V) is None  # no TI2V transformer: TI2V-5B is simply not here


def test_a14b_from_comfyui_files_through_the_manager_makes_the_video_of_the_diffusers_model(tmp_path: Path):
    """T2V-A14B from two expert files, UMT5 and the Wan2.1 VAE, through the loader, the manager and
    the pipeline: the same frames as the Diffusers-layout model (fp16 rounding only). The VAE has the
    released layout (two residual blocks per stage, channels ×1,2,4,4) at width 8: diffusers' own
    conversion of the released Wan2.1 VAE file is what reads it."""
    from diffusers import AutoencoderKLWan

    from wan_studio.memory.manager import ModelManager
    from wan_studio.memory.plan import Placement, Plan

    spec = get_spec("t2v-a14b")
    reference = tiny.build_a14b_pipeline("t2v", seed=5)
    torch.manual_seed(5)
    reference.vae = AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                                     temperal_downsample=[False, True, True]).eval()
    root = tmp_path / "models"
    for name, noise in (("transformer", "high"), ("transformer_2", "low")):
        state = cf.transformer_to_original(getattr(reference, name).state_dict())
        cf.save(state, root / f"diffusion_models/wan2.2_t2v_{noise}_noise_14B_fp16.safetensors", torch.float16)
    cf.save(cf.umt5_to_comfy(reference.text_encoder.state_dict()), root / TEXT, torch.float16)
    cf.save(cf.wan21_vae_to_original(reference.vae.state_dict()), root / "vae/wan_2.1_vae.safetensors")
    modules = {n: getattr(reference, n) for n in ("transformer", "transformer_2", "text_encoder", "vae")}
    fmt = ComfyUIFolder(root, configs=lambda s, name, info: cf.clean_config(modules[name].config),
                        tokenizer=tiny.build_tokenizer, scheduler=lambda s: tiny.build_scheduler(12.0))
    manager = ModelManager(FolderLoader(tmp_path / "none", sources=Sources([fmt])),
                           apply=lambda pipe, plan: None, release=lambda pipe: None)
    plan = Plan(spec.key, "cpu", tuple(Placement(c.name, "cpu", "fp32", "cpu") for c in spec.components),
                vae_tiling=False, peak_vram=(), host_ram_bytes=0, step_s=0.0, job_s=0.0, relative_speed=1.0)

    def four_steps(pipe) -> np.ndarray:  # the last of four steps is below the 0.875 switch: both experts run
        pipe.set_progress_bar_config(disable=True)
        return pipe("a boat", height=32, width=32, num_frames=5, num_inference_steps=4, max_sequence_length=32,
                    generator=torch.Generator().manual_seed(0), output_type="np").frames[0]

    with manager.use(spec, plan) as pipe:
        got = four_steps(pipe)
    np.testing.assert_allclose(got, four_steps(reference), atol=3e-3)
    assert {k[0] for k in manager.cached()} >= {f"file:{root / TEXT}", f"file:{root / 'vae/wan_2.1_vae.safetensors'}"}


def test_the_comfyui_loras_folder_is_used_unless_another_is_given(tmp_path: Path):
    from wan_studio.cluster.runtime import RuntimeConfig
    from wan_studio.settings import settings_from_args

    (tmp_path / "loras").mkdir()
    s = settings_from_args(["--comfyui-dir", str(tmp_path)])
    assert s.comfyui_dir == tmp_path and s.loras_dir == tmp_path / "loras"
    assert RuntimeConfig.from_settings(s).comfyui_dir == str(tmp_path)  # the workers read the same folder
    assert settings_from_args(["--comfyui-dir", str(tmp_path), "--loras-dir", "mine"]).loras_dir == Path("mine")


def test_the_released_configs_cover_one_expert_held_by_a_cluster_worker():
    from wan_studio.catalog.comfyui import default_configs
    from wan_studio.cluster.holder import expert_variant

    high = expert_variant(get_spec("i2v-a14b"), "high")
    config = default_configs(high, "transformer", None)  # type: ignore[arg-type]
    assert config["in_channels"] == 36 and config["num_layers"] == 40
    assert default_configs(TI2V, "vae", None)["latents_std"][0] == 0.4765  # type: ignore[arg-type]


def test_gguf_can_be_pinned_and_a_model_without_gguf_files_says_so():
    from wan_studio.memory.overrides import OverrideError, PlanOverrides

    a14b = get_spec("t2v-a14b")
    spec = with_gguf(a14b, {"transformer": (int(10.1e9), "Q5_K", False), "transformer_2": (int(10.1e9), "Q5_K", False)})
    hw = Hardware((gpu(0, 24),), 256 * GIB, 250 * GIB)
    work = Workload(832, 480, 81, 40)
    pinned = PlanOverrides.from_dict({"storage": "gguf"})
    assert planner.plan_ladder(spec, work, hw, overrides=pinned)[0].storage == "gguf"
    with pytest.raises(OverrideError, match="has no way to run with"):
        planner.plan_ladder(a14b, work, hw, overrides=pinned)


def test_a_truncated_file_beside_a_good_one_is_named_but_does_not_stop_the_model(folder: Path, reference):
    spare = folder / "diffusion_models" / "wan2.2_ti2v_5B_fp8_scaled.safetensors"
    data = (folder / "spare" / spare.name).read_bytes()
    spare.write_bytes(data[:1000])
    avail = loading.availability(TI2V, folder.parent / "none", folder)
    assert avail.usable and f"not used: {spare} is truncated" in avail.detail


def test_the_vae_of_the_other_wan_generation_is_named_when_it_is_the_only_one(folder: Path):
    (folder / VAE).unlink()
    cf.save(cf.wan21_vae_to_original(tiny.build_wan21_vae().state_dict()), folder / "vae/wan_2.1_vae.safetensors")
    avail = loading.availability(TI2V, folder.parent / "none", folder)
    assert avail.status == "incomplete"
    assert f"{folder / 'vae/wan_2.1_vae.safetensors'} is the Wan2.1 VAE (A14B, S2V), not the one {TI2V.title} needs" \
        in avail.detail


def test_with_several_quantisations_the_least_quantised_that_fits_the_ram_is_taken(folder: Path, reference):
    swap_transformer(folder, "Wan2.2-TI2V-5B-Q8_0.gguf")
    shutil.copy(folder / "spare" / "Wan2.2-TI2V-5B-Q4_0.gguf", folder / "unet")
    fmt = comfy(folder, reference)
    found = fmt.detect(TI2V)
    assert [p.label for p in found.parts if p.component == "transformer"] == ["GGUF Q8_0", "GGUF Q4_0"]
    q8, q4 = (fmt.info(folder / "unet" / f"Wan2.2-TI2V-5B-{q}.gguf").tensor_bytes for q in ("Q8_0", "Q4_0"))
    others = sum(c.bytes for c in TI2V.components if c.name != "transformer")
    sources = Sources([fmt])
    assert sources.resolved_spec(TI2V).components[0].gguf_quant == "Q8_0"  # no budget: the best
    assert sources.resolved_spec(TI2V, others + q8).components[0].gguf_quant == "Q8_0"
    tight = sources.resolved_spec(TI2V, others + q8 - 1)
    assert tight.components[0].gguf_quant == "Q4_0" and tight.components[0].gguf_bytes == q4
    # and the loader reads the file the planner counted
    module = fmt.load(Found(tight, fmt.name, folder, found.parts), "transformer", "gguf")
    assert module.blocks[0].attn1.to_q.weight.quant_type.name == "Q4_0"
