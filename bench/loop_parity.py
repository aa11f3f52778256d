"""Whole sampling loops of Wan Studio beside the official Wan2.2 code, on shared tiny weights.

1. Every model's scheduler (TI2V-5B, T2V-A14B, I2V-A14B, S2V-14B at their default steps and
   shift): the official ``FlowUniPCMultistepScheduler`` and Wan Studio's ``official_scheduler``
   run the same ODE (a fixed random velocity field) from the same noise; timesteps must be equal
   and the final latents equal to fp32 noise. The plain diffusers grid is shown for comparison.
2. The framing formulas (``best_output_size``) against the official function.
3. A whole speech-to-video job: the official ``WanS2V.generate`` and ``S2VPipeline`` on one set of
   random weights (transformer, UMT5, Wan2.1 VAE, wav2vec2 shared), 2 chunks × a few steps, the
   same portrait, speech, seed and a messy prompt; the videos must match to fp32 noise.

    git clone https://github.com/Wan-Video/Wan2.2 /tmp/Wan2.2      # or any checkout of it
    pip install einops                                             # the official model needs it
    python bench/loop_parity.py --official /tmp/Wan2.2 [--device cuda]

Packages the official modules import but these checks never reach (decord, librosa,
torchvision's transforms, flash-attn) are stood in for by small shims here; every shim is an
identity on the inputs used (the portrait is made at the frame size, so no resize happens).
Prints one line ``RESULT {json}``; exit status 1 when a difference exceeds ``--tol``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.machinery
import json
import os
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench.s2v_parity import import_official, shared_transformers  # noqa: E402

MODELS = {"ti2v-5b": (50, 5.0), "t2v-a14b": (40, 12.0), "i2v-a14b": (40, 5.0), "s2v-14b": (40, 3.0)}
MESSY = "  A fox   &amp;amp; a\tcat,\n\n cafÃ©  lights. "


def _shim_modules() -> None:
    """Stand-ins for imports the official speech-to-video module makes but these checks never use."""
    def identity_transform(*_a: object, **_k: object) -> object:
        def apply(x: object) -> object:
            return x
        return apply

    tv = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")

    def to_tensor(pic: object) -> torch.Tensor:
        return torch.from_numpy(np.asarray(pic, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()

    functional.to_tensor = to_tensor
    transforms.functional = functional
    transforms.Resize = transforms.CenterCrop = identity_transform  # the portrait is already the frame size
    transforms.ToTensor = lambda: to_tensor
    tv.transforms = transforms
    decord = types.ModuleType("decord")
    decord.VideoReader = None  # only for pose videos, not used here
    for module in (tv, transforms, functional, decord):
        module.__spec__ = importlib.machinery.ModuleSpec(module.__name__, None)
    sys.modules.update({"torchvision": tv, "torchvision.transforms": transforms,
                        "torchvision.transforms.functional": functional, "decord": decord})


def scheduler_parity(official_cls: type, device: torch.device) -> dict[str, float]:
    """Per model: timesteps equal? final latents' max difference; timesteps diffusers' own grid differs on."""
    from wan_studio.catalog.tiny import build_scheduler
    from wan_studio.engine.sampler import official_scheduler

    g = torch.Generator().manual_seed(5)
    field = torch.randn(16, 16, generator=g) / 4  # a fixed velocity field v(x, t)
    x0 = torch.randn(1, 16, 3, 4, 4, generator=g).to(device)
    out: dict[str, float] = {}
    for key, (steps, shift) in MODELS.items():
        theirs = official_cls(num_train_timesteps=1000, shift=1, use_dynamic_shifting=False)
        theirs.set_timesteps(steps, device=device, shift=shift)
        ours = official_scheduler(build_scheduler(shift), shift)
        ours.set_timesteps(steps, device=device)
        plain = build_scheduler(shift)
        plain.set_timesteps(steps)
        latents = {"official": x0.clone(), "ours": x0.clone()}
        for name, sched in (("official", theirs), ("ours", ours)):
            for t in sched.timesteps:
                x = latents[name]
                v = torch.tanh(torch.einsum("ij,bjfhw->bifhw", field.to(device), x)) + float(t) / 1000
                latents[name] = sched.step(v, t, x, return_dict=False)[0]
        out[f"{key}_timesteps_equal"] = float(theirs.timesteps.tolist() == ours.timesteps.tolist())
        out[f"{key}_final_latents_max_diff"] = (latents["official"] - latents["ours"]).abs().max().item()
        out[f"{key}_diffusers_default_grid_timesteps_differing"] = float(
            sum(a != b for a, b in zip(theirs.timesteps.tolist(), plain.timesteps.tolist())))
    return out


def framing_parity(utils: types.ModuleType) -> float:
    """How many of 2,000 random image sizes get another TI2V-5B frame than the official function."""
    from wan_studio.engine.framing import best_output_size

    rng = np.random.default_rng(0)
    wrong = 0
    for _ in range(2000):
        w, h = (int(v) for v in rng.integers(64, 4000, 2))
        area = int(rng.choice([1280 * 704, 704 * 1280, 832 * 480]))
        wrong += utils.best_output_size(w, h, 32, 32, area) != best_output_size(w, h, 32, 32, area)
    return float(wrong)


def _shared_text_encoders(t5: types.ModuleType, tokenizers: types.ModuleType, tokenizer: object,
                          text_len: int, device: torch.device) -> tuple[object, torch.nn.Module]:
    """The official ``T5EncoderModel`` wrapper around a random tiny encoder, and ours fed its weights."""
    from transformers import UMT5EncoderModel

    from wan_studio.engine.s2v.checkpoint import convert_t5, umt5_xxl_config

    vocab = len(tokenizer)
    torch.manual_seed(2)
    net = t5.T5Encoder(vocab=vocab, dim=32, dim_attn=32, dim_ffn=48, num_heads=4, num_layers=2, num_buckets=32,
                       shared_pos=False, dropout=0.0).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.3)
    cfg = umt5_xxl_config(vocab_size=vocab)
    cfg.d_model, cfg.d_kv, cfg.d_ff, cfg.num_layers, cfg.num_heads = 32, 8, 48, 2, 4
    ours = UMT5EncoderModel(cfg).eval()
    ours.load_state_dict(convert_t5(net.state_dict()), strict=True)
    official_tok = tokenizers.HuggingfaceTokenizer.__new__(tokenizers.HuggingfaceTokenizer)
    official_tok.name, official_tok.seq_len, official_tok.clean = "tiny", text_len, "whitespace"
    official_tok.tokenizer = tokenizer
    official = t5.T5EncoderModel.__new__(t5.T5EncoderModel)
    official.text_len, official.dtype, official.device = text_len, torch.float32, device
    official.model, official.tokenizer = net.to(device), official_tok
    return official, ours


def _shared_vaes(vae21: types.ModuleType, device: torch.device) -> tuple[object, torch.nn.Module]:
    """The official ``Wan2_1_VAE`` around a random small network, and diffusers' VAE with its weights."""
    from diffusers import AutoencoderKLWan
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    torch.manual_seed(3)
    net = vae21.WanVAE_(dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                        temperal_downsample=[False, True, True], dropout=0.0).eval()
    original = vae21._video_vae
    vae21._video_vae = lambda *a, **k: net
    try:
        official = vae21.Wan2_1_VAE(vae_pth=None, device=device)
    finally:
        vae21._video_vae = original
    ours = AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                            temperal_downsample=[False, True, True]).eval()
    ours.load_state_dict(convert_wan_vae_to_diffusers(net.state_dict()), strict=True)
    return official, ours


