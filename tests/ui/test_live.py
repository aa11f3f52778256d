"""Which job each live panel follows and what its progress display says, on stored jobs (the
browser test in test_preview_browser.py shows the panels working on a real server)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from wan_studio.engine.request import GenerationRequest
from wan_studio.jobs.access import Caller
from wan_studio.jobs.store import Job, JobStore, NewJob
from wan_studio.ui.intermediate import scene_and_talk
from wan_studio.ui.live import progress_html
from wan_studio.ui.queue_tab import running_job


@pytest.fixture
def jobs(tmp_path: Path) -> list[Job]:
    """Two running jobs of ann's (a scene, a talking clip), a running one of bob's, a queued one of ann's."""
    store = JobStore(tmp_path / "jobs.db")
    scene = GenerationRequest(prompt="p", model="demo", width=64, height=64, num_frames=5, steps=2).to_dict()
    talk = {**scene, "model": "demo-s2v"}
    added = store.add([NewJob(scene, owner="s-ann", user="ann"), NewJob(talk, owner="s-ann", user="ann"),
                       NewJob(scene, owner="s-bob", user="bob"), NewJob(scene, owner="s-ann", user="ann")])
    store.close()
    return [dataclasses.replace(j, status="running") for j in added[:3]] + [added[3]]


def test_the_intermediate_panels_follow_the_scene_and_the_talking_clip_each(jobs: list[Job]) -> None:
    parts = scene_and_talk([jobs[1], jobs[0], jobs[3]])
    assert parts["scene"].id == jobs[0].id and parts["talk"].id == jobs[1].id


def test_the_queue_panel_follows_the_selected_running_job_of_the_caller_else_her_first(jobs: list[Job]) -> None:
    ann = Caller("ann", "s-ann")
    assert running_job(jobs, ann, jobs[1].id).id == jobs[1].id
    assert running_job(jobs, ann, jobs[2].id).id == jobs[0].id  # bob's job is not hers to watch
    assert running_job(jobs, ann, jobs[3].id).id == jobs[0].id  # a queued job has no preview
    assert running_job(jobs, Caller("root", "s-root", admin=True), jobs[2].id).id == jobs[2].id
    assert running_job(jobs[3:], ann, None) is None


def test_the_progress_display_is_one_bar_and_its_line_escaped(jobs: list[Job]) -> None:
    running = dataclasses.replace(jobs[0], progress=0.42, progress_text="step 4/10 · 3 s left <b>")
    shown = progress_html(running)
    assert shown.count("<progress") == 1 and 'value="0.420"' in shown
    assert "step 4/10 · 3 s left &lt;b&gt;" in shown
    assert "waiting in the queue" in progress_html(jobs[3]) and progress_html(None) == ""
