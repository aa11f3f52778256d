"""The JSON routes for scripts (``/api/v1/jobs``) on a real Gradio server on 127.0.0.1, over plain HTTP."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.ui.test_jobs_api import free_port
from wan_studio.services import Studio
from wan_studio.settings import Settings

TINY = {"width": 64, "height": 64, "num_frames": 5, "steps": 2}


@contextmanager
def serve(root: Path, accounts: dict[str, str] | None = None, **settings: Any) -> Iterator[tuple[Studio, str]]:
    """The app as ``app.py`` serves it; ``accounts`` (name -> password, role user) turn the login on."""
    from wan_studio.accounts import add_account
    from wan_studio.ui import rest
    from wan_studio.ui.blocks import build_app, launch_kwargs

    if accounts:
        settings["accounts_file"] = root / "accounts.txt"
        for name, password in accounts.items():
            add_account(settings["accounts_file"], name, password)
    studio = Studio.create(Settings(models_dir=root / "models", outputs_dir=root / "outputs", **settings))
    studio.start()
    app = build_app(studio)
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
               auth=studio.accounts.check if studio.accounts else None, **launch_kwargs(studio))
    rest.mount(app, studio)
    try:
        yield studio, f"http://127.0.0.1:{port}/"
    finally:
        app.close()
        studio.close()


@pytest.fixture(scope="module")
def open_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Studio, str]]:
    with serve(tmp_path_factory.mktemp("rest"), workers=1, max_queue=60) as s:
        yield s


def test_submit_runs_the_job_and_status_follows_it(open_app: tuple[Studio, str]) -> None:
    studio, url = open_app
    with httpx.Client(base_url=url, timeout=30) as http:
        r = http.post("api/v1/jobs", json={"prompt": "a red fox in snow", "seed": 7, "settings": TINY})
        assert r.status_code == 201, r.text
        job_id = r.json()["job_id"]
        deadline = time.monotonic() + 120
        while (view := http.get(f"api/v1/jobs/{job_id}").json())["status"] != "done":
            assert view["status"] in ("queued", "running"), view
            assert time.monotonic() < deadline, view
            time.sleep(0.2)
    assert view["request"]["prompt"] == "a red fox in snow" and view["request"]["seed"] == 7
    assert view["request"]["width"] == 64 and view["mine"] is True
    assert view["preview_url"] is None  # the live preview exists only while the job runs
    assert Path(studio.queue.get(job_id).outputs[0]).exists()


def test_every_api_field_of_the_table_reaches_the_job(open_app: tuple[Studio, str], tmp_path: Path) -> None:
    from tests.fields import files
    from tests.ui.test_named_endpoints import every_api_setting

    studio, url = open_app
    settings = every_api_setting(files(tmp_path))
    with httpx.Client(base_url=url, timeout=30) as http:
        r = http.post("api/v1/jobs", json={"prompt": "a kite named by the table", "settings": settings})
    assert r.status_code == 201, r.text
    stored = studio.queue.get(r.json()["job_id"]).request
    assert {k: stored[k] for k in settings} == settings


def test_bad_submissions_get_a_clear_error_and_store_nothing(open_app: tuple[Studio, str]) -> None:
    studio, url = open_app
    before = len(studio.queue.store.list())
    cases = [
        (b"{not json", 400, "not valid JSON"),
        (b'["a list"]', 400, "must be a JSON object"),
        (b'{"prompt": "x", "colour": "red"}', 400, "unknown field(s) colour"),
        (b'{"prompt": "x", "preset": "nope"}', 400, "unknown preset 'nope'"),
        (b'{"prompt": "x", "settings": {"image": "/etc/passwd"}}', 400, "may only set"),
        (b'{"prompt": "x", "settings": {"width": 63}}', 400, "width"),
        (b'{"prompt": "x", "seed": 1.5}', 400, "seed must be a whole number"),
        (b'{"prompt": ""}', 400, "prompt"),
        (b'{"prompt": "' + b"x" * 300_000 + b'"}', 413, "larger than 256 KiB"),
    ]
    with httpx.Client(base_url=url, timeout=30) as http:
        for body, code, words in cases:
            r = http.post("api/v1/jobs", content=body, headers={"content-type": "application/json"})
            assert (r.status_code, words in r.json()["error"]) == (code, True), (body[:60], r.text[:300])
        assert http.get("api/v1/jobs/nosuchjob").status_code == 404
    assert len(studio.queue.store.list()) == before


def test_fifty_concurrent_scripts_each_get_their_own_job(tmp_path: Path) -> None:
    with serve(tmp_path, workers=0, max_queue=60) as (studio, url):
        def one(i: int) -> str:
            with httpx.Client(base_url=url, timeout=60) as http:
                r = http.post("api/v1/jobs", json={"prompt": f"script {i}", "seed": i, "settings": TINY})
                assert r.status_code == 201, r.text
                return r.json()["job_id"]

        with ThreadPoolExecutor(50) as pool:
            ids = list(pool.map(one, range(50)))
        jobs = studio.queue.store.list()
        assert len(set(ids)) == 50 and {j.id for j in jobs} == set(ids)
        assert sorted(j.request["seed"] for j in jobs) == list(range(50))
        # The queue holds at most 60: the 61st submission is refused with the reason and a 429.
        with httpx.Client(base_url=url, timeout=30) as http:
            for i in range(10):
                assert http.post("api/v1/jobs", json={"prompt": "more", "settings": TINY}).status_code == 201
            full = http.post("api/v1/jobs", json={"prompt": "one too many", "settings": TINY})
        assert full.status_code == 429 and "queue is full" in full.json()["error"]
        assert len(studio.queue.store.list()) == 60


def test_with_a_login_the_routes_need_it_and_jobs_belong_to_their_user(tmp_path: Path) -> None:
    with serve(tmp_path, accounts={"ann": "ann-password", "bob": "bob-password"}, workers=0) as (studio, url):
        with httpx.Client(base_url=url, timeout=30) as anon:
            r = anon.post("api/v1/jobs", json={"prompt": "sneaky", "settings": TINY})
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
        with httpx.Client(base_url=url, timeout=30, auth=("ann", "wrong")) as wrong:
            assert wrong.post("api/v1/jobs", json={"prompt": "guess", "settings": TINY}).status_code == 401
        assert studio.queue.store.list() == []
        with httpx.Client(base_url=url, timeout=30, auth=("ann", "ann-password")) as ann:
            job_id = ann.post("api/v1/jobs", json={"prompt": "ann's secret fox", "settings": TINY}).json()["job_id"]
            assert ann.get(f"api/v1/jobs/{job_id}").json()["request"]["prompt"] == "ann's secret fox"
        assert studio.queue.get(job_id).user == "ann"
        with httpx.Client(base_url=url, timeout=30) as bob:  # the browser's way: log in once, keep the cookie
            assert bob.post("login", data={"username": "bob", "password": "bob-password"}).status_code == 200
            seen = bob.get(f"api/v1/jobs/{job_id}").json()
            assert "prompt" not in seen["request"] and seen["mine"] is False
            refused = bob.delete(f"api/v1/jobs/{job_id}")
            assert refused.status_code == 403 and "belongs to another user" in refused.json()["error"]
        with httpx.Client(base_url=url, timeout=30, auth=("ann", "ann-password")) as ann:
            assert ann.delete(f"api/v1/jobs/{job_id}").json()["status"] == "cancelled"


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                       max_size=4), max_leaves=12)
BODIES = st.fixed_dictionaries({}, optional={
    "prompt": st.text(max_size=200) | JSON_VALUES, "preset": st.sampled_from(["demo-fast", "beginner", "x"]) | JSON_VALUES,
    "seed": st.integers() | JSON_VALUES, "priority": st.integers(-10**20, 10**20) | JSON_VALUES,
    "settings": st.dictionaries(st.sampled_from(["width", "height", "num_frames", "steps", "fps", "model", "image"]),
                                st.integers(-10**6, 10**6) | JSON_VALUES, max_size=4) | JSON_VALUES})


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(body=BODIES | JSON_VALUES)
def test_any_json_body_is_queued_or_refused_with_a_reason_never_a_server_error(open_app: tuple[Studio, str],
                                                                              body: Any) -> None:
    _, url = open_app
    with httpx.Client(base_url=url, timeout=30) as http:
        r = http.post("api/v1/jobs", json=body)
    assert r.status_code in (201, 400, 429), r.text[:300]
    if r.status_code != 201:
        assert r.json()["error"].strip()
