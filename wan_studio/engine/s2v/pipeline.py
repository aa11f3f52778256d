"""Speech-to-video pipeline: portrait + speech (+ pose video, + prompt) -> talking video.

The video is made in chunks of ``chunk_frames`` frames (80 at 16 fps = 5 s) until the speech is
covered. Each chunk after the first sees the last 73 generated frames as motion context, so
chunks continue each other; the first chunk starts from the portrait alone and drops its first
3 frames (they are still settling on the portrait), as the released model does.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch
from diffusers import AutoencoderKLWan, DiffusionPipeline, UniPCMultistepScheduler
from diffusers.pipelines.wan.pipeline_wan import prompt_clean
from PIL import Image
from transformers import PreTrainedTokenizerBase, UMT5EncoderModel, Wav2Vec2FeatureExtractor, Wav2Vec2Model

from wan_studio.engine.framing import s2v_area_size
from wan_studio.engine.noise import NoiseSource, draw_noise
from wan_studio.engine.s2v.audio_features import speech_features
from wan_studio.engine.s2v.transformer import S2VTransformer
from wan_studio.engine.sampler import official_scheduler

DROPPED_FIRST_FRAMES = 3
StepCallback = Callable[[int, int, int, int], None]


@dataclass
class S2VOutput:
    """Frames (T, H, W, 3) float in [0, 1]; ``chunks`` generated; size in pixels."""

    frames: np.ndarray
    chunks: int
    width: int
    height: int
    timesteps: list[int] = field(default_factory=list)  # of one chunk; every chunk runs the same
    noise: NoiseSource | None = None  # of the first chunk; chunk r is seeded with seed + r
    # Seconds of the work before the first step (device synced): speech features, the two prompts,
    # the reference image's VAE encode (each onloading its model where the plan offloads it).
    prepare: dict[str, float] = field(default_factory=dict)


@contextmanager
def _timed(into: dict[str, float], key: str) -> Iterator[None]:
    """Add the block's seconds to ``into[key]``, the GPU's queued work included."""
    t = time.perf_counter()
    try:
        yield
    finally:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        into[key] = into.get(key, 0.0) + time.perf_counter() - t


def fit_size(width: int, height: int, max_area: int, multiple: int = 64) -> tuple[int, int]:
    """The official S2V frame (width, height) for a ``width``×``height`` portrait within ``max_area``
    pixels, both multiples of ``multiple`` (``engine.framing.s2v_area_size``). The motion packing
    merges 8×8 latents, hence 64-pixel steps."""
    return s2v_area_size(width, height, max_area, multiple)


def chunks_for(frames: int, chunk_frames: int) -> int:
    """Chunks needed for ``frames`` output frames (the first chunk yields 3 fewer)."""
    return max(1, math.ceil((frames + DROPPED_FIRST_FRAMES) / chunk_frames))


def _crop_resize(image: Image.Image, width: int, height: int) -> Image.Image:
    """Scale to cover ``width``×``height`` and centre-crop (the portrait keeps its proportions)."""
    image = image.convert("RGB")
    scale = max(width / image.width, height / image.height)
    w, h = max(width, round(image.width * scale)), max(height, round(image.height * scale))
    image = image.resize((w, h), Image.Resampling.BICUBIC)
    left, top = (w - width) // 2, (h - height) // 2
    return image.crop((left, top, left + width, top + height))


def _to_pixels(frames: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (1, 3, T, H, W) in [-1, 1]."""
    return torch.from_numpy(np.array(frames)).float().div(127.5).sub(1.0).permute(3, 0, 1, 2).unsqueeze(0)


