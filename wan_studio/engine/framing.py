"""How a start image becomes the first frame: the official Wan2.2 framing, or a crop to the chosen size.

The chosen width × height is an area budget when framing follows the official code:

- I2V-A14B (``wan/image2video.py``): the frame takes the image's aspect within the chosen area,
  each side rounded down to the 16 pixels the latents need (VAE stride 8 × patch 2), and the
  whole image is resized to it (bicubic, nothing cut off; the aspect may stretch by < 1 latent).
- TI2V-5B (``wan/textimage2video.py`` ``best_output_size``): of the two sizes in 32-pixel steps
  found by fitting the width first or the height first within the area, the one nearer the
  image's aspect; the image is scaled to cover it (Lanczos) and centre-cropped by at most a few
  pixels.

``crop`` keeps the chosen size exactly and centre-crops the image to its aspect (what Wan Studio
did before). Text-to-video and speech-to-video are not framed here (S2V sizes itself from the
portrait in ``engine/s2v/pipeline.py``).
"""

from __future__ import annotations

import math
import os
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

Framing = Literal["official", "crop"]
FRAMINGS: tuple[str, ...] = ("official", "crop")
FRAMING_LABELS = {"official": "like the official code (follows the image)", "crop": "crop to the chosen size"}


def i2v_area_size(image_w: int, image_h: int, area: int, stride: int = 8, patch: int = 2) -> tuple[int, int]:
    """I2V-A14B's frame (width, height) in pixels for an image within ``area`` pixels."""
    aspect = image_h / image_w
    lat_h = round(math.sqrt(area * aspect) // stride // patch * patch)
    lat_w = round(math.sqrt(area / aspect) // stride // patch * patch)
    return lat_w * stride, lat_h * stride


def best_output_size(image_w: int, image_h: int, step_w: int, step_h: int, area: int) -> tuple[int, int]:
    """TI2V-5B's frame (width, height): within ``area``, in steps of ``step_w``/``step_h`` pixels,
    fitting the width first or the height first, whichever stays nearer the image's aspect."""
    ratio = image_w / image_h
    w_float = math.sqrt(area * ratio)
    h_float = area / w_float
    # At least one step each way: the official function divides by zero for a strip of an image.
    w1 = max(step_w, int(w_float // step_w * step_w))
    h1 = max(step_h, int(area / w1 // step_h * step_h))
    h2 = max(step_h, int(h_float // step_h * step_h))
    w2 = max(step_w, int(area / h2 // step_w * step_w))
    off1 = max(ratio / (w1 / h1), (w1 / h1) / ratio)
    off2 = max(ratio / (w2 / h2), (w2 / h2) / ratio)
    return (w1, h1) if off1 < off2 else (w2, h2)


def s2v_area_size(image_w: int, image_h: int, area: int, multiple: int = 64) -> tuple[int, int]:
    """S2V-14B's frame (width, height) for a portrait within ``area`` pixels (``wan/speech2video.py``).

    The largest of 100 evenly spaced scales, from "fills the area" down to "fits even after
    padding each side up to a multiple of ``multiple``", whose padded size fits; an image already
    inside the area is only padded (scales 1 down to 0.1).
    """
    if image_w * image_h <= area:
        low, high = 0.1, 1.0
    else:
        d = multiple - 1
        b, a, c = d * (image_w + image_h), image_w * image_h, d * d - area
        low, high = (-b + math.sqrt(b * b - 2 * a * c)) / (2 * a), math.sqrt(area / (image_w * image_h))
    for i in range(100):
        scale = high - (high - low) * i / 100
        w = math.ceil(int(image_w * scale) / multiple) * multiple
        h = math.ceil(int(image_h * scale) / multiple) * multiple
        if w * h <= area:
            return w, h
    # Nothing fitted: the aspect's size in whole multiples, never above the image's own size.
    aspect = image_w / image_h
    w, h = int(math.sqrt(area * aspect) // multiple * multiple), int(math.sqrt(area / aspect) // multiple * multiple)
    if w >= image_w or h >= image_h:
        w, h = image_w // multiple * multiple, image_h // multiple * multiple
    return w, h


def frame_size(task: str, size_multiple: int, chosen: tuple[int, int], image_size: tuple[int, int] | None,
               framing: str | None) -> tuple[int, int]:
    """The (width, height) in pixels a job makes: ``chosen`` unless an image is framed officially."""
    if image_size is None or (framing or "official") == "crop":
        return chosen
    area = chosen[0] * chosen[1]
    if task == "i2v":
        return i2v_area_size(*image_size, area)
    if task == "ti2v":
        return best_output_size(*image_size, size_multiple, size_multiple, area)
    return chosen


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(width, height) of an image file from its header, in pixels."""
    with Image.open(path) as im:
        return im.size


def frame_of(request: Any) -> tuple[int, int]:
    """The (width, height) in pixels a resolved request makes, reading its start image's header."""
    from wan_studio.catalog.specs import get_spec

    spec = get_spec(request.model)
    image = image_size(request.image) if request.image is not None and spec.task in ("i2v", "ti2v") else None
    return frame_size(spec.task, spec.size_multiple, (request.width, request.height), image, request.framing)


def load_framed(path: str | os.PathLike[str], task: str, size: tuple[int, int], framing: str | None) -> Image.Image:
    """Open an image file and ``fit_image`` it."""
    with Image.open(path) as im:
        return fit_image(im, task, size, framing)


def fit_image(image: Image.Image, task: str, size: tuple[int, int], framing: str | None) -> Image.Image:
    """``image`` as RGB at ``size`` (width, height), resized the way ``framing`` and the model's
    official code do it."""
    image = image.convert("RGB")
    if image.size == size:
        return image
    framing = framing or "official"
    if framing == "official" and task == "i2v":
        return _resize_bicubic(image, size)
    if framing == "official" and task == "ti2v":
        return _cover_and_crop(image, size, Image.Resampling.LANCZOS)
    return crop_to_size(image, size)


def _resize_bicubic(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    # The official code resizes the normalised tensor with torch's bicubic (no antialiasing), so
    # this does too; the result is rounded back to 8 bits for the pipeline's image input.
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    y = torch.nn.functional.interpolate(x, size=(size[1], size[0]), mode="bicubic")
    pixels = (y[0].permute(1, 2, 0).clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()
    return Image.fromarray(pixels)


def _cover_and_crop(image: Image.Image, size: tuple[int, int], resample: Image.Resampling) -> Image.Image:
    """Scale to cover ``size`` and centre-crop the overflow."""
    w, h = size
    scale = max(w / image.width, h / image.height)
    image = image.resize((round(image.width * scale), round(image.height * scale)), resample)
    left, top = (image.width - w) // 2, (image.height - h) // 2
    return image.crop((left, top, left + w, top + h))


def crop_to_size(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Centre-crop to the aspect of ``size`` and resize to it (Lanczos)."""
    width, height = size
    target = width / height
    if image.width / image.height > target:
        crop_w = round(image.height * target)
        left = (image.width - crop_w) // 2
        image = image.crop((left, 0, left + crop_w, image.height))
    else:
        crop_h = round(image.width / target)
        top = (image.height - crop_h) // 2
        image = image.crop((0, top, image.width, top + crop_h))
    return image.resize((width, height), Image.Resampling.LANCZOS)
