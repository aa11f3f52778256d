"""The model-format seam: one small interface per way a model can sit on disk.

A ``ModelFormat`` answers two questions about a model of the catalog: ``detect`` — what of it is
here (each component's file and size), what is missing, what is wrong (a truncated file, a file
for a different model) — cheaply, from headers; and ``load`` / ``assemble`` — one component, then
the pipeline around cached components. The formats:

- ``DiffusersFolder``: ``<models-dir>/<spec.folder>`` in Diffusers layout (what ``--download`` makes);
- ``OfficialS2VFolder``: the official speech-to-video release (our own pipeline, built whole);
- ``ComfyUIFolder`` (``catalog.comfyui``): a ComfyUI ``models`` folder of single files, each
  ``.safetensors`` (fp16/bf16/fp8/fp8_scaled) or GGUF (``catalog.single_file``).

``Sources`` holds the formats in order of preference and says which one serves a model.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from wan_studio.catalog.specs import ModelSpec

FoundStatus = Literal["ready", "incomplete"]


@dataclass(frozen=True)
class Part:
    """One component found on disk: where, how many bytes, stored how (``bf16``, ``GGUF Q5_K``)."""

    component: str
    path: Path
    bytes: int
    label: str = ""

    def describe(self, root: Path | None = None) -> str:
        """``transformer: diffusion_models/x.safetensors (10.0 GB, fp16)``."""
        where = self.path.relative_to(root) if root is not None and self.path.is_relative_to(root) else self.path
        kind = f", {self.label}" if self.label else ""
        return f"{COMPONENT_WORDS.get(self.component, self.component)}: {where} ({size_text(self.bytes)}{kind})"


def size_text(n: int) -> str:
    """``13.3 GB``, ``850 MB``, ``76 kB`` (decimal units, as file managers show them)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}" if unit == "GB" else f"{n / scale:.0f} {unit}"
    return f"{n} B"


COMPONENT_WORDS = {"transformer": "transformer", "transformer_2": "low-noise expert", "text_encoder": "text encoder",
                   "vae": "VAE", "audio_encoder": "audio encoder"}


@dataclass(frozen=True)
class Found:
    """What one format holds of one model: the parts found, and sentences for what is missing
    or wrong (each names the file or the file it expected)."""

    spec: ModelSpec
    format: str
    root: Path
    parts: tuple[Part, ...] = ()
    missing: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def usable(self) -> bool:
        """True when every component is present and sound."""
        return not self.missing and not self.problems

    @property
    def status(self) -> FoundStatus:
        return "ready" if self.usable else "incomplete"

    def part(self, component: str, gguf: bool | None = None) -> Part | None:
        """The part serving ``component`` (``gguf``: only a GGUF one / only a non-GGUF one)."""
        for p in self.parts:
            if p.component == component and (gguf is None or p.label.startswith("GGUF") == gguf):
                return p
        return None

    def describe(self) -> str:
        """One paragraph for the model list: found (with sizes), missing, wrong."""
        lines = [f"{self.format} in {self.root}" + (": " if self.parts else "")
                 + "; ".join(p.describe(self.root) for p in self.parts)]
        if self.missing:
            lines.append("missing: " + "; ".join(self.missing))
        if self.problems:
            lines.append("problems: " + "; ".join(self.problems))
        lines += list(self.notes)
        return ". ".join(lines)


class ModelFormat(ABC):
    """One way models sit on disk (see the module docstring)."""

    name: str = ""

    @abstractmethod
    def detect(self, spec: ModelSpec) -> Found | None:
        """What of ``spec`` is here (None: nothing at all), from headers only."""

    @abstractmethod
    def load(self, found: Found, name: str, storage: str) -> Any:
        """Component ``name`` on the CPU with its weights stored as ``storage``."""

    @abstractmethod
    def assemble(self, found: Found, modules: dict[str, Any]) -> Any:
        """The model's pipeline around ``modules`` (adds tokenizer and scheduler)."""

    def describe(self, found: Found) -> str:
        """What the model list says of ``found``."""
        return f"ready in {found.root}" if found.usable else "; ".join(found.problems + found.missing)

    def share_key(self, found: Found, name: str) -> str | None:
        """A key naming component ``name`` identically across models when it is byte-identical
        (one UMT5 in memory for every model), None when this format's copy is its own."""
        return None

    def with_files(self, spec: ModelSpec, found: Found, ram_bytes: int | None = None) -> ModelSpec:
        """``spec`` with what the planner must know of these files (e.g. GGUF sizes); ``ram_bytes``:
        the host RAM the model's weights may take here, when a format has files to choose between."""
        return spec