class S2VPipeline(DiffusionPipeline):
    """Components: UMT5 text encoder, Wan2.1 VAE, ``S2VTransformer``, UniPC flow scheduler and a
    wav2vec2 audio encoder. Built by ``checkpoint.load_s2v_pipeline`` or ``tiny.build_s2v_pipeline``."""

    model_cpu_offload_seq = "text_encoder->audio_encoder->transformer->vae"

    def __init__(self, tokenizer: PreTrainedTokenizerBase, text_encoder: UMT5EncoderModel, vae: AutoencoderKLWan,
                 transformer: S2VTransformer, scheduler: UniPCMultistepScheduler, audio_encoder: Wav2Vec2Model,
                 feature_extractor: Wav2Vec2FeatureExtractor) -> None:
        super().__init__()
        self.register_modules(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                              scheduler=scheduler, audio_encoder=audio_encoder, feature_extractor=feature_extractor)

    # -- encoders -----------------------------------------------------------------------------
    @torch.no_grad()
    def encode_text(self, prompt: str, device: torch.device) -> torch.Tensor:
        """UMT5 embedding (1, tokens, text_dim) of ``prompt``, cut to its real length.

        The prompt is cleaned first as the official tokenizer cleans it (``clean='whitespace'``:
        ftfy, HTML entities unescaped twice, runs of whitespace made one space), which is what
        diffusers' Wan pipelines do too.
        """
        max_len = self.transformer.config.text_len
        ids = self.tokenizer([prompt_clean(prompt)], padding="max_length", max_length=max_len, truncation=True,
                             add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        mask = ids.attention_mask.to(device)
        out = self.text_encoder(ids.input_ids.to(device), attention_mask=mask).last_hidden_state
        return out[:, : int(mask.sum())].to(self.transformer.dtype)

    def _latent_norm(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.vae.config
        mean = torch.tensor(cfg.latents_mean, device=device).view(1, -1, 1, 1, 1)
        std = torch.tensor(cfg.latents_std, device=device).view(1, -1, 1, 1, 1)
        return mean, std

    @torch.no_grad()
    def encode_video(self, pixels: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Normalised latents (mode of the posterior) of pixels (1, 3, T, H, W) in [-1, 1]."""
        mean, std = self._latent_norm(device)
        z = self.vae.encode(pixels.to(device=device, dtype=self.vae.dtype)).latent_dist.mode()
        return ((z.float() - mean) / std).to(self.transformer.dtype)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Pixels (1, 3, T, H, W) in [-1, 1] of normalised latents."""
        mean, std = self._latent_norm(device)
        z = latents.float() * std + mean
        return self.vae.decode(z.to(self.vae.dtype), return_dict=False)[0].float().clamp(-1, 1)

    def _pose_latents(self, pose: np.ndarray | None, chunk: int, chunk_frames: int, width: int, height: int,
                      device: torch.device) -> torch.Tensor:
        """Pose latents of one chunk; zeros (the trained "no pose" input) without a pose video."""
        lat_h, lat_w = height // 8, width // 8
        frames = chunk_frames // 4
        if pose is None:
            return torch.zeros(1, self.vae.config.z_dim, frames, lat_h, lat_w, device=device,
                               dtype=self.transformer.dtype)
        part = pose[chunk * chunk_frames:(chunk + 1) * chunk_frames]
        pixels = np.stack([np.asarray(_crop_resize(Image.fromarray(f), width, height)) for f in part]) \
            if len(part) else np.zeros((0, height, width, 3), np.uint8)
        x = _to_pixels(pixels) if len(part) else torch.empty(1, 3, 0, height, width)
        # Past the end of the pose video the trained filler is black (-1).
        pad = -torch.ones(1, 3, chunk_frames - x.shape[2], height, width)
        x = torch.cat([x, pad], dim=2)
        x = torch.cat([x[:, :, :1], x], dim=2)  # a leading frame makes 4k+1 frames for the VAE
        return self.encode_video(x, device)[:, :, 1:]

    # -- sampling -----------------------------------------------------------------------------
    def _denoise_chunk(self, shape: tuple[int, ...], seed: int, steps: int, guidance: float,
                       cond: dict[str, Any], uncond: dict[str, Any], device: torch.device,
                       on_step: Callable[[int], None]) -> tuple[torch.Tensor, NoiseSource]:
        """Run the sampler for one chunk from seeded noise; returns normalised latents.

        As in the official code the noise is drawn in the weights' dtype on the GPU (bf16 for the
        released model) and the latents stay in that dtype between steps.
        """
        dtype = self.transformer.dtype
        latents, source = draw_noise(shape, seed, device, dtype if dtype.itemsize >= 2 else torch.bfloat16)
        self.scheduler.set_timesteps(steps, device=device)
        for i, t in enumerate(self.scheduler.timesteps):
            x = latents.to(self.transformer.dtype)
            ts = t.reshape(1).to(device)
            pred = self.transformer(x, ts, **cond)
            if guidance > 1.0:
                pred_u = self.transformer(x, ts, **uncond)
                pred = pred_u + guidance * (pred - pred_u)
            latents = self.scheduler.step(pred, t, latents, return_dict=False)[0]
            on_step(i + 1)
        return latents, source

    @torch.no_grad()
    def __call__(
        self,
        image: Image.Image,
        audio: np.ndarray,
        prompt: str = "",
        negative_prompt: str = "",
        pose_video: np.ndarray | None = None,
        max_area: int = 1024 * 704,
        fps: int = 16,
        chunk_frames: int = 80,
        max_chunks: int | None = None,
        num_inference_steps: int = 40,
        guidance_scale: float = 4.5,
        shift: float = 3.0,
        seed: int = 0,
        callback: StepCallback | None = None,
        sigmas: list[float] | None = None,
        on_decode: Callable[[int, tuple[int, ...]], None] | None = None,
    ) -> S2VOutput:
        """Make a talking video of ``image`` speaking ``audio`` (16 kHz mono float32).

        The output has one frame per 1/``fps`` s of speech (at most ``max_chunks`` chunks' worth);
        ``pose_video`` is uint8 (T, H, W, 3) at ``fps``. ``callback(chunk, chunks, step, steps)``
        runs after every step; raising from it stops the job before anything is decoded.
        The sampler is the official one at ``shift`` (``engine.sampler``), or runs ``sigmas`` as given.
        ``on_decode(chunk, latent_shape)`` runs just before each chunk's latents are decoded.
        """
        if chunk_frames % 4 or chunk_frames < 8:
            raise ValueError(f"chunk_frames must be a multiple of 4 and at least 8, got {chunk_frames}")
        device = self._execution_device
        self.scheduler = official_scheduler(self.scheduler, shift, sigmas)
        width, height = fit_size(image.width, image.height, max_area)
        wanted = math.ceil(len(audio) / 16000 * fps - 1e-9)
        chunks = chunks_for(wanted, chunk_frames)
        if max_chunks is not None:
            chunks = max(1, min(chunks, max_chunks))
        total = chunks * chunk_frames
        prepare: dict[str, float] = {}
        with _timed(prepare, "speech_s"):
            audio_feats = speech_features(self.audio_encoder, self.feature_extractor, audio, fps, total, device)
        with _timed(prepare, "text_s"):
            ctx = self.encode_text(prompt, device)
            ctx_neg = self.encode_text(negative_prompt, device)
        with _timed(prepare, "reference_s"):
            portrait = np.asarray(_crop_resize(image, width, height))
            ref_latents = self.encode_video(_to_pixels(portrait[None]), device)
        motion_frames = self.transformer.config.motion_frames
        # The motion frames wait on the host: on the GPU they and the decoded chunk held 1.2 GiB at
        # 1024×704 through the next chunk's denoising, which only needs their latents.
        context_pixels = torch.zeros(1, 3, motion_frames, height, width)
        motion_latents: torch.Tensor | None = None
        out: list[torch.Tensor] = []
        first_noise: NoiseSource | None = None
        for r in range(chunks):
            audio_in = audio_feats[..., r * chunk_frames:(r + 1) * chunk_frames].to(self.transformer.dtype)
            pose = self._pose_latents(pose_video, r, chunk_frames, width, height, device)
            common = dict(ref_latents=ref_latents, motion_latents=motion_latents, cond_latents=pose)
            cond = dict(common, context=ctx, audio=audio_in)
            uncond = dict(common, context=ctx_neg, audio=audio_in * 0)
            shape = (1, self.vae.config.z_dim, chunk_frames // 4, height // 8, width // 8)
            report = (lambda s, r=r: callback(r, chunks, s, num_inference_steps)) if callback else (lambda s: None)
            latents, noise = self._denoise_chunk(shape, seed + r, num_inference_steps, guidance_scale, cond, uncond,
                                                 device, report)
            first_noise = first_noise or noise
            lead = ref_latents if motion_latents is None else motion_latents
            z = torch.cat([lead, latents.to(lead.dtype)], dim=2)
            if on_decode is not None:
                on_decode(r, tuple(z.shape))
            pixels = self.decode_latents(z, device)[:, :, -chunk_frames:].cpu()
            if r == 0:
                pixels = pixels[:, :, DROPPED_FIRST_FRAMES:]
            keep = min(motion_frames, pixels.shape[2])
            context_pixels = torch.cat([context_pixels[:, :, keep:], pixels[:, :, -keep:]], dim=2)
            if r + 1 < chunks:
                motion_latents = self.encode_video(context_pixels, device)
            out.append(pixels)
        video = torch.cat(out, dim=2)[0, :, :wanted]  # (3, T, H, W)
        frames = video.permute(1, 2, 3, 0).add(1).div(2).clamp(0, 1).numpy()
        return S2VOutput(frames=frames, chunks=chunks, width=width, height=height,
                         timesteps=[int(t) for t in self.scheduler.timesteps], noise=first_noise, prepare=prepare)
