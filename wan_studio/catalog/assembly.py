"""Assemble a diffusers Wan pipeline of a model around already-built components."""

from __future__ import annotations

from typing import Any

from wan_studio.catalog.specs import ModelSpec


def build_pipeline(spec: ModelSpec, modules: dict[str, Any], tokenizer: Any, scheduler: Any) -> Any:
    """A diffusers Wan pipeline of ``spec``'s class around ``modules``."""
    import diffusers

    if not spec.diffusers_layout:
        raise NotImplementedError(f"{spec.title} runs through its own pipeline, not a diffusers one")
    cls = getattr(diffusers, spec.pipeline)
    # Either expert may be missing: a cluster worker holding one expert of an A14B model builds its
    # pipeline around that one alone.
    kwargs: dict[str, Any] = dict(tokenizer=tokenizer, scheduler=scheduler, text_encoder=modules["text_encoder"],
                                  vae=modules["vae"], transformer=modules.get("transformer"),
                                  transformer_2=modules.get("transformer_2"), boundary_ratio=spec.boundary,
                                  expand_timesteps=spec.vae == "wan2.2")
    if spec.pipeline == "WanImageToVideoPipeline":
        kwargs.update(image_encoder=None, image_processor=None)
    pipe = cls(**kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe
