"""LoRA files from the ``loras/`` folder, applied for one job through diffusers' LoRA loader.

Each LoRA has a weight; on the two-expert A14B models it has a weight per expert (the high-noise
expert shapes motion and layout, the low-noise one detail) and is loaded only into the experts whose
weight is not 0, so a file made for one expert (the distill LoRAs come as a high-noise and a
low-noise file) goes into that expert alone. Files load in the layouts they are published in
(``wan_studio.engine.lora_keys``). After the job the adapters are unloaded, so the cached pipeline is
back to its own weights.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wan_studio.catalog.specs import ModelSpec
from wan_studio.engine.lora_keys import LoraFormatError, read_for_diffusers
from wan_studio.engine.request import RequestError

MAX_LORAS = 8


@dataclass(frozen=True)
class LoraChoice:
    """One LoRA for a job: a file name in the loras folder and its strength.

    ``weight_2`` is the strength on the low-noise expert of A14B models (``None``: same as ``weight``).
    """

    file: str
    weight: float = 1.0
    weight_2: float | None = None

    @classmethod
    def parse(cls, data: Any) -> LoraChoice:
        """From a dict (``{"file": ..., "weight": ...}``) or a ``file:weight[:weight_2]`` string."""
        try:
            if isinstance(data, str):
                name, *weights = data.split(":")
                return cls(name, *(float(w) for w in weights))
            return cls(str(data["file"]), float(data.get("weight", 1.0)),
                       None if data.get("weight_2") is None else float(data["weight_2"]))
        except (KeyError, TypeError, ValueError):
            raise RequestError(f"a LoRA is written file.safetensors:weight or {{'file': ..., 'weight': ...}}, got {data!r}") from None


def list_loras(folder: Path) -> list[str]:
    """LoRA files available in ``folder`` (``*.safetensors``, also in subfolders as a Hub download
    lays them out), as paths relative to it, sorted."""
    folder = Path(folder)
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.safetensors")) if folder.is_dir() else []


def resolve(folder: Path, choice: LoraChoice) -> Path:
    """The file of ``choice`` inside ``folder``; a name that leaves the folder is refused."""
    folder = Path(folder).resolve()
    path = (folder / choice.file).resolve()
    if folder not in path.parents or path.suffix != ".safetensors":
        raise RequestError(f"LoRA {choice.file!r} must be a .safetensors file inside {folder}")
    if not path.is_file():
        raise RequestError(f"LoRA {choice.file!r} is not in {folder}; available: {', '.join(list_loras(folder)) or 'none'}")
    return path


def check_choices(choices: list[LoraChoice], folder: Path) -> None:
    """Validate a job's LoRA list before it is queued."""
    if len(choices) > MAX_LORAS:
        raise RequestError(f"at most {MAX_LORAS} LoRAs per job, got {len(choices)}")
    for c in choices:
        resolve(folder, c)
        for w in (c.weight, c.weight_2):
            if w is not None and not -4.0 <= w <= 4.0:
                raise RequestError(f"LoRA weight {w} for {c.file} is outside -4…4")


def _adapter_name(index: int, file: str) -> str:
    return f"l{index}_" + re.sub(r"\W", "_", Path(file).stem)[:40]


def _weights(choice: LoraChoice, experts: int) -> list[float]:
    """The strength of ``choice`` on each expert (high noise first)."""
    return [choice.weight] if experts == 1 else [choice.weight, choice.weight if choice.weight_2 is None else choice.weight_2]


def _load(pipe: Any, spec: ModelSpec, choice: LoraChoice, state: dict[str, Any], name: str, target: int) -> None:
    """Load one file's tensors into expert ``target``; RequestError naming the file when it does not fit."""
    expert = pipe.transformer if target == 0 else pipe.transformer_2
    try:
        # diffusers' loader converts the published layouts; a copy because it consumes the dict.
        pipe.load_lora_weights(dict(state), adapter_name=name, load_into_transformer_2=target == 1)
    except (ValueError, RuntimeError, KeyError, IndexError) as e:
        raise RequestError(f"LoRA {choice.file} does not fit {spec.title}: {str(e).splitlines()[0][:300]}") from None
    if name not in getattr(expert, "peft_config", {}):
        raise RequestError(f"LoRA {choice.file} does not fit {spec.title}: none of its layers match this model")


@contextmanager
def loras_applied(pipe: Any, spec: ModelSpec, choices: list[LoraChoice], folder: Path) -> Iterator[list[dict[str, Any]]]:
    """Load ``choices`` into the pipeline's experts for the duration of the block.

    Yields what was applied (for the sidecar: file, weights, key layout, experts). A LoRA made for
    another model raises ``RequestError`` naming it, and leaves the pipeline unchanged. Inside the
    block, ``set_lora_scale(pipe, 0.0)`` switches every LoRA off and ``set_lora_scale(pipe, 1.0)``
    back to its strengths (the motion phase of a distilled job runs on the base weights).
    """
    if not choices:
        yield []
        return
    check_choices(choices, folder)
    experts = [m for m in (getattr(pipe, "transformer", None), getattr(pipe, "transformer_2", None)) if m is not None]
    names: list[str] = []
    applied: list[dict[str, Any]] = []
    try:
        for i, choice in enumerate(choices):
            name = _adapter_name(i, choice.file)
            try:
                state, layout = read_for_diffusers(resolve(folder, choice))
            except LoraFormatError as e:
                raise RequestError(f"LoRA {choice.file} does not fit {spec.title}: {e}") from None
            weights = _weights(choice, len(experts))
            into = [target for target, w in enumerate(weights) if w != 0]
            for target in into:
                _load(pipe, spec, choice, state, name, target)
            names.append(name)
            applied.append({"file": choice.file, "weight": choice.weight, "layout": layout,
                            **({"weight_2": weights[1], "experts": [("high", "low")[t] for t in into]}
                               if len(experts) > 1 else {})})
        _set_weights(pipe, experts, names, choices, 1.0)
        pipe.wan_lora_names = (names, choices)
        yield applied
    finally:
        pipe.wan_lora_names = None
        if any(getattr(e, "peft_config", None) for e in experts):
            pipe.unload_lora_weights()


def _set_weights(pipe: Any, experts: list[Any], names: list[str], choices: list[LoraChoice], scale: float) -> None:
    for target, expert in enumerate(experts):
        mine = [(n, _weights(c, len(experts))[target]) for n, c in zip(names, choices)]
        mine = [(n, w * scale) for n, w in mine if n in getattr(expert, "peft_config", {})]
        if mine:
            expert.set_adapters([n for n, _ in mine], weights=[w for _, w in mine])


def set_lora_scale(pipe: Any, scale: float) -> bool:
    """Scale every LoRA applied by ``loras_applied`` to ``scale`` × its strength (0: base weights).

    Returns False when no LoRA is applied. Scaling the adapters keeps them loaded, so switching
    between steps costs nothing but the multiply.
    """
    loaded = getattr(pipe, "wan_lora_names", None)
    if not loaded:
        return False
    experts = [m for m in (getattr(pipe, "transformer", None), getattr(pipe, "transformer_2", None)) if m is not None]
    _set_weights(pipe, experts, loaded[0], loaded[1], scale)
    return True
