"""The Ray executor on a real two-node Ray cluster on this machine (CPU, tiny models).

Each node declares one GPU slot, so every path of a real cluster runs (one actor per GPU, node
affinity, heartbeats); the "GPUs" are read through a fake NVML whose host name differs per node.
One cluster and one executor serve every test; the fault test, which changes the cluster, runs last.
The cluster listens on 127.0.0.1 only (tests/cluster/loopback.py), so test traffic stays on this machine.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tests.cluster.loopback as loopback  # before Ray: it sets how Ray finds this machine's address

ray = pytest.importorskip("ray")

import tests.cluster.fakes as fakes  # noqa: E402
import tests.gpu.fake_nvml as fake_nvml  # noqa: E402
from wan_studio.cluster.executor import JobEvent, WorkerGone  # noqa: E402
from wan_studio.cluster.ray_backend import ClusterUnavailable, RayExecutor, import_ray  # noqa: E402
from wan_studio.cluster.ray_worker import node_outputs  # noqa: E402
from wan_studio.cluster.runtime import RuntimeConfig, ThermalConfig  # noqa: E402
from wan_studio.engine.checkpoint import StepCheckpoints, request_key  # noqa: E402
from wan_studio.engine.generate import GenerationCancelled, render  # noqa: E402
from wan_studio.engine.job import work_dir_of  # noqa: E402
from wan_studio.engine.request import GenerationRequest  # noqa: E402
from wan_studio.engine.video_io import read_mp4  # noqa: E402
from wan_studio.gpu import NoGpuTelemetry, TelemetrySampler  # noqa: E402

TERMINAL = ("done", "failed", "cancelled", "lost")


def wait_for(pred: Any, what: str, timeout: float = 60.0) -> None:
    """Poll ``pred`` until it holds; fail naming ``what`` was awaited after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.2)


class Events:
    """The executor's event sink, with waits a test can read. An event a wait passes over stays in
    ``backlog`` for a later wait (two jobs may end in either order)."""

    def __init__(self) -> None:
        self.q: queue.Queue[JobEvent] = queue.Queue()
        self.backlog: list[JobEvent] = []

    def __call__(self, event: JobEvent) -> None:
        self.q.put(event)

    def until(self, pred: Any, timeout: float = 120.0) -> JobEvent:
        for event in self.backlog:
            if pred(event):
                self.backlog.remove(event)
                return event
        deadline = time.monotonic() + timeout
        while True:
            event = self.q.get(timeout=max(0.1, deadline - time.monotonic()))
            if pred(event):
                return event
            self.backlog.append(event)

    def end_of(self, job_id: str, timeout: float = 120.0) -> JobEvent:
        return self.until(lambda e: e.job_id == job_id and e.kind in TERMINAL, timeout)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    ray.cloudpickle.register_pickle_by_value(fakes)
    ray.cloudpickle.register_pickle_by_value(fake_nvml)
    c = loopback.start_cluster(nodes=2)
    yield c
    ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="module")
