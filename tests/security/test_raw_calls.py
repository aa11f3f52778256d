"""Hand-made HTTP bodies against a real server: every malformed call answers 4xx with a sentence,
never 5xx; text that is not valid Unicode is refused before it is stored, and a bad row already in
the database never breaks the job list or a status request for anyone."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from tests.security.conftest import PASSWORDS, AccountsServer
from wan_studio.jobs.store import NewJob

TINY = json.dumps({"width": 64, "height": 64, "num_frames": 5, "steps": 2})
GOOD = {"submit": ["a fox in snow", "demo-fast", 1, TINY, 0], "job_status": ["JOB"], "cancel_job": ["JOB"],
        "list_jobs": ["", 10], "job_result": ["JOB"]}
# What a careless or hostile script sends in place of a value: raw JSON so nothing is cleaned on the way.
BAD_VALUES = ['{"a": 1}', '["x"]', '"abc"', "null", "-1", "true", '"\\ud800"', '"a\\u0000b"', "1e308",
              '{"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}']


@pytest.fixture(scope="module")
def http(idle_server: AccountsServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=idle_server.url, timeout=60) as c:
        assert c.post("login", data={"username": "root", "password": PASSWORDS["root"]}).status_code == 200
        yield c


@pytest.fixture(scope="module")
def job_id(idle_server: AccountsServer) -> str:
    client = Client(idle_server.url, auth=idle_server.auth("root"), verbose=False)
    return str(client.predict(*GOOD["submit"], api_name="/submit"))


def raw_post(http: httpx.Client, path: str, body: str) -> httpx.Response:
    return http.post(path, content=body.encode("utf-8"), headers={"Content-Type": "application/json"})


def assert_refused_in_words(r: httpx.Response, what: str) -> None:
    assert 400 <= r.status_code < 500, (what, r.status_code, r.text)
    body = r.json()
    message = body.get("error") if isinstance(body, dict) and "error" in body else body.get("detail")
    assert message and isinstance(message, (str, list)), (what, r.text)


def stream_of(http: httpx.Client, name: str, event_id: str) -> str:
    return http.get(f"gradio_api/call/{name}/{event_id}").text


@pytest.mark.parametrize("route", ["run", "call"])
def test_bodies_that_are_not_calls_are_refused_in_words(http: httpx.Client, route: str) -> None:
    for name in GOOD:
        for body in ["", "not json", "{}", '{"data": "x"}', '{"data": {"a": 1}}', '{"data": []}', "[1, 2]",
                     '{"data": [1, 2, 3, 4, 5, 6, 7, 8]}']:
            assert_refused_in_words(raw_post(http, f"gradio_api/{route}/{name}", body), f"{route}/{name} {body}")


def test_missing_values_are_named(http: httpx.Client) -> None:
    r = raw_post(http, "gradio_api/run/submit", '{"data": ["a fox"]}')
    assert r.status_code == 400
    assert r.json()["error"] == "/submit takes 5 values (prompt, preset, seed, settings_json, priority); 1 was sent"


@pytest.mark.parametrize("route", ["run", "call"])
def test_a_wrong_value_in_any_place_is_refused_or_run_never_a_server_error(http: httpx.Client, job_id: str,
                                                                          route: str) -> None:
    for name, good in GOOD.items():
        for i in range(len(good)):
            for bad in BAD_VALUES:
                values = [json.dumps(v).replace("JOB", job_id) for v in good]
                values[i] = bad
                body = '{"data": [' + ", ".join(values) + "]}"
                r = raw_post(http, f"gradio_api/{route}/{name}", body)
                what = f"{route}/{name} value {i + 1} = {bad}"
                assert r.status_code < 500, (what, r.text)
                if r.status_code >= 400:
                    assert_refused_in_words(r, what)
                elif route == "call":
                    stream = stream_of(http, name, r.json()["event_id"])
                    # An error says what was wrong: Gradio sends {"error": null} for one we did not word.
                    assert "event: error" not in stream or '"error": "' in stream, (what, stream)


def test_a_dict_prompt_and_a_text_seed_read_as_sentences(http: httpx.Client) -> None:
    r = raw_post(http, "gradio_api/run/submit", '{"data": [{"a": 1}, "demo-fast", 1, "", 0]}')
    assert (r.status_code, r.json()["error"]) == (400, "prompt must be text")
    r = raw_post(http, "gradio_api/run/submit", '{"data": ["a fox", "demo-fast", "abc", "", 0]}')
    assert (r.status_code, r.json()["error"]) == (400, "seed must be a whole number, not 'abc'")


def test_a_server_path_given_as_a_file_is_refused_with_its_reason(http: httpx.Client) -> None:
    body = '{"data": ["x", {"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}, "demo-fast", 1]}'
    for route in ("run", "call"):
        r = raw_post(http, f"gradio_api/{route}/generate", body)
        assert r.status_code == 400 and "only uploaded files are read" in r.json()["error"]
        assert "/etc/passwd" not in r.text and "root:" not in r.text


def test_invalid_unicode_is_refused_before_anything_is_stored(idle_server: AccountsServer, http: httpx.Client) -> None:
    store = idle_server.studio.queue.store  # type: ignore[attr-defined]
    before = len(store.list(limit=10_000))
    for prompt in ('"a fox \\ud800"', '"a fox \\udfff in snow"', '"a\\u0000fox"'):
        r = raw_post(http, "gradio_api/run/submit", f'{{"data": [{prompt}, "demo-fast", 1, "", 0]}}')
        assert r.status_code == 400 and ("surrogate" in r.text or "NUL" in r.text), r.text
    ann = Client(idle_server.url, auth=idle_server.auth("ann"), verbose=False)
    with pytest.raises(AppError, match="NUL character"):
        ann.predict("a\x00fox", "demo-fast", 1, TINY, 0, api_name="/submit")
    with pytest.raises(AppError, match="negative prompt holds a NUL"):
        ann.predict("a fox", "demo-fast", 1, json.dumps({"negative_prompt": "blur\x00"}), 0, api_name="/submit")
    assert len(store.list(limit=10_000)) == before


def test_a_bad_row_in_the_database_never_breaks_the_list_for_others(idle_server: AccountsServer) -> None:
    store = idle_server.studio.queue.store  # type: ignore[attr-defined]
    [bad] = store.add([NewJob({"prompt": "placeholder", "model": "demo"}, user="ann", owner="ann")])
    with store._tx() as c:  # what an older version stored: a lone surrogate, an error that is not UTF-8
        c.execute("UPDATE jobs SET request = ?, error = CAST(? AS TEXT) WHERE id = ?",
                  ('{"prompt": "fox \\ud800", "model": "demo"}', b"bad \xed\xa0\x80", bad.id))
    bob = Client(idle_server.url, auth=idle_server.auth("bob"), verbose=False)
    listed = {j["id"]: j for j in bob.predict("", 1000, api_name="/list_jobs")}
    assert bad.id in listed and listed[bad.id]["status"] == "queued"
    assert bob.predict(bad.id, api_name="/job_status")["id"] == bad.id
    ann = Client(idle_server.url, auth=idle_server.auth("ann"), verbose=False)
    assert ann.predict(bad.id, api_name="/job_status")["request"]["prompt"] == "fox \ufffd"


def test_rest_bodies_answer_4xx_in_words(idle_server: AccountsServer) -> None:
    from wan_studio.ui import rest

    if not any(getattr(r, "path", "") == "/api/v1/jobs" for r in idle_server.app.app.routes):  # type: ignore[attr-defined]
        rest.mount(idle_server.app, idle_server.studio)  # type: ignore[arg-type]
    bodies: list[Any] = ['{"prompt": {"a": 1}}', '{"prompt": "a fox", "seed": "abc"}', '{"prompt": "fox \\ud800"}',
                         '{"prompt": "a\\u0000fox"}', '{"prompt": "a fox", "settings": {"width": "wide"}}',
                         '{"prompt": "a fox", "settings": "[1]"}', '{"prompt": "a fox", "priority": 1e308}', "[]",
                         "nonsense", '{"prompt": "a fox", "preset": {"x": 1}}']
    with httpx.Client(base_url=idle_server.url, timeout=60, auth=idle_server.auth("bob")) as bob:
        for body in bodies:
            r = bob.post("api/v1/jobs", content=body.encode(), headers={"Content-Type": "application/json"})
            assert_refused_in_words(r, body)
        assert bob.get("api/v1/jobs/%ED%A0%80").status_code == 404
