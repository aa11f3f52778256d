"""LoRA files from the ``loras/`` folder, applied for one job through diffusers' LoRA loader.

Each LoRA has a weight; on the two-expert A14B models it is loaded into both experts with a weight
per expert (the high-noise expert shapes motion and layout, the low-noise one detail). After the
job the adapters are unloaded, so the cached pipeline is back to its own weights.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wan_studio.catalog.specs import ModelSpec
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
    """LoRA files available in ``folder`` (``*.safetensors``), sorted."""
    folder = Path(folder)
    return sorted(p.name for p in folder.glob("*.safetensors")) if folder.is_dir() else []


def resolve(folder: Path, choice: LoraChoice) -> Path:
    """The file of ``choice`` inside ``folder``; a name that leaves the folder is refused."""
    folder = Path(folder).resolve()
    path = (folder / choice.file).resolve()
    if path.parent != folder or path.suffix != ".safetensors":
        raise RequestError(f"LoRA {choice.file!r} must be a .safetensors file directly inside {folder}")
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


@contextmanager
def loras_applied(pipe: Any, spec: ModelSpec, choices: list[LoraChoice], folder: Path) -> Iterator[list[dict[str, Any]]]:
    """Load ``choices`` into the pipeline's experts for the duration of the block.

    Yields what was applied (for the sidecar). A LoRA made for another model raises
    ``RequestError`` naming it, and leaves the pipeline unchanged.
    """
    if not choices:
        yield []
        return
    check_choices(choices, folder)
    experts = [m for m in (getattr(pipe, "transformer", None), getattr(pipe, "transformer_2", None)) if m is not None]
    names: list[str] = []
    try:
        for i, choice in enumerate(choices):
            name = _adapter_name(i, choice.file)
            path = str(resolve(folder, choice))
            for target, expert in enumerate(experts):
                try:
                    pipe.load_lora_weights(path, adapter_name=name, load_into_transformer_2=target == 1)
                except (ValueError, RuntimeError, KeyError) as e:
                    raise RequestError(f"LoRA {choice.file} does not fit {spec.title}: {str(e).splitlines()[0][:300]}") from None
                if name not in getattr(expert, "peft_config", {}):
                    raise RequestError(f"LoRA {choice.file} does not fit {spec.title}: none of its layers match this model")
            names.append(name)
        for target, expert in enumerate(experts):
            weights = [c.weight if target == 0 or c.weight_2 is None else c.weight_2 for c in choices]
            expert.set_adapters(names, weights=weights)
        yield [{"file": c.file, "weight": c.weight, **({"weight_2": c.weight_2 if c.weight_2 is not None else c.weight}
                                                        if len(experts) > 1 else {})} for c in choices]
    finally:
        if any(getattr(e, "peft_config", None) for e in experts):
            pipe.unload_lora_weights()