def hot_flag(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("thermal") / "hot"


@pytest.fixture(scope="module")
def node_dir(tmp_path_factory) -> Path:
    """The folder the workers keep their jobs' files in: this cluster's own, so no job meets the work
    folder of a job with the same id from an earlier test run on this machine."""
    return tmp_path_factory.mktemp("node")


@pytest.fixture(scope="module")
def write_gate(tmp_path_factory) -> fakes.WriteGate:
    return fakes.WriteGate(str(tmp_path_factory.mktemp("write-gate")))


@pytest.fixture(scope="module")
def setup(cluster, hot_flag, node_dir, write_gate, tmp_path_factory):
    sampler = TelemetrySampler(NoGpuTelemetry("no local GPU in tests"), interval_s=0.5)
    events = Events()
    outputs = tmp_path_factory.mktemp("outputs")
    options = RuntimeConfig(outputs_dir=str(outputs), tiny_models=True, node_dir=str(node_dir),
                            telemetry_factory=fakes.FlagTelemetryFactory(str(hot_flag)),
                            thermal=ThermalConfig(interval_s=0.2), before_write=write_gate)
    ex = RayExecutor(cluster.address, outputs, options, heartbeat_s=0.5,
                     on_samples=sampler.ingest)
    ex.start(events)
    wait_for(lambda: len(ex.idle_workers()) == 2, "a worker on each node", timeout=120)
    yield ex, events, sampler
    ex.shutdown()


def request(model: str = "demo", **fields: Any) -> GenerationRequest:
    base = dict(prompt="a lighthouse at dusk", model=model, width=64, height=64, num_frames=5, steps=4,
                seed=11, guidance=4.0)
    return GenerationRequest(**{**base, **fields}).resolved()


def run(ex: RayExecutor, events: Events, worker: str, job_id: str, req: GenerationRequest) -> JobEvent:
    ex.submit(worker, job_id, req)
    return events.end_of(job_id)


def frames(event: JobEvent) -> np.ndarray:
    assert event.kind == "done", event.error
    return read_mp4(Path(next(o for o in event.outputs if o.endswith(".mp4"))))[0]


def sidecar(event: JobEvent) -> dict[str, Any]:
    return json.loads(Path(next(o for o in event.outputs if o.endswith(".json"))).read_text())


def names(ex: RayExecutor) -> list[str]:
    return [w.name for w in ex.workers()]


def loaded(ex: RayExecutor) -> dict[str, list[str]]:
    """Worker name -> the models its last heartbeat said it holds."""
    return {w.name: w.loaded for w in ex.workers()}


def test_the_test_cluster_listens_and_talks_on_loopback_only(setup) -> None:
    procs = loopback.ray_processes()
    kinds = {p.name() for p in procs}
    assert {"gcs_server", "raylet"} <= kinds and sum(p.name() == "raylet" for p in procs) == 2, kinds
    assert {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]} == {loopback.LOOPBACK}
    assert loopback.off_loopback(procs) == []


def test_one_worker_per_gpu_and_both_pcs_gpus_reach_the_panel(setup) -> None:
    ex, _events, sampler = setup
    workers = ex.workers()
    assert len(workers) == 2 and all(w.state == "idle" and w.pid for w in workers)
    wait_for(lambda: len({s.host for s in sampler.latest()}) == 2, "samples from both PCs")
    latest = sampler.latest()
    assert {s.host for s in latest} == {"pc-" + w.name.split("~")[1][:6] for w in workers}
    assert all(s.name == "NVIDIA GeForce RTX 3090" and s.temperature_c == 50 for s in latest)


def test_job_result_lands_in_the_head_outputs_and_the_worker_keeps_the_model(setup) -> None:
    ex, events, _ = setup
    ex.split = "off"
    first = names(ex)[0]
    done = run(ex, events, first, "affinity", request())
    assert done.worker == first and all(Path(o).is_file() for o in done.outputs)
    assert all(Path(o).is_relative_to(ex.outputs_dir) for o in done.outputs)
    assert sidecar(done)["worker"] == first and frames(done).shape == (5, 64, 64, 3)
    wait_for(lambda: "demo" in loaded(ex)[first], "a heartbeat listing the loaded model")
    assert "demo" not in loaded(ex)[names(ex)[1]]
    # The worker is free again, and a second job on it is refused only while it runs.
    ex.submit(first, "busy", request(steps=2))
    with pytest.raises(WorkerGone):
        ex.submit(first, "again", request())
    assert events.end_of("busy").kind == "done"


def test_a_start_image_travels_with_the_job(setup, image_file) -> None:
    ex, events, _ = setup
    ex.split = "off"
    done = run(ex, events, names(ex)[1], "with-image", request(image=str(image_file), steps=2))
    assert sidecar(done)["mode"] == "image-to-video"


def test_a_job_that_fails_on_the_worker_says_why_and_frees_it(setup) -> None:
    ex, events, _ = setup
    worker = names(ex)[0]
    failed = run(ex, events, worker, "bad", request(overrides={"gpu": "cuda:3"}))
    assert failed.kind == "failed" and "pinned to cuda:3" in failed.error and "no GPU" in failed.error
    assert worker in [w.name for w in ex.idle_workers()]


