"""The same behaviour on every executor: in-process thread, local worker process, two-node Ray cluster.

Each executor runs its jobs through the one worker runtime, so the app's settings, MagCache
calibration, the at-most-once outputs and GPU pins behave alike whichever transport carries the job.
One queue per executor serves every test of it (Ray is slow to start on a small machine).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

import pytest

from wan_studio.cluster.runtime import RuntimeConfig, ThermalConfig, WorkerRuntime
from wan_studio.engine.request import GenerationRequest
from wan_studio.jobs.queue import JobQueue
from wan_studio.jobs.store import Job, JobStore
from wan_studio.memory.costs import HOST_OVERHEAD_BYTES
from wan_studio.memory.plan import Limits

RAM_SHARE = 4
SPEED = {"attention": "sdpa", "compile": "off", "allow_lossy_attention": False}
# Loaded by every Python process started with this folder on PYTHONPATH (worker processes, Ray's
# workers): while the file named by DIE_AFTER_OUTPUTS exists, the first job to finish writing its
# video and sidecar removes it and ends its process before reporting the job done.
KILL_HOOK = '''
import importlib.abc, importlib.util, os, sys

class _AfterJobPath(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "wan_studio.cluster.job_path":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            done = module.JobPath._done

            def dying_done(self, *args, **kwargs):
                armed = os.environ.get("DIE_AFTER_OUTPUTS")
                if armed and os.path.exists(armed):
                    os.remove(armed)
                    os._exit(9)
                return done(self, *args, **kwargs)

            module.JobPath._done = dying_done

        spec.loader.exec_module = exec_module
        return spec

if os.environ.get("DIE_AFTER_OUTPUTS"):
    sys.meta_path.insert(0, _AfterJobPath())
'''


def _config(root: Path) -> RuntimeConfig:
    return RuntimeConfig(models_dir=str(root / "models"), outputs_dir=str(root / "outputs"),
                         loras_dir=str(root / "loras"), allow_fp8=False, allow_8bit=True, ram_share=RAM_SHARE,
                         speed=SPEED, tiny_models=True, thermal=ThermalConfig(enabled=False))


def _executor(kind: str, root: Path, request: pytest.FixtureRequest) -> Any:
    config = _config(root)
    if kind == "inline":
        from wan_studio.cluster.inline import InlineExecutor

        return InlineExecutor(WorkerRuntime("in-process", config))
    if kind == "local":
        from wan_studio.cluster.local import LocalExecutor

        return LocalExecutor(config, ["cpu"])
    from tests.cluster import loopback  # before Ray: the cluster listens on 127.0.0.1 only

    ray = pytest.importorskip("ray")
    from wan_studio.cluster.ray_backend import RayExecutor

    cluster = loopback.start_cluster(nodes=2)

    def stop() -> None:
        ray.shutdown()
        cluster.shutdown()

    request.addfinalizer(stop)
    return RayExecutor(cluster.address, root / "outputs", config, heartbeat_s=0.5, ship_code=False)


@pytest.fixture(scope="module", params=["inline", "local", "ray"])
def queue(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[JobQueue]:
    root = tmp_path_factory.mktemp(request.param)
    hook = root / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILL_HOOK)
    # Worker processes (and Ray's, started with the cluster) inherit these.
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "DIE_AFTER_OUTPUTS")}
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(hook), saved["PYTHONPATH"]) if p)
    os.environ["DIE_AFTER_OUTPUTS"] = str(root / "armed")
    try:
        executor = _executor(request.param, root, request)
        q = JobQueue(JobStore(root / "outputs" / "jobs.db"), executor, root / "outputs")
        q.start()
        yield q
        q.close()
        q.store.close()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _req(seed: int, **fields: Any) -> GenerationRequest:
    return GenerationRequest(**{"prompt": "a lighthouse at dusk", "width": 64, "height": 64, "num_frames": 5,
                                "steps": 2, "seed": seed, **fields})


def _sidecar(job: Job) -> dict[str, Any]:
    return json.loads(Path(next(o for o in job.outputs if o.endswith(".json"))).read_text())


def _run(q: JobQueue, req: GenerationRequest, extra: dict[str, Any] | None = None) -> Job:
    return q.wait(q.submit(req, extra=extra).id, timeout_s=300)


def test_the_apps_settings_reach_the_worker(queue: JobQueue) -> None:
    job = _run(queue, _req(1))
    assert job.status == "done", job.error
    budget = (1024 * 2**30 * Limits().host_fraction - HOST_OVERHEAD_BYTES) / RAM_SHARE / 2**30  # tiny: 1 TiB RAM
    settings = _sidecar(job)["worker_settings"]
    assert settings == {"allow_fp8": False, "allow_8bit": True, "attention": "sdpa", "compile": "off",
                        "ram_budget_gib": pytest.approx(budget, abs=0.01)}
    refused = _run(queue, _req(2, overrides={"storage": "fp8"}))
    assert refused.status == "failed" and "fp8 storage is turned off on this server" in (refused.error or "")


def test_calibration_returns_its_ratios(queue: JobQueue) -> None:
    job = _run(queue, _req(3, model="ti2v-5b", width=256, height=256, steps=3), extra={"calibrate_magcache": True})
    assert job.status == "done", job.error
    calibration = _sidecar(job)["magcache_calibration"]
    assert calibration["model"] == "ti2v-5b" and len(calibration["ratios"]) == 3
    assert calibration["ratios"][0] == 1.0


def test_a_pin_to_a_gpu_the_worker_lacks_is_refused_in_words(queue: JobQueue) -> None:
    job = _run(queue, _req(4, overrides={"gpu": "cuda:3"}))
    assert job.status == "failed"
    assert "pinned to cuda:3" in (job.error or "") and "no GPU" in (job.error or "")


def test_a_worker_killed_after_writing_its_video_leaves_one_copy(queue: JobQueue) -> None:
    from wan_studio.cluster.inline import InlineExecutor

    if isinstance(queue.executor, InlineExecutor):
        pytest.skip("the in-process worker dies with the app; tests/cluster/test_runtime.py covers its files")
    armed = Path(os.environ["DIE_AFTER_OUTPUTS"])
    armed.write_text("")
    before = set(queue.outputs_dir.rglob("*.mp4"))
    job = _run(queue, _req(5))
    assert job.status == "done", job.error
    assert not armed.exists()  # the first attempt did die after its outputs, before reporting them
    # The queue adopted the finished files (local) or the retry shipped them (Ray): one copy either way.
    new = set(queue.outputs_dir.rglob("*.mp4")) - before
    assert [p for p in new if ".work" not in p.parts] == [Path(job.outputs[0])]
