"""Find, check, download and load model weights.

A model lives in ``<models-dir>/<spec.folder>`` in Diffusers layout, or is fetched by its Hub id
through huggingface_hub. Missing or damaged files are reported by name before any loading starts.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from wan_studio.catalog.specs import ModelSpec

Status = Literal["built-in", "ready", "not downloaded", "incomplete"]

MODEL_COMPONENTS = {"transformer", "transformer_2", "vae", "text_encoder", "image_encoder"}
WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "model.safetensors", "diffusion_pytorch_model.bin", "pytorch_model.bin")


class ModelNotDownloaded(FileNotFoundError):
    """The model's folder does not exist; the message carries the command that fetches it."""


class IncompleteModel(FileNotFoundError):
    """The model's folder is missing a file or holds a damaged one; the message names it."""


@dataclass(frozen=True)
class Availability:
    """Whether a model can be loaded now, and what to do if not."""

    spec: ModelSpec
    status: Status
    path: Path | None
    detail: str

    @property
    def usable(self) -> bool:
        """True when loading can start without a download."""
        return self.status in ("built-in", "ready")

    @property
    def label(self) -> str:
        """Short text for the UI, e.g. ``Wan2.2 TI2V-5B — not downloaded``."""
        return f"{self.spec.title} — {self.status}"


def download_command(spec: ModelSpec, models_dir: Path) -> str:
    """The command that fetches ``spec`` into ``models_dir``, the folder this app reads: the
    ``--models-dir`` part is left out only for the default ``./models``."""
    models_dir = Path(models_dir)
    if models_dir == Path("models"):
        return spec.download_command
    return f"{spec.download_command} --models-dir {shlex.quote(str(models_dir))}"


def model_folder(spec: ModelSpec, models_dir: Path) -> Path:
    """Where ``spec`` is expected on disk."""
    return Path(models_dir) / spec.folder


def availability(spec: ModelSpec, models_dir: Path, comfyui_dir: Path | None = None) -> Availability:
    """Check (cheaply: headers only) whether ``spec`` is present and complete under ``models_dir``
    (Diffusers or official layout) or in the ComfyUI ``models`` folder ``comfyui_dir``."""
    from wan_studio.catalog.formats import Sources

    if spec.is_demo:
        return Availability(spec, "built-in", None, "built into the app; no download needed")
    hit = Sources.of(models_dir, comfyui_dir).find(spec)
    if hit is None:
        folder = model_folder(spec, models_dir)
        elsewhere = f"; no files for it in the ComfyUI folder {comfyui_dir}" if comfyui_dir is not None else ""
        return Availability(
            spec, "not downloaded", folder,
            f"not downloaded; fetch it with: {download_command(spec, models_dir)} "
            f"(or: hf download {spec.hub_id} --local-dir {folder}){elsewhere}",
        )
    fmt, found = hit
    return Availability(spec, found.status, found.root, fmt.describe(found))


def check_folder(folder: Path, spec: ModelSpec | None = None) -> None:
    """Raise ``IncompleteModel`` naming the first missing or truncated file of a Diffusers folder."""
    folder = Path(folder)
    hint = f"; re-download with: {download_command(spec, folder.parent)}" if spec else ""
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise IncompleteModel(f"{index_path} is missing: {folder} is not a model in Diffusers layout{hint}")
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise IncompleteModel(f"{index_path} is not valid JSON ({e}){hint}") from None
    for name, entry in index.items():
        if name.startswith("_") or not _is_component_entry(entry):
            continue
        sub = folder / name
        if not sub.is_dir():
            raise IncompleteModel(f"{sub} is missing (listed in model_index.json){hint}")
        if name in MODEL_COMPONENTS:
            _check_model_dir(sub, hint)
        elif name == "scheduler":
            _require(sub / "scheduler_config.json", hint)
        elif name == "tokenizer":
            _require(sub / "tokenizer_config.json", hint)
            if not any((sub / n).is_file() for n in ("tokenizer.json", "spiece.model")):
                raise IncompleteModel(f"{sub / 'tokenizer.json'} (or spiece.model) is missing{hint}")


def _is_component_entry(entry: Any) -> bool:
    return isinstance(entry, list) and len(entry) == 2 and all(isinstance(x, str) for x in entry)


def _require(path: Path, hint: str) -> None:
    if not path.is_file():
        raise IncompleteModel(f"{path} is missing{hint}")


def _check_model_dir(sub: Path, hint: str) -> None:
    _require(sub / "config.json", hint)
    indexes = sorted(sub.glob("*.safetensors.index.json"))
    if indexes:
        _check_shards(indexes[0], hint)
        return
    for name in WEIGHT_NAMES:
        if (sub / name).is_file():
            if name.endswith(".safetensors"):
                _check_safetensors(sub / name, hint)
            return
    raise IncompleteModel(f"{sub / WEIGHT_NAMES[0]} is missing (no weights in {sub.name}/){hint}")