def test_cfg_split_output_equals_the_single_gpu_output(setup) -> None:
    ex, events, _ = setup
    a, b = names(ex)
    ex.split = "off"
    single = run(ex, events, a, "cfg-single", request(steps=5))
    ex.split = "cfg"
    ex.submit(a, "cfg-split", request(steps=5))
    assert [w.name for w in ex.idle_workers()] == []  # the peer is borrowed for the job
    split = events.end_of("cfg-split")
    assert np.array_equal(frames(split), frames(single))
    info = sidecar(split)["split"]
    assert info["mode"] == "cfg" and info["peer"] == b and info["remote_steps"] == 4
    latent = 48 * 2 * 4 * 4 * 4  # float32 latents of a 64×64×5 tiny job
    assert 2 * latent <= ex.bytes_per_step["cfg-split"] <= 2 * latent + 512
    assert "split" not in sidecar(single)


def test_expert_split_equals_single_and_two_jobs_overlap(setup) -> None:
    ex, events, _ = setup
    a, b = names(ex)
    ex.split = "off"
    req = request("t2v-a14b", steps=6, shift=3.0)
    single = run(ex, events, a, "experts-single", req)
    ex.split = "experts"
    ex.submit(a, "experts-1", req)
    ex.submit(b, "experts-2", req)  # driven from the low-noise worker: both stages still run
    one, two = events.end_of("experts-1"), events.end_of("experts-2")
    assert np.array_equal(frames(one), frames(single)) and np.array_equal(frames(two), frames(single))
    assert sidecar(one)["split"]["peer"] == b and sidecar(two)["split"]["peer"] == a
    # Heartbeats bring the loaded lists; each worker holds only its own expert.
    wait_for(lambda: "t2v-a14b@high" in loaded(ex)[a] and "t2v-a14b@low" in loaded(ex)[b],
             "heartbeats listing each worker's expert")
    assert "t2v-a14b@low" not in loaded(ex)[a] and "t2v-a14b@high" not in loaded(ex)[b]


def test_a_worker_takes_its_next_job_while_its_last_mp4_is_written(setup, write_gate) -> None:
    ex, events, _ = setup
    ex.split = "off"
    worker = names(ex)[0]
    hold = Path(write_gate.folder) / "hold"
    hold.touch()
    try:
        before = write_gate.held()
        ex.submit(worker, "written-later", request(steps=2, seed=21))
        wait_for(lambda: write_gate.held() > before, "the first job's write to be held")
        # The GPU is free while that mp4 waits: the same worker runs a second job to its decode end.
        wait_for(lambda: worker in [w.name for w in ex.idle_workers()], "the worker free again")
        ex.submit(worker, "next-on-gpu", request(steps=2, seed=22))
        events.until(lambda e: e.job_id == "next-on-gpu" and e.kind == "progress"
                     and e.progress["stage"] == "writing")
    finally:
        hold.unlink()
    first, second = events.end_of("written-later"), events.end_of("next-on-gpu")
    assert (first.kind, second.kind) == ("done", "done"), (first.error, second.error)
    assert sidecar(first)["clock"]["mp4_written"] == "off the GPU's path"
    assert sidecar(second)["clock"]["started_at"] < sidecar(first)["clock"]["written_at"]
    assert frames(first).shape == frames(second).shape == (5, 64, 64, 3)
    assert all(Path(o).is_relative_to(ex.outputs_dir) for o in first.outputs + second.outputs)


def test_a_hot_remote_gpu_pauses_its_job_before_its_first_step_until_it_cools(setup, hot_flag) -> None:
    ex, events, _ = setup
    ex.split = "off"
    for i, worker in enumerate(names(ex)):  # on each PC
        job_id = f"hot-{i}"
        hot_flag.touch()
        try:
            heated(setup)
            ex.submit(worker, job_id, request(steps=3))
            paused = paused_or_end(events, job_id)
            host = "pc-" + worker.split("~")[1][:6]
            assert paused.progress["note"] == f"paused: {host}/GPU 0 at 90 °C, cooling"
            assert paused.progress["step"] == 0  # no step ran on the hot GPU
        finally:
            hot_flag.unlink()
        done = events.end_of(job_id)
        assert [(p["step"], p["start_c"], p["ended"]) for p in sidecar(done)["thermal_pauses"]] == [
            (0, 90, "cooled")]


