"""One job over two GPUs: speed of the CFG-parallel and expert-pipeline splits against one GPU.

Uses the app's own split stand-ins (``wan_studio.cluster.split``) with a peer on the second GPU of
this host, talking through the same pack/unpack path as over Ray (tensors go through host memory),
so the figures are the compute overlap plus the serialisation cost, without a network. Full-size
transformers with random weights are built on the GPUs; prompt embeddings are random and the
output stays latent (text encoder and VAE are the same with or without a split).

  python3 bench/cluster_split.py --case cfg        # TI2V-5B, 1280×704, 121 frames: single vs CFG split
  python3 bench/cluster_split.py --case experts    # T2V-A14B, 832×480, 81 frames: 4 jobs, one GPU vs two
  python bench/cluster_split.py --tiny             # CPU smoke test; adds a Ray loopback measurement

Needs two CUDA GPUs (or --tiny), torch and diffusers; Ray only for the --tiny loopback part.
Prints one ``RESULT {json}`` line per case.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wan_studio.cluster.split import ExpertHost, Packed, SplitStats, SplitTransformer, pack, twin_with  # noqa: E402

def full_transformer(kind: str, name: str, device: str, like: torch.nn.Module | None = None) -> torch.nn.Module:
    """Expert ``name`` of TI2V-5B (``kind`` "ti2v") or T2V-A14B ("a14b") at full size with random
    bf16 weights on ``device`` (``catalog.synthetic``); with ``like``, a copy of its weights."""
    from wan_studio.catalog import synthetic
    from wan_studio.catalog.specs import get_spec

    module = synthetic.build_component(get_spec("ti2v-5b" if kind == "ti2v" else "t2v-a14b"), name, device)
    if like is not None:
        with torch.no_grad():
            module.load_state_dict(like.state_dict())
    return module


class ThreadPeer:
    """A peer GPU in this process: serves forwards of ``modules`` on its own thread."""

    def __init__(self, name: str, modules: dict[str, torch.nn.Module], lock: threading.Lock) -> None:
        self.name, self.modules = name, modules
        self.host = ExpertHost(lock)
        self.pool = ThreadPoolExecutor(2)
        self.job = "job"

    def for_job(self, job: str) -> ThreadPeer:
        peer = ThreadPeer.__new__(ThreadPeer)
        peer.__dict__.update(self.__dict__)
        peer.job = job
        return peer

    def forward(self, role: str, contexts: list[str], streamed: dict, templates: dict) -> Future:
        return self.pool.submit(self.host.forward, self.modules[role], self.job, role, contexts, streamed, templates)


def shell_pipeline(kind: str, device: str, transformer: Any, transformer_2: Any = None) -> Any:
    """A Wan pipeline around the given transformers; tiny text encoder and VAE (never run here,
    but the pipeline reads its execution device and scale factors from them)."""
    from wan_studio.catalog import tiny

    tok = tiny.build_tokenizer()
    if kind == "ti2v":
        pipe = tiny.WanPipeline(tokenizer=tok, text_encoder=tiny.build_text_encoder(len(tok)), vae=tiny.build_wan22_vae(),
                                transformer=transformer, scheduler=tiny.build_scheduler(5.0), expand_timesteps=True)
    else:
        pipe = tiny.WanPipeline(tokenizer=tok, text_encoder=tiny.build_text_encoder(len(tok)), vae=tiny.build_wan21_vae(),
                                transformer=transformer, transformer_2=transformer_2,
                                scheduler=tiny.build_scheduler(12.0), boundary_ratio=0.875)
    pipe.text_encoder.to(device)
    pipe.vae.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def denoise(pipe: Any, a: argparse.Namespace, device: str, dtype: torch.dtype) -> tuple[torch.Tensor, list[float]]:
    """Run the loop; returns the final latents and the wall time of every step (seconds)."""
    g = torch.Generator("cpu").manual_seed(0)
    embeds = torch.randn(1, 512, a.text_dim, generator=g).to(device, dtype)
    negative = torch.randn(1, 512, a.text_dim, generator=g).to(device, dtype)
    marks = [time.perf_counter()]

    def on_step(_p: Any, _i: int, _t: Any, kw: dict) -> dict:
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        marks.append(time.perf_counter())
        return kw

    with torch.inference_mode():
        out = pipe(prompt_embeds=embeds, negative_prompt_embeds=negative, height=a.height, width=a.width,
                   num_frames=a.frames, num_inference_steps=a.steps, guidance_scale=5.0,
                   generator=torch.Generator("cpu").manual_seed(1), output_type="latent",
                   callback_on_step_end=on_step).frames
    return out, [b - a_ for a_, b in zip(marks, marks[1:])]


def warm_up(pipe: Any, a: argparse.Namespace, device: str, dtype: torch.dtype) -> None:
    """Two steps first, so kernel selection and allocator growth stay out of the timed runs."""
    steps, a.steps = a.steps, 2
    try:
        denoise(pipe, a, device, dtype)
    finally:
        a.steps = steps


def median_after_first(times: list[float]) -> float:
    rest = sorted(times[1:]) or times
    return rest[len(rest) // 2]


def case_cfg(a: argparse.Namespace, dev0: str, dev1: str) -> dict[str, Any]:
    m0 = a.build("ti2v", "transformer", dev0, None)
    m1 = a.build("ti2v", "transformer", dev1, m0)
    pipe = shell_pipeline("ti2v", dev0, m0)
    warm_up(pipe, a, dev0, m0.dtype)
    single, t_single = denoise(pipe, a, dev0, m0.dtype)
    stats = SplitStats("cfg", "peer")
    lock0 = threading.Lock()
    proxy = SplitTransformer("transformer", m0, m0, ThreadPeer("peer", {"transformer": m1}, threading.Lock()),
                             {"uncond"}, stats, lock0)
    split, t_split = denoise(twin_with(pipe, transformer=proxy), a, dev0, m0.dtype)
    s1, s2 = median_after_first(t_single), median_after_first(t_split)
    return {"case": "cfg", "s_per_step_single": round(s1, 4), "s_per_step_split": round(s2, 4),
            "speedup": round(s1 / s2, 3), "max_abs_diff": float((single.float() - split.float()).abs().max()),
            **{k: v for k, v in stats.as_dict().items() if k.endswith("bytes") or k == "bytes_per_step"}}


def case_experts(a: argparse.Namespace, dev0: str, dev1: str) -> dict[str, Any]:
    high0 = a.build("a14b", "transformer", dev0, None)
    low0 = a.build("a14b", "transformer_2", dev0, None)
    one_gpu = shell_pipeline("a14b", dev0, high0, low0)
    warm_up(one_gpu, a, dev0, high0.dtype)
    t0 = time.perf_counter()
    reference = [denoise(one_gpu, a, dev0, high0.dtype)[0] for _ in range(a.jobs)]
    t_one = time.perf_counter() - t0
    low1 = a.build("a14b", "transformer_2", dev1, low0)
    del low0, one_gpu
    locks = {dev0: threading.Lock(), dev1: threading.Lock()}
    on0 = ThreadPeer("gpu0", {"transformer": high0}, locks[dev0])
    on1 = ThreadPeer("gpu1", {"transformer_2": low1}, locks[dev1])
    stats: list[SplitStats] = []

    def job(i: int) -> torch.Tensor:
        home = dev0 if i % 2 == 0 else dev1
        s = SplitStats("experts", "peer")
        stats.append(s)
        if home == dev0:
            hi = SplitTransformer("transformer", high0, high0, None, set(), s, locks[dev0])
            lo = SplitTransformer("transformer_2", high0, None, on1.for_job(f"j{i}"), {"cond", "uncond"}, s)
        else:
            hi = SplitTransformer("transformer", low1, None, on0.for_job(f"j{i}"), {"cond", "uncond"}, s)
            lo = SplitTransformer("transformer_2", low1, low1, None, set(), s, locks[dev1])
        return denoise(shell_pipeline("a14b", home, hi, lo), a, home, high0.dtype)[0]

    t0 = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:  # two drivers, one per GPU, each running its jobs in turn
        outs = list(pool.map(job, range(a.jobs)))
    t_two = time.perf_counter() - t0
    diff = max(float((o.float().cpu() - r.float().cpu()).abs().max()) for o, r in zip(outs, reference))
    per_step = [s.as_dict()["bytes_per_step"] for s in stats]
    return {"case": "experts", "jobs": a.jobs, "s_total_one_gpu": round(t_one, 2), "s_total_two_gpus": round(t_two, 2),
            "speedup": round(t_one / t_two, 3), "max_abs_diff": diff, "bytes_per_remote_step": max(per_step)}


def ray_loopback(latent_shape: tuple[int, ...], rounds: int = 10) -> dict[str, Any]:
    """Round trips of a latent-sized bf16 payload to an actor on another node of a local two-node
    Ray cluster (loopback network): bytes per step and milliseconds per round trip."""
    import ray
    from ray.cluster_utils import Cluster
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=1, include_dashboard=False))
    node = cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        @ray.remote(num_cpus=0)
        class Echo:
            def step(self, p: Packed) -> Packed:
                return p  # stands in for the prediction, which has the latents' shape

        echo = Echo.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False)).remote()
        payload = pack(torch.randn(latent_shape).to(torch.bfloat16))
        ray.get(echo.step.remote(payload))
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            ray.get(echo.step.remote(payload))
            times.append(time.perf_counter() - t0)
        times.sort()
        return {"case": "ray_loopback", "latent_shape": list(latent_shape), "bytes_per_step": 2 * payload.nbytes,
                "ms_per_round_trip_median": round(1000 * times[len(times) // 2], 2)}
    finally:
        ray.shutdown()
        cluster.shutdown()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", choices=("cfg", "experts", "both"), default="both")
    ap.add_argument("--tiny", action="store_true", help="CPU, tiny models, small sizes; plus a Ray loopback figure")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--jobs", type=int, default=4)
    a = ap.parse_args()
    if a.tiny:
        from wan_studio.catalog import tiny

        def build(kind: str, name: str, device: str, like: Any) -> torch.nn.Module:
            channels = 48 if kind == "ti2v" else 16
            return tiny.build_transformer(channels, channels, seed=1 if name == "transformer_2" else 0)

        a.build, a.text_dim, a.height, a.width, a.frames = build, tiny.TEXT_DIM, 64, 64, 9
        a.steps = a.steps or 6
        devices = ("cpu", "cpu")
        torch.set_num_threads(1)  # both "GPUs" share this CPU: one thread each keeps them apart
    else:
        if torch.cuda.device_count() < 2:
            print("needs two CUDA GPUs (or --tiny)", file=sys.stderr)
            return 2
        a.build, a.text_dim = full_transformer, 4096
        a.steps = a.steps or 8
        devices = ("cuda:0", "cuda:1")
    cases = ["cfg", "experts"] if a.case == "both" else [a.case]
    for case in cases:
        if not a.tiny:
            a.height, a.width, a.frames = (704, 1280, 121) if case == "cfg" else (480, 832, 81)
        fn = case_cfg if case == "cfg" else case_experts
        print("RESULT " + json.dumps({**fn(a, *devices), "steps": a.steps, "hw": [a.height, a.width, a.frames],
                                      "device": torch.cuda.get_device_name(0) if not a.tiny else "cpu"}), flush=True)
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    if a.tiny:
        try:
            import ray  # noqa: F401
        except ImportError:
            print("Ray not installed: loopback figure skipped", file=sys.stderr)
            return 0
        # TI2V-5B at 1280×704, 121 frames: 48 channels × 31 latent frames × 44 × 80, bf16.
        print("RESULT " + json.dumps(ray_loopback((1, 48, 31, 44, 80))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
