"""Who may act on a job, as plain rules on stored jobs (the server tests in tests/security/ show
the same rules through every way in)."""

from __future__ import annotations

from pathlib import Path

import pytest

from wan_studio.engine.request import GenerationRequest
from wan_studio.jobs.access import HIDDEN, Caller, NotYourJob, check_may_act, may_act, owns, redact_request
from wan_studio.jobs.store import Job, JobStore, NewJob


@pytest.fixture
def jobs(tmp_path: Path) -> dict[str, Job]:
    """ann's job (logged in), a browser session's job (no login), stored for real."""
    store = JobStore(tmp_path / "jobs.db")
    request = GenerationRequest(prompt="ann's words", seed=1, width=64, height=64, num_frames=5, steps=1).to_dict()
    ann, anon = store.add([NewJob(request, owner="session-1", user="ann"),
                           NewJob(request, owner="session-2", user=None)])
    store.close()
    return {"ann": ann, "anon": anon}


def test_a_logged_in_user_owns_her_jobs_whatever_session_she_is_in(jobs: dict[str, Job]) -> None:
    assert owns(Caller("ann", "another-session"), jobs["ann"])
    assert not owns(Caller("bob", "session-1"), jobs["ann"])  # the same browser, another login


def test_without_a_login_the_session_owns_its_jobs(jobs: dict[str, Job]) -> None:
    assert owns(Caller(None, "session-2"), jobs["anon"])
    assert not owns(Caller(None, "session-3"), jobs["anon"])
    assert owns(Caller(None, "session-1"), jobs["ann"])  # the key ann's job was submitted under
    assert Caller(None, "session-2").key == "session-2" and Caller("ann", "s").key == "ann"


def test_an_admin_may_act_on_every_job_and_a_user_only_on_hers(jobs: dict[str, Job]) -> None:
    assert may_act(Caller("root", "s", admin=True), jobs["ann"])
    assert may_act(Caller("ann", "s"), jobs["ann"])
    assert not may_act(Caller("bob", "s"), jobs["ann"])
    check_may_act(Caller("ann", "s"), jobs["ann"], "download")  # no error
    with pytest.raises(NotYourJob, match=f"^job {jobs['ann'].id} belongs to another user; only its owner or an "
                                         "admin may download it$"):
        check_may_act(Caller("bob", "s"), jobs["ann"], "download")
    assert issubclass(NotYourJob, PermissionError)


def test_others_see_the_size_of_a_request_never_its_words(jobs: dict[str, Job]) -> None:
    seen = redact_request(jobs["ann"].request)
    assert seen == {"model": "demo", "width": 64, "height": 64, "num_frames": 5, "steps": 1}
    assert redact_request({"prompt": "x", "model": "demo"}) == {"model": "demo"}
    assert HIDDEN == "(another user's job)"