def test_a_remote_job_resumed_after_its_last_step_pauses_on_a_hot_gpu(setup, hot_flag, node_dir,
                                                                       demo_pipe) -> None:
    """The PC kept the step checkpoint of an earlier attempt stopped after its last step (a worker
    killed in its decode): the retry has nothing left to denoise and must still wait for the GPU."""
    ex, events, _ = setup
    ex.split = "off"
    req = request(steps=3)
    stopped_after_its_last_step(demo_pipe, req, work_dir_of(node_outputs(node_dir), "retried"))
    hot_flag.touch()
    try:
        heated(setup)
        ex.submit(names(ex)[0], "retried", req)
        paused = paused_or_end(events, "retried")
        assert paused.progress["step"] == 3 and "90 °C" in paused.progress["note"]
    finally:
        hot_flag.unlink()
    record = sidecar(events.end_of("retried"))
    assert record["checkpoints"]["resumed_from_step"] == 3
    assert [(p["step"], p["ended"]) for p in record["thermal_pauses"]] == [(3, "cooled")]


def stopped_after_its_last_step(pipe: Any, req: GenerationRequest, work_dir: Path) -> None:
    """Leave in ``work_dir`` the step checkpoint a run of ``req`` keeps after its last step."""
    cancel = threading.Event()

    def stop(done: int) -> None:
        if done == req.steps:
            cancel.set()

    keep = StepCheckpoints(work_dir, request_key(req.to_dict()), budget=1.0)  # one after every step
    with pytest.raises(GenerationCancelled, match=f"after step {req.steps} of {req.steps}"):
        render(pipe, req, cancel=cancel, between_steps=stop, checkpoints=keep)


def heated(setup: Any) -> None:
    """Wait until every PC's worker has read their GPU at 90 °C (their heartbeats carry the
    samples their thermal guards use), so a job submitted next meets a hot GPU at its first step."""
    sampler = setup[2]
    since = time.monotonic()

    def hot() -> bool:  # readings taken after the flag was set, every one at 90 °C
        latest = sampler.latest()
        fresh = sampler.age_s  # seconds since each sample was taken
        return (len({s.host for s in latest}) >= 2
                and all(s.temperature_c == 90 and fresh(s) < time.monotonic() - since for s in latest))

    wait_for(hot, "every PC's GPU reading 90 °C")


def paused_or_end(events: Events, job_id: str) -> JobEvent:
    """The job's thermal-pause progress event; a job that ended without pausing fails at once."""
    event = events.until(lambda e: e.job_id == job_id and (e.kind in TERMINAL or (
        e.kind == "progress" and e.progress["stage"] == "paused")))
    assert event.kind == "progress", f"{job_id} ended ({event.kind}) without a thermal pause: {event}"
    return event


def hold(setup: Any, worker: str, job_id: str, hot_flag: Path) -> None:
    """Start ``job_id`` on ``worker`` and return once it waits in a thermal pause (its GPU is "hot"
    until the test removes ``hot_flag``), so what happens next hits a running job."""
    ex, events, _ = setup
    hot_flag.touch()
    heated(setup)
    ex.submit(worker, job_id, request(steps=3))
    paused_or_end(events, job_id)


def test_cancel_stops_a_remote_job(setup, hot_flag) -> None:
    ex, events, _ = setup
    ex.split = "off"
    try:
        hold(setup, names(ex)[0], "cancel-me", hot_flag)
        assert ex.cancel("cancel-me")
    finally:
        hot_flag.unlink()
    assert events.end_of("cancel-me").kind == "cancelled"
    assert not ex.cancel("cancel-me")


def test_missing_ray_is_named_with_the_install_command(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ClusterUnavailable, match="pip install"):
        import_ray()


