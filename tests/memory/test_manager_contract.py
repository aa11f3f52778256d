"""The model manager's promises with components of real sizes on the meta device (no weights held,
so each test takes milliseconds): what is kept, shared, released and dropped, and what a job's status
line says while its model loads. tests/memory/test_manager.py runs the same rules on tiny pipelines."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Any

import pytest
import torch

from wan_studio.catalog.specs import DEMO, S2V_14B, TI2V_5B, ModelSpec
from wan_studio.memory.manager import (LoadStatus, ManagerError, ModelManager, component_key, default_share_key,
                                       module_bytes)
from wan_studio.memory.plan import Placement, Plan

A, B = (replace(TI2V_5B, key=f"ti2v-{name}", title=f"Wan2.2 TI2V-{name.upper()} (fine-tune)") for name in "ab")


class Loader:
    """Meta-device components; records what it read and can fail on one component."""

    def __init__(self, fail_on: str | None = None, during: Any = None) -> None:
        self.loaded: list[str] = []
        self.fail_on, self.during = fail_on, during

    def load(self, spec: ModelSpec, name: str, storage: str) -> Any:
        if self.during is not None:
            self.during(spec, name)
        if f"{spec.key}/{name}" == self.fail_on:
            raise OSError(f"cannot read {name}")
        c = next(c for c in spec.components if c.name == name)
        module = torch.nn.Module()
        dtype = torch.float32 if storage == "fp32" else torch.bfloat16
        module.weight = torch.nn.Parameter(torch.empty(c.params, dtype=dtype, device="meta"), requires_grad=False)
        self.loaded.append(f"{spec.key}/{name}")
        return module

    def assemble(self, spec: ModelSpec, modules: dict[str, Any]) -> Any:
        return {"model": spec.key, **modules}


def plan(spec: ModelSpec, device: str = "cpu", label: str = "cpu", storage: str = "bf16") -> Plan:
    placements = tuple(Placement(c.name, device, "fp32" if c.dtype == "fp32" else storage,
                                 "cpu" if device == "cpu" else "resident") for c in spec.components)
    return Plan(spec.key, label, placements, vae_tiling=False, peak_vram=(), host_ram_bytes=0, step_s=0.0,
                job_s=0.0, relative_speed=1.0)


def manager(loader: Loader | None = None, budget: int | None = None, fail_apply: bool = False):
    released: list[str] = []

    def apply(pipe: Any, p: Plan) -> None:
        if fail_apply:
            raise RuntimeError("CUDA out of memory")

    loader = loader or Loader()
    m = ModelManager(loader, budget_bytes=budget, apply=apply, release=lambda pipe: released.append(pipe["model"]))
    return m, loader, released


def use(m: ModelManager, spec: ModelSpec, p: Plan | None = None) -> None:
    with m.use(spec, p or plan(spec)):
        pass


def test_the_status_line_says_how_far_loading_has_come() -> None:
    assert LoadStatus("Wan2.2 TI2V-5B", 200, 92).describe() == "loading Wan2.2 TI2V-5B 46 %"
    assert LoadStatus("Wan2.2 TI2V-5B", 0).describe() == "loading Wan2.2 TI2V-5B 100 %"
    assert LoadStatus("Wan2.2 TI2V-5B", 10, 3, stage="placing").describe() == \
        "placing Wan2.2 TI2V-5B for this job (pinning, moving to the GPU)"


def test_while_a_model_loads_its_status_counts_the_bytes_read_and_is_gone_after() -> None:
    seen: list[str] = []
    m: ModelManager | None = None

    def during(spec: ModelSpec, name: str) -> None:
        status = m.status(spec.key)
        seen.append(f"{status.describe()} {status.done_bytes == 0}")

    m, _, _ = manager(Loader(during=during))
    use(m, A)
    # bytes at each part's storage: the 10 GB bf16 transformer, the 11.36 GB bf16 UMT5, then the
    # 2.82 GB fp32 VAE, of 24.18 GB in all
    assert seen == ["loading Wan2.2 TI2V-A 0 % True", "loading Wan2.2 TI2V-A 41 % False",
                    "loading Wan2.2 TI2V-A 88 % False"]
    assert m.status(A.key) is None


def test_the_same_plan_reuses_the_pipeline_and_a_new_plan_reassembles_from_the_cache() -> None:
    m, loader, released = manager()
    use(m, A)
    use(m, A)
    assert loader.loaded.count("ti2v-a/transformer") == 1 and released == [] and m.loads == 3
    use(m, A, plan(A, "cuda:0", label="another"))
    assert released == ["ti2v-a"] and m.loaded() == {"ti2v-a": "another"} and m.loads == 3


def test_models_share_identical_parts_and_take_them_over_from_an_idle_pipeline() -> None:
    m, loader, released = manager()
    use(m, A)
    use(m, B)  # B takes A's text encoder and VAE: A's idle pipeline is released first
    assert loader.loaded == ["ti2v-a/transformer", "ti2v-a/text_encoder", "ti2v-a/vae", "ti2v-b/transformer"]
    assert released == ["ti2v-a"] and list(m.loaded()) == ["ti2v-b"]
    assert set(m.cached()) == {("umt5-xxl", "bf16"), ("wan2.2-vae", "fp32"), ("ti2v-a/transformer", "bf16"),
                               ("ti2v-b/transformer", "bf16")}


def test_a_loader_that_knows_two_models_read_different_files_keeps_their_parts_apart() -> None:
    class OwnCopies(Loader):
        def share_key(self, spec: ModelSpec, name: str) -> str | None:
            return "one-vae" if name == "vae" else None  # e.g. single files: only the VAE is the same file

    m, loader, _ = manager(OwnCopies())
    use(m, A)
    use(m, B)
    assert loader.loaded == ["ti2v-a/vae", "ti2v-a/text_encoder", "ti2v-a/transformer",
                             "ti2v-b/text_encoder", "ti2v-b/transformer"]  # B reads its own encoder
    assert set(m.cached()) == {("ti2v-a/text_encoder", "bf16"), ("ti2v-a/transformer", "bf16"),
                               ("ti2v-b/text_encoder", "bf16"), ("ti2v-b/transformer", "bf16"), ("one-vae", "fp32")}


def test_a_new_plan_on_a_gpu_releases_the_idle_pipelines_on_that_gpu_only() -> None:
    m, _, released = manager()
    demo_s2v = replace(DEMO, key="other-demo")
    use(m, demo_s2v, plan(demo_s2v, "cuda:1"))
    use(m, A, plan(A, "cuda:0"))
    assert released == [] and set(m.loaded()) == {"other-demo", "ti2v-a"}
    use(m, DEMO, plan(DEMO, "cuda:0"))
    assert released == ["ti2v-a"] and set(m.loaded()) == {"other-demo", "demo"}


def test_the_least_recently_used_unlocked_component_goes_first_and_a_held_one_never() -> None:
    demo_bytes = sum(module_bytes(Loader().load(DEMO, c.name, "fp32" if c.dtype == "fp32" else "bf16"))
                     for c in DEMO.components)
    m, _, _ = manager(budget=demo_bytes)
    other = replace(DEMO, key="demo-two")
    models = lambda: sorted({k[0].split("/")[0] for k in m.cached()})  # noqa: E731
    use(m, DEMO)
    use(m, other)  # over budget: the parts used longest ago go
    assert models() == ["demo-two"]
    use(m, DEMO)
    assert models() == ["demo"]
    held, done = threading.Event(), threading.Event()

    def hold() -> None:
        with m.use(DEMO, plan(DEMO)):
            held.set()
            done.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    held.wait(10)
    use(m, other)  # over budget, but DEMO's parts are in use: they stay
    assert models() == ["demo", "demo-two"]
    done.set()
    t.join(10)


def test_a_failed_load_leaves_nothing_half_loaded_and_the_next_try_loads_afresh() -> None:
    m, loader, _ = manager(Loader(fail_on="ti2v-a/transformer"))
    with pytest.raises(OSError, match="cannot read transformer"):
        use(m, A)
    assert m.cached() == {} or all(k[0] != "ti2v-a/transformer" for k in m.cached())
    assert m.loaded() == {} and m.status(A.key) is None
    loader.fail_on = None
    use(m, A)
    assert m.loaded() == {"ti2v-a": "cpu"}


def test_a_failed_placement_releases_the_pipeline_and_drops_what_it_loaded() -> None:
    m, _, released = manager(fail_apply=True)
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        use(m, A)
    assert released == ["ti2v-a"] and m.cached() == {} and m.loaded() == {}


def test_a_failed_placement_gives_back_the_shared_parts_it_took_to_the_model_they_came_from() -> None:
    """B takes A's cached encoder and VAE, then its placement fails: A's next job assembles from
    the cache at once (nothing read again, nothing waits on B), and freeing memory frees them."""
    failing: set[str] = set()

    def apply(pipe: Any, p: Plan) -> None:
        if pipe["model"] in failing:
            raise RuntimeError("CUDA out of memory")

    loader = Loader()
    m = ModelManager(loader, apply=apply, release=lambda pipe: None)
    use(m, A)
    failing.add(B.key)
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        use(m, B)
    assert set(m.cached()) == {("ti2v-a/transformer", "bf16"), ("umt5-xxl", "bf16"), ("wan2.2-vae", "fp32")}
    again = threading.Thread(target=use, args=(m, A), daemon=True)
    again.start()
    again.join(10)
    assert not again.is_alive(), "A's next job waits on parts the failed assembly still holds"
    assert m.loaded() == {"ti2v-a": "cpu"} and loader.loaded.count("ti2v-a/transformer") == 1
    assert loader.loaded.count("ti2v-a/text_encoder") == 1  # the shared encoder was not read again
    assert sorted(m.unload_all()) == [("ti2v-a/transformer", "bf16"), ("umt5-xxl", "bf16"),
                                      ("wan2.2-vae", "fp32")] and m.cached() == {}


def test_a_job_waiting_for_a_busy_model_does_not_hold_up_a_job_of_another_model() -> None:
    m, _, _ = manager()
    other = replace(DEMO, key="demo-two")  # no part in common with DEMO
    held, done = threading.Event(), threading.Event()

    def hold() -> None:
        with m.use(DEMO, plan(DEMO)):
            held.set()
            done.wait(30)

    first = threading.Thread(target=hold, daemon=True)
    first.start()
    assert held.wait(10)
    second = threading.Thread(target=use, args=(m, DEMO), daemon=True)  # waits for the first job
    second.start()
    waiting = lambda: any(lock.locked() for lock in list(m._model_locks.values()))  # noqa: E731
    deadline = time.monotonic() + 10
    while not waiting() and time.monotonic() < deadline:
        time.sleep(0.01)  # poll: the second job is inside the manager, waiting for DEMO
    assert waiting()
    third = threading.Thread(target=use, args=(m, other), daemon=True)
    third.start()
    third.join(10)
    try:
        assert not third.is_alive(), "a job of another model waits behind the job waiting for DEMO"
        assert second.is_alive() and set(m.loaded()) == {"demo", "demo-two"}
    finally:
        done.set()
        first.join(10)
        second.join(10)
    assert not second.is_alive()


def test_without_a_plan_the_managers_own_default_plan_places_the_model() -> None:
    m = ModelManager(Loader(), default_plan=lambda spec: plan(spec, label="the default"),
                     apply=lambda pipe, p: None, release=lambda pipe: None)
    with m.use(A) as pipe:
        assert pipe["model"] == "ti2v-a"
    assert m.loaded() == {"ti2v-a": "the default"}


def test_a_nested_use_in_one_thread_is_refused_in_words() -> None:
    m, _, _ = manager()
    with m.use(A, plan(A)):
        with pytest.raises(ManagerError, match=r"this thread already holds \['ti2v-a'\]; release it before "
                                               r"using ti2v-b"):
            with m.use(B, plan(B)):
                pass
    use(m, B)  # once released, the same thread may use another model


def test_unload_drops_only_the_models_own_idle_parts() -> None:
    m, _, released = manager()
    use(m, A)
    use(m, B)
    assert m.unload("ti2v-a") == [("ti2v-a/transformer", "bf16")]
    assert ("umt5-xxl", "bf16") in m.cached()  # shared: kept for B
    with m.use(B, plan(B)):
        assert m.unload("ti2v-b") == []  # in use: nothing goes
        assert m.unload_all() == []
    assert m.unload("ti2v-b") == [("ti2v-b/transformer", "bf16")] and released == ["ti2v-a", "ti2v-b"]
    assert sorted(m.unload_all()) == [("umt5-xxl", "bf16"), ("wan2.2-vae", "fp32")] and m.cached() == {}


def test_unload_all_keeps_a_pipeline_in_use_and_drops_the_idle_ones() -> None:
    m, _, released = manager()
    other = replace(DEMO, key="demo-two")
    use(m, other)
    with m.use(DEMO, plan(DEMO)):
        dropped = m.unload_all()
        assert released == ["demo-two"] and all(k[0].startswith("demo-two/") for k in dropped)
        assert list(m.loaded()) == ["demo"] and all(k[0].startswith("demo/") for k in m.cached())


def test_component_keys_follow_the_plans_storage_and_the_catalogs_sharing() -> None:
    assert component_key(A, "transformer", plan(A, storage="fp8")) == ("ti2v-a/transformer", "fp8")
    assert component_key(A, "text_encoder", plan(A), "umt5-xxl") == ("umt5-xxl", "bf16")
    empty = replace(plan(A), placements=())
    assert component_key(A, "vae", empty) == ("ti2v-a/vae", "fp32")  # not placed: its own dtype
    assert default_share_key(A, "text_encoder") == "umt5-xxl"
    assert default_share_key(S2V_14B, "text_encoder") is None  # our own S2V class reads its own copies
    assert module_bytes("not a module") == 0
    assert module_bytes(torch.nn.Linear(4, 2)) == (4 * 2 + 2) * 4


class WholePipe:
    """A pipeline class as diffusers shapes one: modules and other parts by name, ``components``."""

    built = 0

    def __init__(self, **parts: Any) -> None:
        self.parts = parts
        self.progress: dict[str, Any] = {}

    @property
    def components(self) -> dict[str, Any]:
        return dict(self.parts)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["parts"][name]
        except KeyError:
            raise AttributeError(name) from None

    def set_progress_bar_config(self, **kw: Any) -> None:
        self.progress = kw


def build_whole(spec: ModelSpec) -> WholePipe:
    WholePipe.built += 1
    return WholePipe(tokenizer="tok", scheduler="sched",
                     **{c.name: torch.nn.Linear(2, 2) for c in spec.components})


@pytest.mark.parametrize("returns_tuple", [False, True])
def test_a_loader_of_whole_pipelines_is_cached_by_parts(returns_tuple: bool) -> None:
    WholePipe.built = 0
    load = (lambda spec: (build_whole(spec), "cpu")) if returns_tuple else build_whole
    m = ModelManager(load, apply=lambda pipe, p: None, release=lambda pipe: None)
    with m.use(DEMO, plan(DEMO)) as pipe:
        assert isinstance(pipe, WholePipe) and pipe.progress == {"disable": True}
        assert (pipe.parts["tokenizer"], pipe.parts["scheduler"]) == ("tok", "sched")  # kept from the build
        assert all(isinstance(pipe.parts[c.name], torch.nn.Linear) for c in DEMO.components)
        first = pipe.parts["transformer"]
    assert WholePipe.built == 1 and m.loads == 3  # one build for the three parts
    with m.use(DEMO, plan(DEMO, "cuda:0")) as pipe:  # another placement: the cached parts, no build
        assert pipe.parts["transformer"] is first
    assert WholePipe.built == 1
    m.unload_all()
    with m.use(DEMO, plan(DEMO)) as pipe:
        assert pipe.parts["transformer"] is not first
    assert WholePipe.built == 2


def test_a_whole_pipeline_part_planned_as_fp8_is_stored_as_fp8() -> None:
    m = ModelManager(build_whole, apply=lambda pipe, p: None, release=lambda pipe: None)
    fp8 = replace(plan(DEMO), placements=tuple(replace(p, storage="fp8") if p.component == "transformer" else p
                                               for p in plan(DEMO).placements))
    with m.use(DEMO, fp8) as pipe:
        assert pipe.parts["transformer"].weight.dtype == torch.float8_e4m3fn
        assert pipe.parts["vae"].weight.dtype == torch.float32
    assert m.cached()[("demo/transformer", "fp8")] == module_bytes(pipe.parts["transformer"]) < (2 * 2 + 2) * 4


def test_a_whole_pipeline_model_whose_parts_another_model_holds_is_built_around_them() -> None:
    """Two models reading identical files for every part: the second one's pipeline is made of the
    first one's cached parts (its own tokenizer and scheduler come from one build of its class)."""
    shared = tuple(replace(c, share_key=f"same-{c.name}") for c in DEMO.components)
    first, second = (replace(DEMO, key=key, diffusers_layout=True, components=shared) for key in ("one", "two"))
    WholePipe.built = 0
    m = ModelManager(build_whole, apply=lambda pipe, p: None, release=lambda pipe: None)
    with m.use(first, plan(first)) as pipe:
        parts = dict(pipe.parts)
    with m.use(second, plan(second)) as pipe:
        assert all(pipe.parts[c.name] is parts[c.name] for c in DEMO.components) and m.loads == 3
        assert (pipe.parts["tokenizer"], pipe.parts["scheduler"]) == ("tok", "sched")
    assert WholePipe.built == 2


def test_without_a_request_a_model_is_planned_at_its_default_size_on_this_machine(monkeypatch, tmp_path) -> None:
    from wan_studio.memory import hardware, manager as manager_module, planner
    from wan_studio.memory.loaders import FolderLoader
    from wan_studio.memory.plan import Workload

    asked: list[tuple[str, Workload]] = []
    monkeypatch.setattr(hardware, "detect", lambda: "this machine")
    monkeypatch.setattr(planner, "choose", lambda spec, work, hw: asked.append((spec.key, work, hw)) or "plan")
    assert manager_module.default_plan(TI2V_5B) == "plan" and manager_module.default_plan(S2V_14B) == "plan"
    # 121 frames is 4k+1 as it is; S2V's 80 becomes 81 (the transformer needs 4k+1)
    assert asked == [("ti2v-5b", Workload(1280, 704, 121, 50), "this machine"),
                     ("s2v-14b", Workload(1024, 704, 81, 40), "this machine")]
    loader = manager_module.default_loader(tmp_path / "models")
    assert isinstance(loader, FolderLoader) and loader.models_dir == tmp_path / "models"
