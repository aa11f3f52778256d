"""The Advanced tab's models panel: a ComfyUI folder is checked before the app is started with it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch

from tests.catalog import comfy_files as cf
from wan_studio.catalog import tiny
from wan_studio.settings import Settings
from wan_studio.ui.models_panel import scan_text


def _studio(tmp_path: Path, admin: bool = True) -> SimpleNamespace:
    return SimpleNamespace(settings=Settings(models_dir=tmp_path / "models"), is_admin=lambda user: admin)


def test_a_typed_folder_is_checked_and_the_flag_to_use_it_is_given(tmp_path: Path) -> None:
    root = tmp_path / "ComfyUI" / "models"
    t = tiny.build_transformer(48, 48)
    cf.save(cf.transformer_to_original(t.state_dict()), root / "diffusion_models" / "wan2.2_ti2v_5B_fp16.safetensors",
            torch.float16)
    text = scan_text(_studio(tmp_path), str(root), "me")
    assert f"python app.py --comfyui-dir {root}" in text
    ti2v = next(line for line in text.splitlines() if "TI2V-5B" in line)
    assert "incomplete" in ti2v and "diffusion_models/wan2.2_ti2v_5B_fp16.safetensors" in ti2v
    assert "missing: text_encoders/umt5_xxl_fp16.safetensors" in ti2v and "vae/wan2.2_vae.safetensors" in ti2v
    assert "not downloaded" in next(line for line in text.splitlines() if "T2V-A14B" in line)


def test_only_an_admin_may_look_at_the_servers_folders(tmp_path: Path) -> None:
    assert scan_text(_studio(tmp_path, admin=False), str(tmp_path), None) == \
        "Only an admin can look at the server's folders."
    assert scan_text(_studio(tmp_path), str(tmp_path / "nope"), "me") == f"{tmp_path / 'nope'} is not a folder on this machine."
