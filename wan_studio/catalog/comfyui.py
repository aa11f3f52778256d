"""A ComfyUI ``models`` folder used as it is: each Wan2.2 model assembled from the single files present.

Where ComfyUI keeps them: ``diffusion_models/`` (or ``unet/``, where GGUF loaders look) holds the
transformers — ``wan2.2_ti2v_5B_fp16.safetensors``, ``wan2.2_{t2v,i2v}_{high,low}_noise_14B_*`` and
city96-style ``Wan2.2-T2V-A14B-HighNoise-Q5_K_M.gguf``; ``text_encoders/`` (or ``clip/``) the UMT5
encoder (``umt5_xxl_fp8_e4m3fn_scaled.safetensors`` or fp16); ``vae/`` the VAEs (``wan2.2_vae``
for TI2V-5B, ``wan_2.1_vae`` for A14B). Files are matched by name, then checked by their header:
a transformer's input channels and a VAE's latent channels say which model it belongs to, so a
file for a different model is named rather than loaded. The tokenizer is not in these files: it
comes from any Hugging Face cache, or the Hub once (a few MB).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

from wan_studio.catalog.formats import Found, ModelFormat, Part, with_gguf
from wan_studio.catalog.single_file import (
    DamagedFile, FileInfo, is_s2v_transformer, is_umt5, read_info, transformer_channels, vae_latent_channels,
)
from wan_studio.catalog.specs import ModelSpec

TRANSFORMER_DIRS = ("diffusion_models", "unet")
TEXT_DIRS = ("text_encoders", "clip")
VAE_DIRS = ("vae",)
WEIGHT_SUFFIXES = (".safetensors", ".gguf")
# Transformer input channels per task: Wan2.2 VAE latents (48); A14B T2V 16; I2V 16 + 4 mask + 16 image.
IN_CHANNELS = {"ti2v": 48, "t2v": 16, "i2v": 36}
TASK_WORDS = {48: "TI2V-5B", 16: "T2V (text to video)", 36: "I2V (image to video)"}
VAE_WORDS = {48: "the Wan2.2 VAE (TI2V-5B)", 16: "the Wan2.1 VAE (A14B, S2V)"}
TOKENIZER_REPO = "google/umt5-xxl"
TOKENIZER_FILES = ("spiece.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
# Higher is preferred among several files for one component: full precision, then scaled fp8, then
# plain fp8 (GGUF files are kept apart: the planner picks them by size, see ``with_files``).
DTYPE_RANK = {"bf16": 5, "fp16": 4, "fp32": 3, "fp8_scaled": 2, "fp8_e4m3fn": 1}

ConfigFn = Callable[[ModelSpec, str, FileInfo], dict[str, Any]]


class TokenizerUnavailable(RuntimeError):
    """The UMT5 tokenizer is in no local cache and the Hub cannot be reached."""


def _tokens(name: str) -> list[str]:
    return re.split(r"[^a-z0-9]+", name.lower())


def names_transformer(name: str, spec: ModelSpec, component: str) -> bool:
    """Whether a file name says it is ``component`` of ``spec`` (``wan2.2_t2v_high_noise_14B_…``)."""
    t = _tokens(name)
    if spec.task == "ti2v":
        return "ti2v" in t and "5b" in t
    if spec.task not in t or not ({"14b", "a14b"} & set(t)):
        return False
    if spec.task == "s2v":
        return True
    noise = "high" if component == "transformer" else "low"
    return any(w.startswith(noise) for w in t)


def default_configs(spec: ModelSpec, component: str, info: FileInfo) -> dict[str, Any]:
    """diffusers / transformers configs of the released models (``catalog.synthetic`` holds them)."""
    from wan_studio.catalog import single_file, synthetic

    if component in ("transformer", "transformer_2"):
        # "t2v-a14b@high": one expert of the model, held by a cluster worker, has the model's config
        return synthetic.TRANSFORMER_CONFIGS[spec.key.partition("@")[0]] | synthetic.TRANSFORMER_COMMON
    if component == "text_encoder":
        return dict(synthetic.UMT5_CONFIG)
    return single_file.wan22_vae_config() if spec.vae == "wan2.2" else {}


def hub_tokenizer(cache_dir: Path | None = None, offline: bool | None = None) -> Any:
    """The UMT5 tokenizer from any Hugging Face cache, else from the Hub (once, a few MB);
    ``TokenizerUnavailable`` says in words when neither works."""
    from huggingface_hub import constants
    from transformers import AutoTokenizer

    offline = constants.HF_HUB_OFFLINE if offline is None else offline
    try:
        return AutoTokenizer.from_pretrained(TOKENIZER_REPO, cache_dir=cache_dir, local_files_only=True)
    except (OSError, ValueError) as e:
        cached_error = e
    if not offline:
        try:
            return AutoTokenizer.from_pretrained(TOKENIZER_REPO, cache_dir=cache_dir)
        except (OSError, ValueError) as e:
            cached_error = e
    raise TokenizerUnavailable(
        f"The UMT5 tokenizer ({TOKENIZER_REPO}, a few MB) that ComfyUI's text encoder file does not carry is "
        f"not in the Hugging Face cache{' and this machine is offline' if offline else ' and the Hub could not be reached'}. "
        f"Connect once, or copy it with: hf download {TOKENIZER_REPO} {' '.join(TOKENIZER_FILES)} "
        f"({type(cached_error).__name__})") from None


def tokenizer_cached(cache_dir: Path | None = None) -> bool:
    """Whether the UMT5 tokenizer is already in the Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(TOKENIZER_REPO, "tokenizer_config.json", cache_dir=cache_dir)
    return isinstance(hit, str)