def _check_shards(index: Path, hint: str) -> None:
    """Check every shard a ``*.safetensors.index.json`` lists (they sit beside the index)."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (json.JSONDecodeError, KeyError, UnicodeDecodeError):
        raise IncompleteModel(f"{index} is damaged (no weight_map){hint}") from None
    for shard in sorted(set(weight_map.values())):
        _check_safetensors(index.parent / shard, hint)


def _check_safetensors(path: Path, hint: str) -> None:
    """Read only the header and compare the file length with the tensors it declares."""
    from wan_studio.catalog.single_file import DamagedFile, read_info

    if not path.is_file():
        raise IncompleteModel(f"{path} is missing{hint}")
    try:
        read_info(path)
    except DamagedFile as e:
        raise IncompleteModel(f"{e}{hint}") from None


# Files of the official speech-to-video release (not in Diffusers layout).
S2V_FILES = ("config.json", "Wan2.1_VAE.pth", "models_t5_umt5-xxl-enc-bf16.pth",
             "wav2vec2-large-xlsr-53-english/config.json", "wav2vec2-large-xlsr-53-english/preprocessor_config.json")
S2V_TOKENIZER = "google/umt5-xxl"


def check_s2v_folder(folder: Path, spec: ModelSpec | None = None) -> None:
    """Raise ``IncompleteModel`` naming the first missing or truncated file of an official S2V folder."""
    folder = Path(folder)
    hint = f"; re-download with: {download_command(spec, folder.parent)}" if spec else ""
    for name in S2V_FILES:
        _require(folder / name, hint)
    tok = folder / S2V_TOKENIZER
    if not any((tok / n).is_file() for n in ("tokenizer.json", "spiece.model", "tokenizer_config.json")):
        raise IncompleteModel(f"{tok} holds no tokenizer files{hint}")
    indexes = sorted(folder.glob("diffusion_pytorch_model*.safetensors.index.json"))
    if not indexes:
        raise IncompleteModel(f"{folder / 'diffusion_pytorch_model.safetensors.index.json'} is missing{hint}")
    _check_shards(indexes[0], hint)


def download(spec: ModelSpec, models_dir: Path) -> Path:
    """Fetch ``spec`` from the Hub into ``<models_dir>/<spec.folder>`` with a progress bar; return it.

    An interrupted download resumes where it stopped when run again.
    """
    from huggingface_hub import snapshot_download

    if spec.is_demo:
        raise ValueError("the demo model is built in; it needs no download")
    folder = model_folder(spec, models_dir)
    folder.parent.mkdir(parents=True, exist_ok=True)
    snapshot_download(repo_id=spec.hub_id, local_dir=str(folder))
    if spec.diffusers_layout:
        check_folder(folder, spec)
    elif spec.task == "s2v":
        check_s2v_folder(folder, spec)
    return folder


def load_pipeline(spec: ModelSpec, source: Path | str, dtype: Any = None) -> Any:
    """Load the diffusers pipeline of ``spec`` from a local folder (``Path``) or a Hub id (``str``).

    Transformers and the text encoder load in ``dtype`` (bf16 by default); the VAE stays in fp32,
    which Wan needs for clean decodes. A local folder is checked first so a missing file is named.
    """
    import torch
    import diffusers

    dtype = dtype or torch.bfloat16
    if spec.task == "s2v":
        if isinstance(source, Path):
            if not source.exists():
                raise ModelNotDownloaded(
                    f"{spec.title} is not downloaded ({source} does not exist); "
                    f"fetch it with: {download_command(spec, source.parent)}"
                )
            check_s2v_folder(source, spec)
        else:
            from huggingface_hub import snapshot_download

            source = Path(snapshot_download(repo_id=source))
        # Lazy import: the S2V model lives with the engine; only this model needs it here.
        from wan_studio.engine.s2v.checkpoint import load_s2v_pipeline

        return load_s2v_pipeline(source, dtype)
    if not spec.diffusers_layout:
        raise NotImplementedError(f"{spec.title} is not loadable in this version of Wan Studio")
    if isinstance(source, Path):
        if not source.exists():
            raise ModelNotDownloaded(
                f"{spec.title} is not downloaded ({source} does not exist); "
                f"fetch it with: {download_command(spec, source.parent)}"
            )
        check_folder(source, spec)
    where = str(source)
    cls = getattr(diffusers, spec.pipeline)
    vae = diffusers.AutoencoderKLWan.from_pretrained(where, subfolder="vae", torch_dtype=torch.float32)
    extra: dict[str, Any] = {}
    if spec.vae == "wan2.2":
        extra["expand_timesteps"] = True
    if spec.boundary is not None:
        extra["boundary_ratio"] = spec.boundary
    return cls.from_pretrained(where, vae=vae, torch_dtype=dtype, **extra)
