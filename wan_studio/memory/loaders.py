"""Component loaders for the manager: tiny random-weight parts (demo, tests) and real folders.

A loader reads one component at a time (so identical parts of different models are read once)
and assembles a diffusers pipeline around cached components.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wan_studio.catalog import loading, tiny
from wan_studio.catalog.assembly import build_pipeline
from wan_studio.catalog.formats import Found, ModelFormat, Sources
from wan_studio.catalog.specs import ModelSpec
from wan_studio.memory.apply import apply_storage
from wan_studio.memory.manager import WholePipelineLoader, default_share_key

# (in, out) latent channels of each model's transformer: Wan2.2 VAE latents are 48 channels;
# I2V-A14B adds 16 image-latent channels + 4 mask channels to its 16.
TRANSFORMER_CHANNELS = {"wan2.2": (48, 48), "t2v": (16, 16), "i2v": (36, 16)}


def _channels(spec: ModelSpec) -> tuple[int, int]:
    if spec.vae == "wan2.2":
        return TRANSFORMER_CHANNELS["wan2.2"]
    return TRANSFORMER_CHANNELS["i2v" if spec.task == "i2v" else "t2v"]


class TinyLoader:
    """Tiny random-weight components shaped like each model's (the demo model; tests of every model).

    Components are seeded per name, so the same model always gets the same weights.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._tokenizer = tiny.build_tokenizer()
        # Speech to video is our own pipeline, built whole.
        self._whole = WholePipelineLoader(lambda spec: tiny.build_demo("s2v", spec.shift, seed))

    def load(self, spec: ModelSpec, name: str, storage: str) -> Any:
        """Build component ``name`` of ``spec`` and store it as ``storage`` (fp8 works on CPU)."""
        if not spec.diffusers_layout:
            return self._whole.load(spec, name, storage)
        if name == "text_encoder":
            module = tiny.build_text_encoder(len(self._tokenizer), self.seed)
        elif name == "vae":
            module = tiny.build_wan22_vae(self.seed) if spec.vae == "wan2.2" else tiny.build_wan21_vae(self.seed)
        elif name in ("transformer", "transformer_2"):
            seed = self.seed + (1 if name == "transformer_2" else 0)
            module = tiny.build_transformer(*_channels(spec), seed=seed)
        else:
            raise NotImplementedError(f"no tiny builder for the {name} of {spec.title}")
        apply_storage(module, storage)
        return module

    def share_key(self, spec: ModelSpec, name: str) -> str | None:
        """Tiny parts are shared as the Diffusers releases' are (our own S2V pipeline has its own)."""
        return default_share_key(spec, name)

    def transformer_config(self, spec: ModelSpec) -> tuple[type, dict[str, Any]] | None:
        """The class and configuration of ``spec``'s tiny transformer, read without loading it
        (for a compile warm-up, ``engine.warmup``); None for our own speech-to-video pipeline."""
        if not spec.diffusers_layout:
            return None
        module = tiny.build_transformer(*_channels(spec))
        return type(module), dict(module.config)

    def assemble(self, spec: ModelSpec, modules: dict[str, Any]) -> Any:
        """A real diffusers pipeline around the tiny components."""
        if not spec.diffusers_layout:
            return self._whole.assemble(spec, modules)
        return build_pipeline(spec, modules, self._tokenizer, tiny.build_scheduler(spec.shift))


class FolderLoader:
    """Components of the models on disk, through the format that holds each (``catalog.formats``:
    Diffusers or official folders under ``models_dir``, ComfyUI single files under ``comfyui_dir``);
    the demo is tiny."""

    def __init__(self, models_dir: Path, comfyui_dir: Path | None = None, sources: Sources | None = None) -> None:
        self.models_dir = Path(models_dir)
        self.sources = sources or Sources.of(self.models_dir, Path(comfyui_dir) if comfyui_dir else None)
        self._tiny = TinyLoader()

    def _serving(self, spec: ModelSpec) -> tuple[ModelFormat, Found]:
        """The format holding ``spec`` whole; the errors name the command or the missing file."""
        hit = self.sources.find(spec)
        if hit is None:
            folder = loading.model_folder(spec, self.models_dir)
            raise loading.ModelNotDownloaded(
                f"{spec.title} is not downloaded ({folder} does not exist); "
                f"fetch it with: {loading.download_command(spec, self.models_dir)}")
        fmt, found = hit
        if not found.usable:
            raise loading.IncompleteModel(f"{spec.title} is incomplete: {fmt.describe(found)}")
        return fmt, found

    def load(self, spec: ModelSpec, name: str, storage: str) -> Any:
        """Read one component: the VAE in fp32, the rest in bf16 (or as stored: GGUF), 8-bit
        through bitsandbytes."""
        if spec.is_demo:
            return self._tiny.load(spec, name, storage)
        fmt, found = self._serving(spec)
        return fmt.load(found, name, storage)

    def assemble(self, spec: ModelSpec, modules: dict[str, Any]) -> Any:
        """The model's pipeline with its tokenizer and scheduler."""
        if spec.is_demo:
            return self._tiny.assemble(spec, modules)
        fmt, found = self._serving(spec)
        return fmt.assemble(found, modules)

    def transformer_config(self, spec: ModelSpec) -> tuple[type, dict[str, Any]] | None:
        """The class and configuration of ``spec``'s transformer from its Diffusers folder's
        ``transformer/config.json``, read before the weights (for a compile warm-up); None for
        the other formats."""
        if spec.is_demo:
            return self._tiny.transformer_config(spec)
        hit = self.sources.find(spec)
        if hit is None or not hit[1].usable or not (hit[1].root / "transformer" / "config.json").is_file():
            return None
        import diffusers

        config = diffusers.WanTransformer3DModel.load_config(str(hit[1].root), subfolder="transformer")
        return diffusers.WanTransformer3DModel, dict(config)

    def share_key(self, spec: ModelSpec, name: str) -> str | None:
        """Which cached copy component ``name`` of ``spec`` may share with other models."""
        if spec.is_demo:
            return self._tiny.share_key(spec, name)
        hit = self.sources.find(spec)
        return hit[0].share_key(hit[1], name) if hit is not None and hit[1].usable else None
