"""Ownership of jobs on a shared app: users act on their own jobs only, admins on every job;
others' jobs are listed without prompt, error or outputs. Through a real server with an accounts file."""

from __future__ import annotations

import json

import gradio as gr
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError, AuthenticationError

from tests.security.conftest import AccountsServer
from wan_studio.ui import queue_tab

TINY = json.dumps({"width": 64, "height": 64, "num_frames": 5, "steps": 2})


@pytest.fixture(scope="module")
def clients(idle_server: AccountsServer) -> dict[str, Client]:
    return {n: Client(idle_server.url, auth=idle_server.auth(n), verbose=False) for n in ("ann", "bob", "root")}


def test_login_is_required(idle_server: AccountsServer):
    with pytest.raises(ValueError, match="^Could not login to "):
        Client(idle_server.url, auth=("ann", "wrong-password"), verbose=False).predict(api_name="/list_jobs")
    with pytest.raises(AuthenticationError, match="credentials were not provided. Please login."):
        Client(idle_server.url, verbose=False).predict(api_name="/list_jobs")


def test_user_cannot_cancel_or_download_anothers_job(clients: dict[str, Client], idle_server: AccountsServer):
    ann_job = clients["ann"].predict("ann's secret prompt", "demo-fast", 1, TINY, 0, api_name="/submit")
    with pytest.raises(AppError, match="belongs to another user"):
        clients["bob"].predict(ann_job, api_name="/cancel_job")
    with pytest.raises(AppError, match="belongs to another user"):
        clients["bob"].predict(ann_job, api_name="/job_result")
    assert idle_server.studio.queue.get(ann_job).status == "queued"  # type: ignore[attr-defined]
    # Her own job: she may cancel it.
    assert clients["ann"].predict(ann_job, api_name="/cancel_job")["status"] == "cancelled"


def test_admin_may_cancel_anyones_job(clients: dict[str, Client], idle_server: AccountsServer):
    bob_job = clients["bob"].predict("bob's prompt", "demo-fast", 2, TINY, 0, api_name="/submit")
    view = clients["root"].predict(bob_job, api_name="/cancel_job")
    assert view["status"] == "cancelled" and view["request"]["prompt"] == "bob's prompt"
    assert idle_server.studio.queue.get(bob_job).user == "bob"  # type: ignore[attr-defined]


def test_others_jobs_are_listed_without_prompt_or_error(clients: dict[str, Client]):
    ann_job = clients["ann"].predict("ann private words", "demo-fast", 3, TINY, 0, api_name="/submit")
    seen_by_bob = {j["id"]: j for j in clients["bob"].predict("", 1000, api_name="/list_jobs")}[ann_job]
    assert "ann private words" not in json.dumps(seen_by_bob)
    assert seen_by_bob["request"] == {"model": "demo", "width": 64, "height": 64, "num_frames": 5, "steps": 2} \
        or set(seen_by_bob["request"]) <= {"model", "width", "height", "num_frames", "steps"}
    assert seen_by_bob["status"] == "queued" and seen_by_bob["mine"] is False
    status = clients["bob"].predict(ann_job, api_name="/job_status")
    assert "prompt" not in status["request"] and status["queued_ahead"] >= 0
    own = {j["id"]: j for j in clients["ann"].predict("", 1000, api_name="/list_jobs")}[ann_job]
    assert own["request"]["prompt"] == "ann private words" and own["mine"] is True
    admin = {j["id"]: j for j in clients["root"].predict("", 1000, api_name="/list_jobs")}[ann_job]
    assert admin["request"]["prompt"] == "ann private words"


def test_only_the_admin_may_unload_models(clients: dict[str, Client]):
    assert clients["ann"].predict(api_name="/unload_models") == "Only an admin can unload models."
    assert clients["root"].predict(api_name="/unload_models") != "Only an admin can unload models."


