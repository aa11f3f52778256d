"""The speech-to-video transformer: the Wan 14B backbone with audio injection, a reference image,
frame-pack motion context and optional pose conditioning.

Token layout per forward: [noisy video | reference image | motion context]. Only the noisy video
tokens carry the step's timestep, are seen by the audio injector and leave through the head. The
module and parameter names match the released Wan2.2-S2V-14B checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn

from wan_studio.engine.s2v.audio_layers import AudioInjector, CausalAudioEncoder
from wan_studio.engine.s2v.config import S2VConfig
from wan_studio.engine.s2v.layers import Head, S2VBlock, compute_dtype, sinusoidal_embedding
from wan_studio.engine.s2v.motion import FramePackMotioner
from wan_studio.engine.s2v.rope import RopeSegment, segment_rotations

# Frame position given to the reference image: far from the chunk's frames 0..19 so attention
# treats it as identity, not as a neighbouring frame.
REFERENCE_FRAME = 30


class S2VTransformer(nn.Module):
    """Denoiser of one chunk of speech-driven video latents."""

    def __init__(self, config: S2VConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.patch_embedding = nn.Conv3d(c.in_dim, c.dim, kernel_size=c.patch_size, stride=c.patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(c.text_dim, c.dim), nn.GELU(approximate="tanh"),
                                            nn.Linear(c.dim, c.dim))
        self.time_embedding = nn.Sequential(nn.Linear(c.freq_dim, c.dim), nn.SiLU(), nn.Linear(c.dim, c.dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(c.dim, 6 * c.dim))
        self.blocks = nn.ModuleList([S2VBlock(c.dim, c.ffn_dim, c.num_heads, c.eps) for _ in range(c.num_layers)])
        self.head = Head(c.dim, c.out_dim, c.patch_size, c.eps)
        self.cond_encoder = nn.Conv3d(c.cond_dim, c.dim, kernel_size=c.patch_size, stride=c.patch_size)
        # "casual" is the released checkpoint's spelling; kept so its keys load unchanged.
        self.casual_audio_encoder = CausalAudioEncoder(c.audio_dim, c.dim, c.audio_layers, c.num_audio_token)
        self.audio_injector = AudioInjector(c.dim, c.num_heads, c.audio_inject_layers, c.eps)
        # Learned offsets telling the blocks which tokens are noisy (0), reference (1), motion (2).
        self.trainable_cond_mask = nn.Embedding(3, c.dim)
        self.frame_packer = FramePackMotioner(c.in_dim, c.dim)

    @property
    def dtype(self) -> torch.dtype:
        """Dtype the model computes in (bf16 when its weights are stored in fp8)."""
        return compute_dtype(self.time_projection[1].weight)

    @property
    def device(self) -> torch.device:
        """Device of the weights (diffusers' pipeline helpers read it)."""
        return self.patch_embedding.weight.device

    def _tokens(self, conv: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
        return conv(x.to(compute_dtype(conv.weight))).flatten(2).transpose(1, 2)

    def _audio(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Audio tokens (global, local) for the chunk's latent frames.

        The motion context's 73 frames have no audio of their own: the chunk's first audio frame is
        repeated in front so the causal convolutions start from a steady state, then dropped.
        """
        c = self.config
        lead = audio[..., :1].expand(*audio.shape[:-1], c.motion_frames)
        glob, local = self.casual_audio_encoder(torch.cat([lead, audio], dim=-1))
        skip = c.motion_latent_frames
        return glob[:, skip:], local[:, skip:]

    def _time(self, timestep: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(step embedding (b, dim), block modulation (b, 6, 2, dim)): segment 1 uses timestep 0."""
        c = self.config
        t = torch.cat([timestep.reshape(-1).expand(batch), timestep.new_zeros(1)])
        dtype = compute_dtype(self.time_embedding[0].weight)
        e = self.time_embedding(sinusoidal_embedding(c.freq_dim, t).to(dtype)).float()
        e0 = self.time_projection(e.to(dtype)).float().unflatten(1, (6, c.dim))
        pair = torch.stack([e0[:batch], e0[batch:].expand(batch, -1, -1)], dim=2)
        return e[:batch], pair

    def forward(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        context: torch.Tensor,
        ref_latents: torch.Tensor,
        motion_latents: torch.Tensor | None,
        cond_latents: torch.Tensor,
        audio: torch.Tensor,
    ) -> torch.Tensor:
        """Predict the flow of ``latents`` (batch, 16, frames, h, w); returns the same shape, fp32.

        ``timestep`` scalar or (1,) in 0..1000; ``context`` (batch, text tokens, text_dim);
        ``ref_latents`` (batch, 16, 1, h, w); ``motion_latents`` (batch, 16, 19, h, w) or ``None``
        for the first chunk; ``cond_latents`` pose latents shaped like ``latents`` (zeros without
        pose); ``audio`` (batch, wav2vec2 layers, audio_dim, 4 × frames) wav2vec2 features at 16 fps.
        """
        c = self.config
        b, _, f, h, w = latents.shape
        pf, ph, pw = c.patch_size
        gf, gh, gw = f // pf, h // ph, w // pw
        audio_global, audio_local = self._audio(audio)
        if audio_local.shape[1] != gf:
            raise ValueError(f"audio covers {audio_local.shape[1]} latent frames, the video {gf}")

        video = self._tokens(self.patch_embedding, latents) + self._tokens(self.cond_encoder, cond_latents)
        ref = self._tokens(self.patch_embedding, ref_latents)
        parts = [video, ref]
        segments = [RopeSegment.dense(gf, gh, gw), RopeSegment(1, gh, gw, REFERENCE_FRAME, (1, gh, gw))]
        if motion_latents is not None:
            parts.append(self.frame_packer(motion_latents))
            segments += FramePackMotioner.segments(motion_latents.shape[3], motion_latents.shape[4])
        kinds = torch.cat([torch.full((p.shape[1],), i if i < 2 else 2, dtype=torch.long) for i, p in enumerate(parts)])
        x = torch.cat(parts, dim=1).float()
        x = x + self.trainable_cond_mask(kinds.to(x.device)).float()
        rotation = segment_rotations(segments, c.head_dim).to(x.device)
        n_video = video.shape[1]

        e, e0 = self._time(timestep.to(x.device), b)
        ctx = context.to(compute_dtype(self.text_embedding[0].weight))
        if ctx.shape[1] < c.text_len:
            ctx = torch.cat([ctx, ctx.new_zeros(b, c.text_len - ctx.shape[1], ctx.shape[2])], dim=1)
        ctx = self.text_embedding(ctx)

        for i, block in enumerate(self.blocks):
            x = block(x, e0, n_video, rotation, ctx)
            x = self.audio_injector(i, x, n_video, audio_local, audio_global)

        out = self.head(x[:, :n_video], e)
        out = out.view(b, gf, gh, gw, pf, ph, pw, c.out_dim).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return out.reshape(b, c.out_dim, f, h, w).float()
