"""VAE decode that keeps the decoded video off the GPU.

The Wan VAEs decode causally, one latent frame (four video frames; the first alone) at a time per
tile, with a feature cache; diffusers keeps every decoded piece on the GPU, blends the tiles there
and only then hands the whole fp32 video back. At 1920×1088×241 that video is 5.6 GiB and the
tiles, their blended copy and the result hold it about 3.6 times over: the decode, not the
denoising, ran a 24 GiB card out of memory. Here each piece the decoder produces moves to host
memory as it comes; blending and assembly then run on the host, so the GPU holds one piece and the
feature cache whatever the length and size of the video. The frames are the same numbers: the
same operations run in the same order, only the device of the output pieces differs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


def _piece_to_host(_module: torch.nn.Module, _inputs: Any, output: Any) -> Any:
    if isinstance(output, torch.Tensor) and output.device.type != "cpu":
        return output.to("cpu")
    return None  # already on the host: keep the output as it is


@contextmanager
def decoded_on_host(vae: Any) -> Iterator[bool]:
    """While the block runs, every piece ``vae.decoder`` makes goes straight to host memory (see
    the module docstring); yields whether the VAE has such a decoder (Wan VAEs do)."""
    decoder = getattr(vae, "decoder", None)
    if not isinstance(decoder, torch.nn.Module):
        yield False
        return
    handle = decoder.register_forward_hook(_piece_to_host)
    try:
        yield True
    finally:
        handle.remove()

