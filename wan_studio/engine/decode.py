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

import time
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



def decode_pieces(vae: Any, latent_shape: tuple[int, ...]) -> int:
    """How many times a Wan VAE's decoder runs for latents of ``latent_shape`` (B, C, T, H, W):
    once per latent frame, per tile when tiling applies, per sample (diffusers' ``AutoencoderKLWan``
    ``_decode`` and ``tiled_decode`` loops; a test counts the calls)."""
    batch, _, frames, height, width = (int(x) for x in latent_shape)
    tiles = 1
    ratio = getattr(vae, "spatial_compression_ratio", None)
    if getattr(vae, "use_tiling", False) and ratio:
        if width > vae.tile_sample_min_width // ratio or height > vae.tile_sample_min_height // ratio:
            tiles = (len(range(0, height, vae.tile_sample_stride_height // ratio))
                     * len(range(0, width, vae.tile_sample_stride_width // ratio)))
    return max(batch, 1) * frames * tiles


class DecodeProgress:
    """Reports the VAE decode as it goes, so the last phase of a job has its own share of the bar
    and an ETA (the decoder runs piece by piece: a 1080p 10 s clip takes minutes on a 24 GB card).

    ``expect(pieces)`` arms it (after the last denoising step); from then each piece the decoder
    makes counts, and ``on_piece(done, total, seconds_so_far)`` is called for the first piece, at
    most every ``every_s`` seconds after it, and for the last one.
    """

    def __init__(self, on_piece: Any, every_s: float = 0.5) -> None:
        self.on_piece = on_piece
        self.every_s = every_s
        self.total: int | None = None
        self.done = 0
        self.t_start = 0.0
        self.t_reported = 0.0

    def expect(self, pieces: int) -> None:
        """Count the next ``pieces`` decoder runs as the decode of this job, from now."""
        self.total, self.done = max(pieces, 1), 0
        self.t_start = self.t_reported = time.perf_counter()

    def _after_piece(self, _module: torch.nn.Module, _inputs: Any, _output: Any) -> None:
        if self.total is None or self.done >= self.total:
            return
        self.done += 1
        now = time.perf_counter()
        if self.done in (1, self.total) or now - self.t_reported >= self.every_s:
            self.t_reported = now
            self.on_piece(self.done, self.total, now - self.t_start)

    @contextmanager
    def watch(self, vae: Any) -> Iterator[None]:
        """While the block runs, count the pieces ``vae.decoder`` makes once ``expect`` was called."""
        decoder = getattr(vae, "decoder", None)
        if not isinstance(decoder, torch.nn.Module):
            yield
            return
        handle = decoder.register_forward_hook(self._after_piece)
        try:
            yield
        finally:
            handle.remove()