class ComfyUIFolder(ModelFormat):
    """A ComfyUI ``models`` folder (see the module docstring).

    ``configs(spec, component, info)`` gives each component's config (the released models' by
    default); ``tokenizer()`` the tokenizer (``hub_tokenizer`` by default); ``scheduler(spec)`` the
    solver (the Wan flow UniPC at the model's shift by default).
    """

    name = "ComfyUI files"

    def __init__(self, root: Path, configs: ConfigFn | None = None, tokenizer: Callable[[], Any] | None = None,
                 scheduler: Callable[[ModelSpec], Any] | None = None) -> None:
        self.root = Path(root)
        self._configs = configs or default_configs
        self._tokenizer = tokenizer
        self._scheduler = scheduler
        self._infos: dict[Path, tuple[float, int, FileInfo | DamagedFile]] = {}

    # --- scanning ---------------------------------------------------------------------------------
    def _files(self, dirs: tuple[str, ...]) -> list[Path]:
        out: list[Path] = []
        for d in dirs:
            folder = self.root / d
            if folder.is_dir():
                out += sorted(p for p in folder.rglob("*") if p.suffix.lower() in WEIGHT_SUFFIXES and p.is_file())
        return out

    def info(self, path: Path) -> FileInfo:
        """The header of ``path``, read once per version of the file; ``DamagedFile`` if unreadable."""
        st = path.stat()
        cached = self._infos.get(path)
        if cached is None or cached[:2] != (st.st_mtime, st.st_size):
            try:
                value: FileInfo | DamagedFile = read_info(path)
            except DamagedFile as e:
                value = e
            cached = (st.st_mtime, st.st_size, value)
            self._infos[path] = cached
        if isinstance(cached[2], DamagedFile):
            raise cached[2]
        return cached[2]

    def _rel(self, path: Path) -> str:
        return str(path.relative_to(self.root))

    def detect(self, spec: ModelSpec) -> Found | None:
        if spec.is_demo or not self.root.is_dir():
            return None
        parts: list[Part] = []
        missing: list[str] = []
        problems: list[str] = []
        notes: list[str] = []

        def settle(found: list[Part], issues: list[str], expected: str) -> None:
            # A bad file beside a good one for the same component does not stop the model: it is
            # named as not used; with no good file it is the reason the model cannot run.
            if found:
                parts.extend(found)
                notes.extend(f"not used: {issue}" for issue in issues)
            else:
                problems.extend(issues)
                missing.append(expected)

        experts = [c.name for c in spec.components if c.name in ("transformer", "transformer_2")]
        any_transformer = False
        for comp in experts:
            named = [p for p in self._files(TRANSFORMER_DIRS) if names_transformer(p.name, spec, comp)]
            any_transformer |= bool(named)
            issues: list[str] = []
            settle(self._check_transformers(spec, comp, named, issues), issues, self._expected_transformer(spec, comp))
        if not any_transformer:
            return None  # nothing of this model here: the other components alone say nothing
        if spec.task == "s2v":
            problems.append("speech to video is not read from ComfyUI files yet: it needs the official "
                            f"folder (python app.py --download {spec.key})")
        issues = []
        text = self._text_encoder(issues)
        settle([text] if text else [], issues,
               "text_encoders/umt5_xxl_fp16.safetensors (or umt5_xxl_fp8_e4m3fn_scaled.safetensors)")
        issues = []
        vae = self._vae(spec, issues)
        settle([vae] if vae else [], issues, f"vae/{'wan2.2_vae' if spec.vae == 'wan2.2' else 'wan_2.1_vae'}.safetensors")
        if self._tokenizer is None and not tokenizer_cached():
            notes.append(f"the tokenizer ({TOKENIZER_REPO}, a few MB) is fetched from the Hub at the first job")
        return Found(spec, self.name, self.root, tuple(parts), tuple(missing), tuple(problems), tuple(notes))

    def _expected_transformer(self, spec: ModelSpec, comp: str) -> str:
        if spec.task == "ti2v":
            return "diffusion_models/wan2.2_ti2v_5B_fp16.safetensors"
        if spec.task == "s2v":
            return "diffusion_models/wan2.2_s2v_14B_bf16.safetensors"
        noise = "high" if comp == "transformer" else "low"
        return f"diffusion_models/wan2.2_{spec.task}_{noise}_noise_14B_fp8_scaled.safetensors (or fp16, or GGUF)"

    def _check_transformers(self, spec: ModelSpec, comp: str, named: list[Path], problems: list[str]) -> list[Part]:
        """The sound files among ``named`` for ``comp``: the best full/fp8 one, then every GGUF one,
        largest (least quantised) first."""
        want = IN_CHANNELS.get(spec.task)
        best: tuple[int, Part] | None = None
        ggufs: list[tuple[int, Part]] = []
        for path in named:
            try:
                info = self.info(path)
            except DamagedFile as e:
                problems.append(str(e))
                continue
            ch = transformer_channels(info)
            if ch is None:
                problems.append(f"{path} is not a Wan transformer (no patch embedding / head in its header)")
                continue
            if spec.task == "s2v" and not is_s2v_transformer(info):
                problems.append(f"{path} is not the speech-to-video transformer (it has no audio layers)")
                continue
            if want is not None and ch[1] != want:
                problems.append(f"{path} is a {TASK_WORDS.get(ch[1], f'{ch[1]}-channel')} transformer "
                                f"({ch[1]} input channels), not one for {spec.title} ({want})")
                continue
            part = Part(comp, path, info.file_bytes, info.label)
            if info.kind == "gguf":
                ggufs.append((info.tensor_bytes, part))
            elif best is None or DTYPE_RANK.get(info.dtype, 0) > best[0]:
                best = (DTYPE_RANK.get(info.dtype, 0), part)
        ggufs.sort(key=lambda g: -g[0])
        return ([best[1]] if best else []) + [p for _, p in ggufs]

    def _text_encoder(self, problems: list[str]) -> Part | None:
        best: tuple[int, Part] | None = None
        for path in self._files(TEXT_DIRS):
            if "umt5" not in _tokens(path.name):
                continue
            if path.suffix.lower() == ".gguf":
                problems.append(f"{path} is a GGUF text encoder, which Wan Studio does not read; "
                                "use umt5_xxl_fp16 or umt5_xxl_fp8_e4m3fn_scaled.safetensors")
                continue
            try:
                info = self.info(path)
            except DamagedFile as e:
                problems.append(str(e))
                continue
            if not is_umt5(info):
                problems.append(f"{path} is not a UMT5-XXL encoder")
                continue
            rank = DTYPE_RANK.get(info.dtype, 0)
            if best is None or rank > best[0]:
                best = (rank, Part("text_encoder", path, info.file_bytes, info.label))
        return best[1] if best else None

    def _vae(self, spec: ModelSpec, problems: list[str]) -> Part | None:
        want = 48 if spec.vae == "wan2.2" else 16
        other: list[str] = []
        for path in self._files(VAE_DIRS):
            if path.suffix.lower() != ".safetensors" or "wan" not in "".join(_tokens(path.name)):
                continue
            try:
                info = self.info(path)
            except DamagedFile as e:
                problems.append(str(e))
                continue
            z = vae_latent_channels(info)
            if z == want:
                return Part("vae", path, info.file_bytes, info.label)
            if z in VAE_WORDS:
                other.append(f"{path} is {VAE_WORDS[z]}, not the one {spec.title} needs")
        problems.extend(other)  # the other generation's VAE is worth naming only when it is all there is
        return None

    # --- loading ----------------------------------------------------------------------------------
    def _file_for(self, found: Found, name: str, storage: str) -> FileInfo:
        if storage == "gguf":
            # the quantisation ``with_files`` chose for this machine (the spec carries it)
            quant = next((c.gguf_quant for c in found.spec.components if c.name == name), "")
            ggufs = [p for p in found.parts if p.component == name and p.label.startswith("GGUF")]
            part = next((p for p in ggufs if p.label == f"GGUF {quant}"), ggufs[0] if ggufs else None)
        else:
            part = found.part(name, gguf=False) or found.part(name)
        if part is None:
            raise DamagedFile(f"no {storage} file for the {name} of {found.spec.title} in {self.root}")
        return self.info(part.path)

    def load(self, found: Found, name: str, storage: str) -> Any:
        import torch

        from wan_studio.catalog import single_file
        from wan_studio.memory.apply import apply_storage

        info = self._file_for(found, name, storage)
        config = self._configs(found.spec, name, info)
        if name == "vae":
            return single_file.load_vae(info, config)
        dtype = torch.float32 if storage == "fp32" else torch.bfloat16
        if name == "text_encoder":
            return single_file.load_umt5(info, config, dtype)
        module = single_file.load_transformer(info, config, dtype)
        if info.kind != "gguf":
            apply_storage(module, storage)
        return module

    def assemble(self, found: Found, modules: dict[str, Any]) -> Any:
        from wan_studio.catalog import tiny
        from wan_studio.catalog.assembly import build_pipeline

        tokenizer = self._tokenizer() if self._tokenizer is not None else hub_tokenizer()
        scheduler = self._scheduler(found.spec) if self._scheduler else tiny.build_scheduler(found.spec.shift)
        return build_pipeline(found.spec, modules, tokenizer, scheduler)

    def describe(self, found: Found) -> str:
        return ("ready from " if found.usable else "") + found.describe()

    def share_key(self, found: Found, name: str) -> str | None:
        part = found.part(name)
        # The same file serves every model that uses it (one UMT5 for all, one Wan2.1 VAE for A14B).
        return f"file:{part.path}" if part is not None and name in ("text_encoder", "vae") else None

    def with_files(self, spec: ModelSpec, found: Found, ram_bytes: int | None = None) -> ModelSpec:
        """``spec`` with its GGUF files' sizes. With several quantisations of an expert, the least
        quantised whose experts fit ``ram_bytes`` beside the other components (the smallest when
        none does; the largest when no budget is given)."""
        experts = [c for c in spec.components if c.name in ("transformer", "transformer_2")]
        others = sum(c.bytes for c in spec.components if c not in experts)
        share = None if ram_bytes is None else (ram_bytes - others) / max(len(experts), 1)
        sizes: dict[str, tuple[int, str, bool]] = {}
        for c in experts:
            options = [self.info(p.path) for p in found.parts if p.component == c.name and p.label.startswith("GGUF")]
            if not options:
                continue
            fitting = [i for i in options if share is None or i.tensor_bytes <= share]
            info = fitting[0] if fitting else options[-1]
            sizes[c.name] = (info.tensor_bytes, info.quant or "", found.part(c.name, gguf=False) is None)
        return with_gguf(spec, sizes) if sizes else spec
