"""Queue tab handlers on a real store with no workers (jobs wait): batch, buttons, rows, sidecar reload."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gradio as gr
import pytest

from wan_studio.services import Studio
from wan_studio.settings import Settings
from wan_studio.ui import queue_tab


@pytest.fixture
def idle_studio(tmp_path: Path) -> Any:
    s = Studio.create(Settings(models_dir=tmp_path / "models", outputs_dir=tmp_path / "outputs", workers=0))
    s.start()
    yield s
    s.close()


def test_pasted_prompts_times_seeds_become_jobs(idle_studio: Studio) -> None:
    msg = queue_tab.queue_batch(idle_studio, None, "a fox\n\na cat\n", "demo-fast", 3, 100)
    assert msg == "Queued 6 jobs from 2 of 2 rows."
    jobs = idle_studio.queue.store.queued_in_order()
    assert [(j.request["prompt"], j.request["seed"]) for j in jobs][:3] == [("a fox", 100), ("a fox", 101), ("a fox", 102)]
    assert len({j.batch_id for j in jobs}) == 1


def test_batch_file_with_bad_rows_reports_line_numbers(idle_studio: Studio, tmp_path: Path) -> None:
    f = tmp_path / "prompts.csv"
    f.write_text("prompt,steps\na fox,2\na cat,lots\na bird,3\n", encoding="utf-8")
    msg = queue_tab.queue_batch(idle_studio, str(f), "", "demo-fast", 1, -1)
    assert msg.startswith("Queued 2 jobs from 2 of 3 rows. Skipped 1: line 3: steps must be a whole number")
    assert queue_tab.queue_batch(idle_studio, None, "  ", "demo-fast", 1, -1).startswith("Add a batch file")


def test_buttons_act_on_the_selected_job(idle_studio: Studio) -> None:
    queue_tab.queue_batch(idle_studio, None, "one\ntwo\nthree", "demo-fast", 1, 1)
    one, two, three = idle_studio.queue.store.queued_in_order()
    assert queue_tab._act(idle_studio, "top")(three.id, 0) == f"Job {three.id} moved top."
    assert [j.id for j in idle_studio.queue.store.queued_in_order()] == [three.id, one.id, two.id]
    assert "cancelled" in queue_tab._act(idle_studio, "cancel")(one.id, 0)
    assert queue_tab._act(idle_studio, "retry")(one.id, 0) == f"Job {one.id} queued again."
    assert queue_tab._act(idle_studio, "cancel")("", 0) == "Select a job first (click its row)."
    assert queue_tab._act(idle_studio, "delete")("nope", 0).startswith("Cannot do that: no job with id")
    rows = queue_tab.job_rows(idle_studio.queue.store.list())
    assert [r[1] for r in rows] == ["queued"] * 3 and rows[0][0] == three.id


def test_load_settings_from_a_sidecar_and_queue_them_again(idle_studio: Studio) -> None:
    sidecar = {"request": {"prompt": "again", "model": "demo", "width": 64, "height": 64, "num_frames": 5,
                           "steps": 2, "seed": 77, "image": None}}
    text = queue_tab.settings_from_sidecar(sidecar)
    assert json.loads(text)["seed"] == 77
    msg = queue_tab.queue_settings(idle_studio, text, gr.Request())
    assert msg.startswith("Queued job ")
    [job] = idle_studio.queue.store.queued_in_order()
    assert (job.request["prompt"], job.request["seed"]) == ("again", 77)
    assert queue_tab.queue_settings(idle_studio, '{"prompt": "x", "colour": 1}', gr.Request()).startswith(
        "Not queued: unknown request field(s): colour")
    with pytest.raises(gr.Error):
        queue_tab.settings_from_sidecar(None)


def test_workers_line_says_jobs_wait_without_workers(idle_studio: Studio) -> None:
    assert "jobs wait" in queue_tab.workers_text(idle_studio)
