"""The model manager with real tiny pipelines: sharing, LRU, locks, unload, threads, failures."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from tests.memory.helpers import cpu_plan, run_frames
from wan_studio.catalog.specs import DEMO, I2V_A14B, T2V_A14B, TI2V_5B, ModelSpec
from wan_studio.memory.loaders import TinyLoader
from wan_studio.memory.manager import ManagerError, ModelManager


def test_a14b_models_share_text_encoder_and_vae() -> None:
    m = ModelManager(TinyLoader())
    with m.use(T2V_A14B, cpu_plan(T2V_A14B)) as pipe:
        t2v_encoder, t2v_vae = pipe.text_encoder, pipe.vae
        assert run_frames(pipe, T2V_A14B).shape == (5, 64, 64, 3)
    with m.use(I2V_A14B, cpu_plan(I2V_A14B)) as pipe:
        assert pipe.text_encoder is t2v_encoder and pipe.vae is t2v_vae
        assert pipe.transformer.config.in_channels == 36
        assert run_frames(pipe, I2V_A14B).shape == (5, 64, 64, 3)
    assert m.loads == 6  # 2 + 2 experts, one UMT5, one Wan2.1 VAE
    assert ("umt5-xxl", "bf16") in m.cached() and ("wan2.1-vae", "fp32") in m.cached()


def test_same_plan_reuses_pipeline_and_new_plan_reuses_components() -> None:
    m = ModelManager(TinyLoader())
    plain, grouped = cpu_plan(DEMO), cpu_plan(DEMO, offload="group_offload")
    with m.use(DEMO, plain) as first:
        a = run_frames(first, DEMO)
    with m.use(DEMO, plain) as again:
        assert again is first
    with m.use(DEMO, grouped) as other:
        assert other is not first
        b = run_frames(other, DEMO)
    assert m.loads == 3 and m.loaded() == {"demo": grouped.label}
    np.testing.assert_array_equal(a, b)


def test_lru_evicts_least_recently_used_but_never_a_locked_component() -> None:
    probe = ModelManager(TinyLoader())
    with probe.use(DEMO, cpu_plan(DEMO)):
        pass
    demo_bytes = sum(probe.cached().values())
    m = ModelManager(TinyLoader(), budget_bytes=demo_bytes + 1000)
    with m.use(DEMO, cpu_plan(DEMO)):
        pass
    with m.use(TI2V_5B, cpu_plan(TI2V_5B)):
        pass
    assert not any(k[0].startswith("demo/") for k in m.cached())  # evicted: least recently used

    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with m.use(DEMO, cpu_plan(DEMO)):
            holding.set()
            release.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    assert holding.wait(60)
    with m.use(T2V_A14B, cpu_plan(T2V_A14B)):
        pass
    assert any(k[0].startswith("demo/") for k in m.cached())  # locked: kept over budget
    release.set()
    t.join(30)


def test_unload_model_keeps_shared_parts_and_unload_all_keeps_models_in_use() -> None:
    m = ModelManager(TinyLoader())
    for spec in (T2V_A14B, I2V_A14B):
        with m.use(spec, cpu_plan(spec)):
            pass
    dropped = m.unload("t2v-a14b")
    assert sorted(k[0] for k in dropped) == ["t2v-a14b/transformer", "t2v-a14b/transformer_2"]
    assert ("umt5-xxl", "bf16") in m.cached()
    with m.use(DEMO, cpu_plan(DEMO)):
        m.unload_all()
        assert {k[0] for k in m.cached()} == {"demo/transformer", "demo/text_encoder", "demo/vae"}
    assert len(m.unload_all()) == 3 and m.cached() == {}


def test_concurrent_use_from_threads_is_correct_and_loads_each_part_once() -> None:
    m = ModelManager(TinyLoader())
    specs = [T2V_A14B, I2V_A14B, DEMO, T2V_A14B, I2V_A14B, DEMO]
    outputs: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(i: int, spec: ModelSpec) -> None:
        try:
            with m.use(spec, cpu_plan(spec)) as pipe:
                outputs[i] = run_frames(pipe, spec)
        except BaseException as e:  # collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i, s)) for i, s in enumerate(specs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert m.loads == 9  # demo 3 + T2V experts 2 + I2V experts 2 + UMT5 + Wan2.1 VAE
    for i in range(3):  # the same model and seed give the same frames, whoever ran first
        np.testing.assert_allclose(outputs[i], outputs[i + 3], atol=1e-6)


class FailingLoader(TinyLoader):
    """Fails to read one component while ``fail`` is set."""

    def __init__(self, fail: str) -> None:
        super().__init__()
        self.fail: str | None = fail

    def load(self, spec: ModelSpec, name: str, storage: str) -> Any:
        if self.fail == f"{spec.key}/{name}":
            raise OSError(f"disk read error in {name}")
        return super().load(spec, name, storage)


def test_failed_load_leaves_no_half_loaded_entry() -> None:
    loader = FailingLoader("i2v-a14b/transformer_2")
    m = ModelManager(loader)
    with m.use(T2V_A14B, cpu_plan(T2V_A14B)):
        pass
    before = set(m.cached())
    with pytest.raises(OSError, match="disk read error"):
        with m.use(I2V_A14B, cpu_plan(I2V_A14B)):
            pass
    assert set(m.cached()) == before  # i2v's first expert, read before the failure, is gone too
    assert "i2v-a14b" not in m.loaded()
    loader.fail = None
    with m.use(I2V_A14B, cpu_plan(I2V_A14B)) as pipe:
        assert run_frames(pipe, I2V_A14B).shape == (5, 64, 64, 3)
    assert len(m.unload_all()) == 6  # nothing was left locked by the failure


def test_failed_placement_drops_new_parts_and_unlocks_shared_ones() -> None:
    calls = {"n": 0}

    def apply_fails_for_i2v(pipe: Any, plan: Any) -> None:
        calls["n"] += 1
        if plan.model == "i2v-a14b":
            raise RuntimeError("could not place")

    m = ModelManager(TinyLoader(), apply=apply_fails_for_i2v)
    with m.use(T2V_A14B, cpu_plan(T2V_A14B)):
        pass
    with pytest.raises(RuntimeError, match="could not place"):
        with m.use(I2V_A14B, cpu_plan(I2V_A14B)):
            pass
    assert not any(k[0].startswith("i2v-a14b/") for k in m.cached())
    assert m.loaded() == {}
    assert len(m.unload_all()) == 4


def test_nested_use_in_one_thread_is_refused() -> None:
    m = ModelManager(TinyLoader())
    with m.use(DEMO, cpu_plan(DEMO)):
        with pytest.raises(ManagerError, match="already holds"):
            with m.use(TI2V_5B, cpu_plan(TI2V_5B)):
                pass


def test_speech_to_video_pipeline_is_cached_by_parts_and_can_store_fp8() -> None:
    import torch

    from wan_studio.catalog.specs import DEMO_S2V

    m = ModelManager(TinyLoader())
    with m.use(DEMO_S2V, cpu_plan(DEMO_S2V)) as pipe:
        assert type(pipe).__name__ == "S2VPipeline"
        encoder = pipe.text_encoder
    with m.use(T2V_A14B, cpu_plan(T2V_A14B)) as a14b:
        assert a14b.text_encoder is not encoder  # our own pipeline never lends its parts to diffusers'
    with m.use(DEMO_S2V, cpu_plan(DEMO_S2V, storage="fp8")) as pipe:
        assert pipe.text_encoder is encoder  # the new plan re-used the cached encoder
        weights = [p for n, p in pipe.transformer.named_parameters() if p.dim() == 2 and "norm" not in n]
        assert any(p.dtype == torch.float8_e4m3fn for p in weights)