def test_an_unreachable_cluster_is_named_with_the_fix() -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ClusterUnavailable, match=f"Nothing answers at 127.0.0.1:{port}.*ray start --head"):
        RayExecutor(f"127.0.0.1:{port}", Path("unused")).start(lambda e: None)
    with pytest.raises(ClusterUnavailable, match="HOST:PORT"):
        RayExecutor("my-pc", Path("unused")).start(lambda e: None)


def test_cluster_check_lists_every_node_with_matching_versions(setup) -> None:
    from wan_studio.cluster.check import check

    reports, problems = check("auto")
    assert len(reports) == 2 and len({tuple(r.versions.items()) for r in reports}) == 1
    assert problems == ["no node reports an NVIDIA GPU: check the driver (nvidia-smi) on each PC"]


def test_a_dead_worker_or_node_loses_the_job_which_finishes_elsewhere(setup, cluster, hot_flag, write_gate) -> None:
    ex, events, _ = setup
    ex.split = "off"
    # 1. The worker process dies mid-job: the job is lost, requeued, and the actor comes back.
    victim = names(ex)[1]
    hold(setup, victim, "killed", hot_flag)
    os.kill(next(w.pid for w in ex.workers() if w.name == victim), signal.SIGKILL)
    hot_flag.unlink()
    lost = events.end_of("killed")
    assert lost.kind == "lost" and victim in lost.error
    survivor = next(w.name for w in ex.idle_workers() if w.name != victim)
    assert run(ex, events, survivor, "killed", request(steps=3)).kind == "done"
    wait_for(lambda: any(w.name == victim and w.state == "idle" and w.restarts == 1 for w in ex.workers()),
             "the killed worker's actor back, idle")
    # 2. A whole node dies mid-job; once a node is back, it gets a worker again.
    node = loopback.add_node(cluster)
    wait_for(lambda: len(ex.idle_workers()) == 3, "a worker on the new node")
    third = next(w.name for w in ex.workers() if node.node_id.startswith(w.name.split("~")[1][:6]))
    hold(setup, third, "node-lost", hot_flag)
    # A PC switched off: its raylet and its worker processes die together (a worker whose raylet
    # alone died would still stream to the head for a while, which a real power loss never does).
    pid = next(w.pid for w in ex.workers() if w.name == third)
    cluster.remove_node(node, allow_graceful=False)
    os.kill(pid, signal.SIGKILL)
    hot_flag.unlink()
    assert events.end_of("node-lost").kind == "lost"
    assert run(ex, events, ex.idle_workers()[0].name, "node-lost", request(steps=3)).kind == "done"
    wait_for(lambda: third not in names(ex), "the dead node's worker dropped")
    loopback.add_node(cluster)
    wait_for(lambda: len(ex.idle_workers()) == 3, "a worker on the node that came back")
    # 3. A worker killed while it writes a finished job's mp4: the job is lost, not done, and no file
    # of it reaches the head; run again elsewhere it ends with one video.
    gate_file = Path(write_gate.folder) / "hold"
    gate_file.touch()
    before = write_gate.held()
    # An idle worker at the moment of submitting: on a busy machine a worker's actor can drop its
    # connection after the node loss above and be recreated (the executor says so: WorkerGone).
    taken: list[str] = []

    def submitted() -> bool:
        for w in ex.idle_workers():
            try:
                ex.submit(w.name, "killed-writing", request(steps=2, seed=23))
            except WorkerGone:
                continue
            taken.append(w.name)
            return True
        return False

    wait_for(submitted, "an idle worker to take the job")
    writer = taken[0]
    wait_for(lambda: write_gate.held() > before, "the job's write to be held")
    os.kill(next(w.pid for w in ex.workers() if w.name == writer), signal.SIGKILL)
    gate_file.unlink()
    lost = events.end_of("killed-writing")
    assert lost.kind == "lost" and not lost.outputs
    assert not [p for p in ex.outputs_dir.rglob("*-23-*")]
    again = run(ex, events, next(w.name for w in ex.idle_workers() if w.name != writer), "killed-writing",
                request(steps=2, seed=23))
    assert frames(again).shape == (5, 64, 64, 3)
    assert len([p for p in ex.outputs_dir.rglob("*-23-*.mp4")]) == 1
