"""A cold start says what it is doing: while a job waits for its model, its status text reads
"loading <model> N %" (bytes of the components read so far), then "placing …"; and a worker does not
prepare a model its RAM cannot hold."""

from __future__ import annotations

import threading
import time
from typing import Any

from wan_studio.catalog.specs import get_spec
from wan_studio.cluster.runtime import RuntimeConfig, WorkerRuntime
from wan_studio.engine.request import GenerationRequest
from wan_studio.memory import costs
from wan_studio.memory.hardware import GIB, Hardware
from wan_studio.memory.loaders import TinyLoader
from wan_studio.memory.manager import ModelManager
from wan_studio.services import Studio


class GatedLoader(TinyLoader):
    """The demo's parts, the VAE (read last) only once ``gate`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def load(self, spec: Any, name: str, storage: str) -> Any:
        if name == "vae":
            assert self.gate.wait(60), "the test never opened the gate"
        return super().load(spec, name, storage)


def test_a_job_waiting_for_its_model_says_how_far_the_load_is(settings: Any) -> None:
    loader = GatedLoader()
    studio = Studio.create(settings, manager=ModelManager(loader))
    try:
        job = studio.submit(GenerationRequest(prompt="a fox", model="demo", width=64, height=64, num_frames=5,
                                              steps=2, seed=1))
        deadline = time.monotonic() + 60
        while studio.queue.get(job.id).progress_text.startswith("loading Demo model") is False:
            assert time.monotonic() < deadline, studio.queue.get(job.id)
            time.sleep(0.01)
        # The text encoder and the transformer are read, the VAE is not: their share of the bytes.
        sizes = {c.name: costs.stored_bytes(c.params, "fp32") for c in get_spec("demo").components}
        share = round(100 * (sizes["text_encoder"] + sizes["transformer"]) / sum(sizes.values()))
        assert studio.queue.get(job.id).progress_text == f"loading Demo model {share} %"
        loader.gate.set()
        done = studio.queue.wait(job.id, timeout_s=120)
        assert done.status == "done", done.error
    finally:
        loader.gate.set()
        studio.close()


def test_a_worker_without_the_ram_for_the_default_model_does_not_prepare_it() -> None:
    config = RuntimeConfig(tiny_models=True, thermal=None,
                           prepare={"model": "demo", "width": 64, "height": 64, "num_frames": 5, "steps": 2})
    small = WorkerRuntime("w", config, hardware=Hardware((), 64 * GIB, 4096))
    note = small.prepare()
    assert note is not None and note.startswith("Demo model (tiny") and "not prepared" in note
    assert "GiB are free for this worker; it loads with the first job" in note and small.loaded() == []
    roomy = WorkerRuntime("w", config)
    assert (roomy.prepare() or "").startswith("prepared Demo model") and roomy.loaded() == ["demo"]
