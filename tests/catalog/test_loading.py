"""Real weights load from a Diffusers folder; missing or damaged files are named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from wan_studio.catalog import loading
from wan_studio.catalog.specs import get_spec

TI2V = get_spec("ti2v-5b")


@pytest.fixture(scope="module")
def saved_folder(tmp_path_factory) -> Path:
    """The tiny TI2V pipeline saved where TI2V-5B is expected, in Diffusers layout."""
    from wan_studio.catalog.tiny import build_ti2v_pipeline

    models = tmp_path_factory.mktemp("models")
    folder = models / TI2V.folder
    build_ti2v_pipeline(seed=3).save_pretrained(folder)
    return folder


@pytest.fixture
def folder_copy(saved_folder: Path, tmp_path: Path) -> Path:
    import shutil

    dst = tmp_path / "models" / TI2V.folder
    shutil.copytree(saved_folder, dst)
    return dst


def run(pipe) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    out = pipe("a boat", height=64, width=64, num_frames=5, num_inference_steps=2,
               generator=torch.Generator().manual_seed(0), output_type="np")
    return out.frames[0]


def test_round_trip_through_a_local_folder_gives_the_same_video(saved_folder: Path):
    from wan_studio.catalog.tiny import build_ti2v_pipeline

    assert loading.availability(TI2V, saved_folder.parent).status == "ready"
    loaded = loading.load_pipeline(TI2V, saved_folder, dtype=torch.float32)
    assert type(loaded).__name__ == "WanPipeline"
    assert loaded.config.expand_timesteps is True
    assert loaded.vae.dtype == torch.float32
    np.testing.assert_allclose(run(loaded), run(build_ti2v_pipeline(seed=3)), atol=1e-5)


def test_default_dtype_is_bf16_with_an_fp32_vae(saved_folder: Path):
    loaded = loading.load_pipeline(TI2V, saved_folder)
    assert loaded.transformer.dtype == torch.bfloat16
    assert loaded.text_encoder.dtype == torch.bfloat16
    assert loaded.vae.dtype == torch.float32


def test_not_downloaded_names_the_command(tmp_path: Path):
    avail = loading.availability(TI2V, tmp_path)
    assert avail.status == "not downloaded" and not avail.usable
    assert "python app.py --download ti2v-5b" in avail.detail
    assert "Wan-AI/Wan2.2-TI2V-5B-Diffusers" in avail.detail
    with pytest.raises(loading.ModelNotDownloaded, match="--download ti2v-5b"):
        loading.load_pipeline(TI2V, tmp_path / TI2V.folder)


def test_missing_weight_file_is_named(folder_copy: Path):
    (folder_copy / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    avail = loading.availability(TI2V, folder_copy.parent)
    assert avail.status == "incomplete"
    assert "transformer/diffusion_pytorch_model.safetensors is missing" in avail.detail
    with pytest.raises(loading.IncompleteModel, match="transformer/diffusion_pytorch_model.safetensors"):
        loading.load_pipeline(TI2V, folder_copy)


def test_truncated_weight_file_is_named(folder_copy: Path):
    weights = folder_copy / "vae" / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) - 1000])
    with pytest.raises(loading.IncompleteModel, match=r"vae/diffusion_pytorch_model.safetensors is truncated"):
        loading.check_folder(folder_copy, TI2V)


def test_missing_component_folder_and_index(folder_copy: Path):
    import shutil

    shutil.rmtree(folder_copy / "tokenizer")
    with pytest.raises(loading.IncompleteModel, match="tokenizer is missing"):
        loading.check_folder(folder_copy)
    (folder_copy / "model_index.json").unlink()
    with pytest.raises(loading.IncompleteModel, match="model_index.json is missing"):
        loading.check_folder(folder_copy)


def test_missing_shard_of_a_sharded_model(folder_copy: Path):
    sub = folder_copy / "text_encoder"
    weights = next(sub.glob("*.safetensors"))
    index = {"metadata": {}, "weight_map": {"a": weights.name, "b": "model-00002-of-00002.safetensors"}}
    (sub / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(loading.IncompleteModel, match="model-00002-of-00002.safetensors is missing"):
        loading.check_folder(folder_copy)


def test_studio_prefers_the_real_model_once_downloaded(saved_folder: Path, tmp_path: Path):
    from wan_studio.services import Studio
    from wan_studio.settings import Settings

    without = Studio.create(Settings(models_dir=tmp_path / "empty", outputs_dir=tmp_path / "o1"))
    assert without.default_preset("beginner").name == "demo-fast"
    with_model = Studio.create(Settings(models_dir=saved_folder.parent, outputs_dir=tmp_path / "o2"))
    assert with_model.default_preset("beginner").name == "beginner-720p-5s"