def s2v_loop_parity(root: str, device: torch.device, steps: int, chunk_frames: int) -> dict[str, float]:
    """A whole S2V job, 2 chunks × ``steps`` steps, official vs ours: max difference of the frames (0–1)."""
    from PIL import Image
    from transformers import Wav2Vec2FeatureExtractor

    from wan_studio.catalog.specs import S2V_NEGATIVE_PROMPT
    from wan_studio.catalog.tiny import build_scheduler, build_tokenizer
    from wan_studio.engine.s2v.audio_io import load_speech, write_wav
    from wan_studio.engine.s2v.pipeline import S2VPipeline
    from wan_studio.engine.s2v.tiny import build_audio_encoder

    librosa = sys.modules["librosa"]  # a stub from import_official unless librosa is installed
    librosa.load = lambda path, sr=16000: (load_speech(path).samples, sr)
    for name in ("wan.utils", "wan.distributed"):
        sys.modules[name] = sys.modules.get(name) or types.ModuleType(name)
        sys.modules[name].__path__ = [os.path.join(root, *name.split("."))]
    # The official T5 module evaluates torch.cuda.current_device() in a default argument at import.
    current, torch.cuda.current_device = torch.cuda.current_device, lambda: 0
    try:
        t5 = importlib.import_module("wan.modules.t5")
        s2v_mod = importlib.import_module("wan.speech2video")
    finally:
        torch.cuda.current_device = current
    tokenizers = importlib.import_module("wan.modules.tokenizers")
    vae21 = importlib.import_module("wan.modules.vae2_1")
    audio_mod = importlib.import_module("wan.modules.s2v.audio_encoder")

    tokenizer = build_tokenizer()
    text_official, text_ours = _shared_text_encoders(t5, tokenizers, tokenizer, 64, device)
    vae_official, vae_ours = _shared_vaes(vae21, device)
    model_official, model_ours = shared_transformers(importlib.import_module("wan.modules.s2v.model_s2v"))
    wav2vec = build_audio_encoder(32, 24, seed=4).to(device)
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, do_normalize=True,
                                         return_attention_mask=False)
    audio_official = audio_mod.AudioEncoder.__new__(audio_mod.AudioEncoder)
    audio_official.processor, audio_official.model, audio_official.video_rate = extractor, wav2vec, 30

    official = s2v_mod.WanS2V.__new__(s2v_mod.WanS2V)
    vars(official).update(device=device, param_dtype=torch.float32, rank=0, sp_size=1, motion_frames=73,
                          drop_first_motion=True, fps=16, audio_sample_m=0, num_train_timesteps=1000,
                          sample_neg_prompt=S2V_NEGATIVE_PROMPT, t5_cpu=False, init_on_cpu=False,
                          text_encoder=text_official, vae=vae_official, noise_model=model_official.to(device),
                          audio_encoder=audio_official)
    ours = S2VPipeline(tokenizer=tokenizer, text_encoder=text_ours, vae=vae_ours, transformer=model_ours,
                       scheduler=build_scheduler(3.0), audio_encoder=wav2vec, feature_extractor=extractor).to(device)
    ours.set_progress_bar_config(disable=True)

    width, height = 64, 64  # multiples of 64; the picture is made at this size, so nothing resizes it
    seconds = 1.5 * chunk_frames / 16  # 1.5 chunks of speech: both chunk rules make 2 chunks
    work = Path(tempfile.mkdtemp())
    t = np.arange(int(seconds * 16000)) / 16000
    audio = write_wav(work / "speech.wav", (0.2 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(8 * np.pi * t)))
                      .astype(np.float32))
    yy, xx = np.mgrid[0:height, 0:width]
    portrait = np.stack([xx * 4 % 256, yy * 2 % 256, (xx + yy) % 256], -1).astype(np.uint8)
    Image.fromarray(portrait).save(work / "face.png")
    with torch.no_grad():
        theirs = official.generate(MESSY, str(work / "face.png"), str(audio), False, None, None, None,
                                   num_repeat=2, max_area=width * height, infer_frames=chunk_frames, shift=3.0,
                                   sampling_steps=steps, guide_scale=4.5, n_prompt="", seed=42,
                                   offload_model=False)
        mine = ours(Image.fromarray(portrait), load_speech(audio).samples, prompt=MESSY,
                    negative_prompt=S2V_NEGATIVE_PROMPT, max_area=width * height, chunk_frames=chunk_frames,
                    max_chunks=2, num_inference_steps=steps, guidance_scale=4.5, shift=3.0, seed=42)
    a = theirs.float().cpu().add(1).div(2).permute(1, 2, 3, 0).numpy()  # (T, H, W, 3) in 0–1
    b = mine.frames
    n = min(len(a), len(b))
    return {"s2v_chunks": float(mine.chunks), "s2v_frames_compared": float(n),
            "s2v_frame_size_equal": float(a.shape[1:3] == b.shape[1:3]),
            "s2v_video_max_diff": float(np.abs(a[:n] - b[:n]).max()) if a.shape[1:3] == b.shape[1:3] else 1.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official", required=True, help="checkout of Wan-Video/Wan2.2 (the folder holding wan/)")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda to check the noise drawn on a GPU too")
    ap.add_argument("--steps", type=int, default=3, help="sampling steps per S2V chunk")
    ap.add_argument("--chunk-frames", type=int, default=8, help="frames per S2V chunk (80 as released)")
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()
    root = os.path.abspath(args.official)
    device = torch.device(args.device)
    import diffusers  # noqa: F401 - both look for torchvision once, at import: before the shims
    import transformers  # noqa: F401

    _shim_modules()
    import_official(root)

    for name in ("wan.utils",):
        sys.modules[name] = types.ModuleType(name)
        sys.modules[name].__path__ = [os.path.join(root, "wan", "utils")]
    solver = importlib.import_module("wan.utils.fm_solvers_unipc").FlowUniPCMultistepScheduler
    result = scheduler_parity(solver, device)
    result["ti2v_frame_sizes_differing"] = framing_parity(importlib.import_module("wan.utils.utils"))
    result.update(s2v_loop_parity(root, device, args.steps, args.chunk_frames))
    print("RESULT " + json.dumps(result))
    diffs = [v for k, v in result.items() if k.endswith("max_diff")]
    ok = (max(diffs) <= args.tol and all(v == 1.0 for k, v in result.items() if k.endswith("_equal"))
          and result["ti2v_frame_sizes_differing"] == 0 and result["s2v_chunks"] == 2)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
