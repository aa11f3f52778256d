"""A sample value for every field of the request table, shared by the surface tests.

``SAMPLES[name]`` sets ``name`` to a value that differs from its default, with whatever else it
needs to be valid on the demo models (a framing needs an image, motion steps a fast recipe). A
field added to ``engine/request.py`` needs its sample here: ``test_every_field_has_a_sample``
fails until it has one, and then every surface test carries it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from wan_studio.engine.request import FIELDS


def files(folder: Path) -> dict[str, str]:
    """A start image, a portrait, a second of speech and a pose video, made in code."""
    from wan_studio.engine.s2v.audio_io import write_wav
    from wan_studio.engine.video_io import write_mp4

    image, portrait = folder / "start.png", folder / "portrait.png"
    x = np.linspace(0, 255, 300, dtype=np.uint8)
    Image.fromarray(np.stack([np.tile(x, (200, 1)), np.full((200, 300), 80, np.uint8),
                              np.tile(x[::-1], (200, 1))], -1)).save(image)
    Image.fromarray(np.full((256, 192, 3), 150, np.uint8)).save(portrait)
    t = np.arange(16000) / 16000
    speech = write_wav(folder / "speech.wav", (0.3 * np.sin(2 * np.pi * 160 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)))
                       .astype(np.float32))
    pose = write_mp4(folder / "pose.mp4", np.random.default_rng(0).integers(0, 255, (8, 64, 64, 3), np.uint8), 8)
    return {"image": str(image), "portrait": str(portrait), "audio": str(speech), "pose_video": str(pose)}


def samples(f: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Per field: the fields that set it (to a value other than its default) on a demo model."""
    s2v = {"model": "demo-s2v", "image": f["portrait"], "audio": f["audio"]}
    return {
        "prompt": {"prompt": "a kite over a beach"},
        "model": {"model": "ti2v-5b", "width": 1280, "height": 704},
        "image": {"image": f["image"]},
        "negative_prompt": {"negative_prompt": "blurry, text"},
        "width": {"width": 320, "height": 192},
        "height": {"width": 192, "height": 320},
        "num_frames": {"num_frames": 21},
        "fps": {"fps": 12},
        "steps": {"steps": 3},
        "guidance": {"guidance": 3.5},
        "guidance_2": {"guidance_2": 2.5},
        "shift": {"shift": 7.0},
        "seed": {"seed": 1234},
        "preset": {"preset": "fast-demo-4step"},
        "audio": s2v,
        "pose_video": {**s2v, "pose_video": f["pose_video"]},
        "last_image": {"model": "i2v-a14b", "image": f["image"], "last_image": f["image"]},
        "framing": {"image": f["image"], "framing": "crop"},
        "total_frames": {"total_frames": 33, "num_frames": 17},
        "window_overlap": {"total_frames": 33, "num_frames": 17, "window_overlap": 3},
        "window_prompts": {"total_frames": 33, "num_frames": 17, "window_prompts": ["a boat", "a swan"]},
        "loras": {"loras": [{"file": "style.safetensors", "weight": 0.5}]},
        "step_cache": {"step_cache": "first_block"},
        "cache_threshold": {"step_cache": "first_block", "cache_threshold": 0.2},
        "overrides": {"overrides": {"offload": "cpu"}},
        "fast": {"fast": "demo-distilled", "steps": 4},
        "motion_steps": {"fast": "demo-distilled", "steps": 4, "motion_steps": 1},
    }


def fields_of(surface: str) -> list[str]:
    """The table's fields on ``surface`` (parametrize ids)."""
    return [name for name, f in FIELDS.items() if surface in f.surfaces]