# --- Diffusers layout ---------------------------------------------------------------------------------
def _dir_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*") if f.is_file() and f.suffix in (".safetensors", ".bin"))


class DiffusersFolder(ModelFormat):
    """``<models_dir>/<spec.folder>`` in Diffusers layout: components read with ``from_pretrained``."""

    name = "Diffusers folder"

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = Path(models_dir)

    def detect(self, spec: ModelSpec) -> Found | None:
        from wan_studio.catalog.loading import IncompleteModel, check_folder, model_folder

        if spec.is_demo or not spec.diffusers_layout:
            return None
        folder = model_folder(spec, self.models_dir)
        if not folder.exists():
            return None
        try:
            check_folder(folder, spec)
        except IncompleteModel as e:
            return Found(spec, self.name, folder, problems=(str(e),))
        parts = tuple(Part(c.name, folder / c.name, _dir_bytes(folder / c.name), "") for c in spec.components
                      if (folder / c.name).is_dir())
        return Found(spec, self.name, folder, parts)

    def load(self, found: Found, name: str, storage: str) -> Any:
        import diffusers
        import torch
        from transformers import UMT5EncoderModel

        from wan_studio.memory.apply import apply_storage

        folder = str(found.root)
        if name == "vae":
            return diffusers.AutoencoderKLWan.from_pretrained(folder, subfolder="vae", torch_dtype=torch.float32)
        if name == "text_encoder":
            return UMT5EncoderModel.from_pretrained(folder, subfolder="text_encoder", torch_dtype=torch.bfloat16)
        extra: dict[str, Any] = {}
        if storage == "int8":
            extra["quantization_config"] = diffusers.BitsAndBytesConfig(load_in_8bit=True)
        module = diffusers.WanTransformer3DModel.from_pretrained(folder, subfolder=name, torch_dtype=torch.bfloat16,
                                                                 **extra)
        apply_storage(module, storage)
        return module

    def assemble(self, found: Found, modules: dict[str, Any]) -> Any:
        from diffusers import UniPCMultistepScheduler
        from transformers import AutoTokenizer

        from wan_studio.catalog.assembly import build_pipeline

        folder = str(found.root)
        tokenizer = AutoTokenizer.from_pretrained(folder, subfolder="tokenizer")
        scheduler = UniPCMultistepScheduler.from_pretrained(folder, subfolder="scheduler")
        return build_pipeline(found.spec, modules, tokenizer, scheduler)

    def share_key(self, found: Found, name: str) -> str | None:
        c = next(c for c in found.spec.components if c.name == name)
        return c.share_key  # the Diffusers releases ship byte-identical UMT5 and Wan2.1 VAE files


# --- the official speech-to-video release ---------------------------------------------------------------
class OfficialS2VFolder(ModelFormat):
    """The official ``Wan-AI/Wan2.2-S2V-14B`` folder, read whole into our own pipeline."""

    name = "official release folder"

    def __init__(self, models_dir: Path) -> None:
        from wan_studio.memory.manager import WholePipelineLoader

        self.models_dir = Path(models_dir)
        self._whole = WholePipelineLoader(self._load_pipeline)

    def detect(self, spec: ModelSpec) -> Found | None:
        from wan_studio.catalog.loading import IncompleteModel, check_s2v_folder, model_folder

        if spec.is_demo or spec.task != "s2v":
            return None
        folder = model_folder(spec, self.models_dir)
        if not folder.exists():
            return None
        try:
            check_s2v_folder(folder, spec)
        except IncompleteModel as e:
            return Found(spec, self.name, folder, problems=(str(e),))
        parts = [Part("transformer", folder, _dir_bytes(folder))]
        for comp, rel in (("text_encoder", "models_t5_umt5-xxl-enc-bf16.pth"), ("vae", "Wan2.1_VAE.pth")):
            parts.append(Part(comp, folder / rel, (folder / rel).stat().st_size))
        return Found(spec, self.name, folder, tuple(parts))

    def _load_pipeline(self, spec: ModelSpec) -> Any:
        from wan_studio.catalog.loading import model_folder
        from wan_studio.engine.s2v.checkpoint import load_s2v_pipeline

        return load_s2v_pipeline(model_folder(spec, self.models_dir))

    def load(self, found: Found, name: str, storage: str) -> Any:
        return self._whole.load(found.spec, name, storage)

    def assemble(self, found: Found, modules: dict[str, Any]) -> Any:
        return self._whole.assemble(found.spec, modules)


# --- which format serves a model -------------------------------------------------------------------------
class Sources:
    """The formats in order of preference; the first that holds the whole model serves it."""

    def __init__(self, formats: list[ModelFormat]) -> None:
        self.formats = formats

    @classmethod
    def of(cls, models_dir: Path, comfyui_dir: Path | None = None) -> Sources:
        """The app's sources: Diffusers and official folders under ``models_dir``, then a ComfyUI
        ``models`` folder when given."""
        formats: list[ModelFormat] = [DiffusersFolder(models_dir), OfficialS2VFolder(models_dir)]
        if comfyui_dir is not None:
            from wan_studio.catalog.comfyui import ComfyUIFolder

            formats.append(ComfyUIFolder(comfyui_dir))
        return cls(formats)

    def find(self, spec: ModelSpec) -> tuple[ModelFormat, Found] | None:
        """The format serving ``spec`` and what it found; when none holds it whole, the first
        that holds some of it (its ``Found`` says what is missing); None when none has any."""
        partial: tuple[ModelFormat, Found] | None = None
        for fmt in self.formats:
            found = fmt.detect(spec)
            if found is None:
                continue
            if found.usable:
                return fmt, found
            partial = partial or (fmt, found)
        return partial

    def resolved_spec(self, spec: ModelSpec, ram_bytes: int | None = None) -> ModelSpec:
        """``spec`` as the serving format's files make it (what the planner should count)."""
        hit = self.find(spec)
        if hit is None or not hit[1].usable:
            return spec
        return hit[0].with_files(spec, hit[1], ram_bytes)


# --- the catalog as the files make it ---------------------------------------------------------------------
_ORIGINAL: dict[str, ModelSpec] = {}


def register_found(sources: Sources, ram_bytes: int | None = None) -> list[str]:
    """Replace catalog entries by what the files make of them (GGUF sizes for the planner), in this
    process; ``ram_bytes``: host RAM a model's weights may take here (picks among GGUF
    quantisations). Returns the keys changed; ``reset_catalog`` undoes it."""
    from wan_studio.catalog.specs import CATALOG

    changed = []
    for key, spec in list(CATALOG.items()):
        base = _ORIGINAL.get(key, spec)
        resolved = sources.resolved_spec(base, ram_bytes)
        if resolved != base:
            _ORIGINAL.setdefault(key, base)
            CATALOG[key] = resolved
            changed.append(key)
        elif key in _ORIGINAL:
            CATALOG[key] = _ORIGINAL.pop(key)
    return changed


def reset_catalog() -> None:
    """The catalog as shipped."""
    from wan_studio.catalog.specs import CATALOG

    for key, spec in _ORIGINAL.items():
        CATALOG[key] = spec
    _ORIGINAL.clear()


def with_gguf(spec: ModelSpec, sizes: dict[str, tuple[int, str, bool]]) -> ModelSpec:
    """``spec`` whose components ``sizes`` names can be GGUF: (bytes, quantisation, GGUF only)."""
    comps = tuple(dataclasses.replace(c, gguf_bytes=sizes[c.name][0], gguf_quant=sizes[c.name][1],
                                      gguf_only=sizes[c.name][2]) if c.name in sizes else c
                  for c in spec.components)
    return dataclasses.replace(spec, components=comps)