def test_per_user_queue_quota_applies_to_api_submissions(idle_server: AccountsServer):
    studio = idle_server.studio
    old = studio.limits  # type: ignore[attr-defined]
    from wan_studio.limits import UserLimits

    studio.limits = UserLimits(max_queued_jobs=studio.queue.store.count_active(user="bob") + 1)  # type: ignore
    try:
        bob = Client(idle_server.url, auth=idle_server.auth("bob"), verbose=False)
        bob.predict("one more", "demo-fast", 4, TINY, 0, api_name="/submit")
        with pytest.raises(AppError, match="already have .* jobs in the queue"):
            bob.predict("too many", "demo-fast", 5, TINY, 0, api_name="/submit")
        root = Client(idle_server.url, auth=idle_server.auth("root"), verbose=False)
        assert root.predict("admin has no quota", "demo-fast", 6, TINY, 0, api_name="/submit")
    finally:
        studio.limits = old  # type: ignore[attr-defined]


def _request(name: str) -> gr.Request:
    return gr.Request(username=name, session_hash=f"session-{name}")


@pytest.mark.parametrize("action", ["cancel", "delete", "top", "down", "priority"])
def test_queue_tab_buttons_refuse_other_users_jobs(idle_server: AccountsServer, action: str):
    studio = idle_server.studio
    from wan_studio.engine.request import GenerationRequest

    job = studio.submit(GenerationRequest(prompt="ann's", model="demo", width=64, height=64, num_frames=5,  # type: ignore
                                          steps=2), owner="session-ann", user="ann")
    before = studio.queue.get(job.id)  # type: ignore[attr-defined]
    msg = queue_tab._act(studio, action)(job.id, 9, _request("bob"))  # type: ignore[arg-type]
    assert msg.startswith("Cannot do that") and "belongs to another user" in msg
    after = studio.queue.get(job.id)  # type: ignore[attr-defined]
    assert (after.status, after.priority, after.position) == (before.status, before.priority, before.position)
    assert not queue_tab._act(studio, action)(job.id, 9, _request("ann")).startswith("Cannot")  # type: ignore


def test_queue_tab_retry_and_table_follow_the_rules(idle_server: AccountsServer):
    studio = idle_server.studio
    from wan_studio.engine.request import GenerationRequest

    job = studio.submit(GenerationRequest(prompt="ann hidden", model="demo", width=64, height=64,  # type: ignore
                                          num_frames=5, steps=2), owner="session-ann", user="ann")
    studio.queue.cancel(job.id)  # type: ignore[attr-defined]
    assert "belongs to another user" in queue_tab._act(studio, "retry")(job.id, 0, _request("bob"))  # type: ignore
    assert studio.queue.get(job.id).status == "cancelled"  # type: ignore[attr-defined]
    assert queue_tab._act(studio, "retry")(job.id, 0, _request("root")) == f"Job {job.id} queued again."  # type: ignore
    jobs = studio.queue.store.list(limit=1000)  # type: ignore[attr-defined]
    bob_rows = {r[0]: r for r in queue_tab.job_rows(jobs, studio.caller("bob", "s"))}  # type: ignore
    ann_rows = {r[0]: r for r in queue_tab.job_rows(jobs, studio.caller("ann", "s"))}  # type: ignore
    assert bob_rows[job.id][5] == "(another user's job)" and ann_rows[job.id][5] == "ann hidden"


def test_batch_counts_against_the_quota(idle_server: AccountsServer):
    studio = idle_server.studio
    from wan_studio.limits import UserLimits

    old = studio.limits  # type: ignore[attr-defined]
    studio.limits = UserLimits(max_queued_jobs=studio.queue.store.count_active(user="bob") + 2)  # type: ignore
    try:
        msg = queue_tab.queue_batch(studio, None, "a\nb\nc", "demo-fast", 1, 1, _request("bob"))  # type: ignore
        assert msg.startswith("Nothing was queued") and "limit is" in msg
    finally:
        studio.limits = old  # type: ignore[attr-defined]

