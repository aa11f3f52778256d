"""Queue tab: live job list, cancel / retry / reorder / delete, batch input, gallery of finished videos.

Handlers only turn widget values into ``studio.queue`` calls and format what comes back.
"""

from __future__ import annotations

import datetime as _dt
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from wan_studio.engine.request import GenerationRequest, RequestError
from wan_studio.jobs.access import HIDDEN, Caller, NotYourJob, check_may_act, may_act
from wan_studio.jobs.batch import BatchError, format_of, plan_batch, read_rows
from wan_studio.jobs.store import IllegalTransition, Job, JobNotFound
from wan_studio.services import Studio
from wan_studio.ui.identity import caller_of
from wan_studio.ui.errors import user_error
from wan_studio.ui.live import JobPanel, panel_values, render_panel

COLUMNS = ["id", "status", "progress", "ETA", "model", "prompt", "seed", "attempts", "worker / plan", "note"]
GALLERY_SIZE = 60
ACTION_WORDS = {"top": "move", "up": "move", "down": "move", "priority": "reprioritise"}


@dataclass
class QueueTab:
    """Widgets of the tab, kept so ``listen`` can wire them."""

    timer: gr.Timer
    workers: gr.Markdown
    table: gr.Dataframe
    selected: gr.Textbox
    buttons: dict[str, gr.Button]
    priority: gr.Number
    action_status: gr.Markdown
    batch_file: gr.File
    batch_text: gr.Textbox
    batch_preset: gr.Dropdown
    batch_seeds: gr.Number
    batch_base_seed: gr.Number
    batch_go: gr.Button
    batch_status: gr.Markdown
    gallery: gr.Gallery
    gallery_key: gr.JSON
    gallery_paths: gr.JSON
    video: gr.Video
    params: gr.JSON
    download: gr.File
    load: gr.Button
    rerun_settings: gr.Code
    rerun_go: gr.Button
    rerun_status: gr.Markdown
    running: JobPanel  # the selected running job, else the caller's first running one
    running_shown: gr.JSON


def _eta_text(job: Job) -> str:
    if job.status == "running" and job.eta_s is not None:
        return f"{job.eta_s:.0f} s"
    return ""


def job_rows(jobs: list[Job], caller: Caller | None = None) -> list[list[Any]]:
    """Table rows for ``jobs`` in the order given; other users' jobs (when ``caller`` is given and
    is not an admin) show no prompt, seed, plan or note."""
    rows = []
    for j in jobs:
        r = j.request
        if caller is not None and not may_act(caller, j):
            rows.append([j.id, j.status, f"{j.progress * 100:.0f}%" if j.status == "running" else "",
                         _eta_text(j), r.get("model", ""), HIDDEN, "", f"{j.attempts}/{j.max_attempts}", "", ""])
            continue
        progress = f"{j.progress * 100:.0f}% {j.progress_text}".strip() if j.status == "running" else ""
        where = " · ".join(x for x in (j.worker or "", j.plan) if x)
        note = j.error or ""
        rows.append([j.id, j.status, progress, _eta_text(j), r.get("model", ""), str(r.get("prompt", ""))[:80],
                     r.get("seed"), f"{j.attempts}/{j.max_attempts}", where, note])
    return rows


def workers_text(studio: Studio) -> str:
    """One line per worker process."""
    lines = []
    for w in studio.queue.executor.workers():
        job = f" · job {w.job_id}" if w.job_id else ""
        loaded = f" · loaded: {', '.join(w.loaded)}" if w.loaded else ""
        restarts = f" · restarted {w.restarts}× (last: {w.last_exit})" if w.restarts else ""
        lines.append(f"- **{w.name}** ({w.device}): {w.state}{job}{loaded}{restarts}")
    active = studio.queue.store.count_active()
    return (f"{active} unfinished job{'s' if active != 1 else ''} (limit {studio.queue.max_length})\n"
            + ("\n".join(lines) or "- no worker processes (started with --workers 0): jobs wait"))


def gallery_items(studio: Studio, caller: Caller | None = None) -> tuple[list[tuple[str, str]], list[str]]:
    """(video, caption) for the newest finished jobs whose video still exists, and their sidecars;
    with a non-admin ``caller``, only that caller's own videos."""
    items, sidecars = [], []
    for j in studio.queue.store.list(("done",), limit=GALLERY_SIZE, newest_first=True):
        if caller is not None and not may_act(caller, j):
            continue
        video = next((o for o in j.outputs if o.endswith(".mp4")), None)
        sidecar = next((o for o in j.outputs if o.endswith(".json")), None)
        if video and sidecar and Path(video).exists():
            r = j.request
            items.append((video, f"{r.get('model')} · seed {r.get('seed')} · {str(r.get('prompt', ''))[:40]}"))
            sidecars.append(sidecar)
    return items, sidecars


def render(studio: Studio) -> QueueTab:
    """Lay out the tab; call inside a ``gr.Tab``."""
    # Polls only while the tab is shown (``poll_while_shown``): an idle page makes no requests.
    timer = gr.Timer(1.0, active=False)
    workers = gr.Markdown(workers_text(studio), elem_id="queue-workers")
    table = gr.Dataframe(headers=COLUMNS, value=[],
                         interactive=False, wrap=True, elem_id="queue-table", label="Jobs (click a row to select)")
    with gr.Row():
        selected = gr.Textbox(label="Selected job id", elem_id="queue-selected", scale=2)
        priority = gr.Number(label="Priority (higher runs first)", value=0, precision=0, scale=1)
    with gr.Row():
        names = ("cancel", "retry", "top", "up", "down", "priority", "delete")
        labels = ("Cancel", "Retry", "To top", "Up", "Down", "Set priority", "Delete")
        buttons = {n: gr.Button(label, size="sm", elem_id=f"queue-{n}",
                                variant="stop" if n in ("cancel", "delete") else "secondary")
                   for n, label in zip(names, labels)}
    action_status = gr.Markdown("", elem_id="queue-action-status")
    running = render_panel("queue-running", "Running job")
    running_shown = gr.JSON(None, visible=False)
    with gr.Accordion("Batch: many prompts × seeds", open=False):
        gr.Markdown("Upload a **.csv** (header with a `prompt` column; optional `image`, `seed`, `preset`, "
                    "`width`, `height`, `num_frames`, `steps`, …), a **.jsonl** (one object per line) or a "
                    "**.txt** (one prompt per line) — or paste prompts below, one per line.")
        with gr.Row():
            batch_file = gr.File(label="Batch file", file_types=[".csv", ".jsonl", ".txt"], type="filepath")
            batch_text = gr.Textbox(label="…or paste prompts (one per line)", lines=5)
        with gr.Row():
            batch_preset = gr.Dropdown(choices=[(p.label, p.name) for p in studio.presets.values()],
                                       value=studio.default_preset("beginner").name, label="Preset")
            batch_seeds = gr.Number(label="Seeds per prompt", value=1, precision=0, minimum=1)
            batch_base_seed = gr.Number(label="First seed (-1 = random)", value=-1, precision=0)
        batch_go = gr.Button("Queue batch", variant="primary", elem_id="queue-batch-go")
        batch_status = gr.Markdown("", elem_id="queue-batch-status")
    gr.Markdown("### Finished videos")
    # Filled by the first refresh, which knows who is looking (a build-time list would show
    # every user's prompts and videos to everyone).
    items, sidecars = [], []
    gallery = gr.Gallery(value=items, columns=4, height=320, elem_id="queue-gallery", allow_preview=False)
    # Hidden JSON rather than gr.State: State makes every page hold a heartbeat connection open.
    gallery_key = gr.JSON(list(sidecars), visible=False)
    gallery_paths = gr.JSON(sidecars, visible=False)
    with gr.Row():
        with gr.Column():
            video = gr.Video(label="Selected video", interactive=False, elem_id="queue-video")
            download = gr.File(label="Download", interactive=False, elem_id="queue-download")
        with gr.Column():
            params = gr.JSON(label="Parameters (from the sidecar)", elem_id="queue-params")
            load = gr.Button("Load these settings", elem_id="queue-load")
            rerun_settings = gr.Code(label="Settings to queue (edit freely)", language="json",
                                     elem_id="queue-rerun-settings")
            rerun_go = gr.Button("Queue these settings", variant="primary", elem_id="queue-rerun-go")
            rerun_status = gr.Markdown("", elem_id="queue-rerun-status")
    return QueueTab(timer, workers, table, selected, buttons, priority, action_status, batch_file, batch_text,
                    batch_preset, batch_seeds, batch_base_seed, batch_go, batch_status, gallery, gallery_key,
                    gallery_paths, video, params, download, load, rerun_settings, rerun_go, rerun_status, running,
                    running_shown)


def _act(studio: Studio, what: str) -> Callable[[str, float | None], str]:
    """A handler applying the button ``what`` to the selected job; returns a status line."""

    def handler(job_id: str, priority: float | None = 0,
                request: gr.Request = None) -> str:  # type: ignore[assignment]
        job_id = (job_id or "").strip()
        if not job_id:
            return "Select a job first (click its row)."
        q = studio.queue
        try:
            check_may_act(caller_of(studio, request), q.get(job_id), ACTION_WORDS.get(what, what))
            if what == "cancel":
                job = q.cancel(job_id)
                state = "stopping after the current step…" if job.status == "running" else job.status
                return f"Job {job_id}: {state}"
            if what == "retry":
                return f"Job {job_id} queued again."
            if what == "delete":
                q.delete(job_id)
                return f"Job {job_id} removed from the list (its files stay in the outputs folder)."
            if what == "priority":
                q.set_priority(job_id, int(priority or 0))
                return f"Job {job_id} now has priority {int(priority or 0)}."
            q.move(job_id, what)  # type: ignore[arg-type]
            return f"Job {job_id} moved {what}."
        except (IllegalTransition, JobNotFound, NotYourJob) as e:
            return f"Cannot do that: {e.args[0] if e.args else e}"

    if what == "retry":
        def retry(job_id: str, priority: float | None = 0,
                request: gr.Request = None) -> str:  # type: ignore[assignment]
            try:
                job = studio.queue.get((job_id or "").strip())
                check_may_act(caller_of(studio, request), job, "retry")
                studio.queue.retry(job.id)
            except (IllegalTransition, JobNotFound, NotYourJob) as e:
                return f"Cannot retry: {e.args[0] if e.args else e}"
            return handler(job_id, priority, request)
        return retry
    return handler


def running_job(jobs: list[Job], caller: Caller, selected: str | None) -> Job | None:
    """The running job whose preview the tab shows: the selected one when it runs and is the
    caller's (or the caller is an admin), else the caller's first running job."""
    mine = [j for j in jobs if j.status == "running" and may_act(caller, j)]
    chosen = next((j for j in mine if j.id == (selected or "").strip()), None)
    return chosen or (mine[0] if mine else None)


def poll_while_shown(tab: QueueTab, page: gr.Tab, other_pages: list[gr.Tab]) -> None:
    """Start the live refresh when ``page`` is selected and stop it when any other page is."""
    page.select(lambda: gr.Timer(active=True), outputs=[tab.timer], api_name=False, queue=False)
    for other in other_pages:
        other.select(lambda: gr.Timer(active=False), outputs=[tab.timer], api_name=False, queue=False)


def listen(tab: QueueTab, studio: Studio) -> None:
    """Wire the events; none of them is a public API endpoint (see ``jobs_api``)."""

    def refresh(key: list[str] | None, selected: str | None, shown: str | None,
                request: gr.Request) -> tuple[Any, ...]:
        caller = caller_of(studio, request)
        jobs = studio.queue.store.list(limit=200)
        rows = job_rows(jobs, caller)
        items, sidecars = gallery_items(studio, caller)
        # Re-sending an unchanged gallery would close the video the user is looking at.
        gallery = gr.update(value=items) if sidecars != (key or []) else gr.update()
        picture, bar, now = panel_values(studio, running_job(jobs, caller, selected), shown)
        return workers_text(studio), rows, gallery, sidecars, sidecars, picture, bar, now

    tab.timer.tick(refresh, inputs=[tab.gallery_key, tab.selected, tab.running_shown],
                   outputs=[tab.workers, tab.table, tab.gallery, tab.gallery_key, tab.gallery_paths,
                            tab.running.preview, tab.running.progress, tab.running_shown],
                   api_name=False, show_progress="hidden", queue=False)

    def select_row(evt: gr.SelectData, rows: Any) -> str:
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        try:
            return str(rows.iloc[row, 0]) if hasattr(rows, "iloc") else str(rows[row][0])
        except (IndexError, KeyError, TypeError):
            return ""

    tab.table.select(select_row, inputs=[tab.table], outputs=[tab.selected], api_name=False, queue=False)
    for name, button in tab.buttons.items():
        button.click(_act(studio, name), inputs=[tab.selected, tab.priority], outputs=[tab.action_status],
                     api_name=False, queue=False)
    def batch(file: str | None, text: str, preset: str, seeds: float | None, base_seed: float | None,
              request: gr.Request) -> str:
        return queue_batch(studio, file, text, preset, seeds, base_seed, request)

    tab.batch_go.click(batch,
                       inputs=[tab.batch_file, tab.batch_text, tab.batch_preset, tab.batch_seeds, tab.batch_base_seed],
                       outputs=[tab.batch_status], api_name=False)

    def pick(evt: gr.SelectData, sidecars: list[str], request: gr.Request) -> tuple[Any, ...]:
        # The list comes from the browser: accept only sidecars of jobs this caller may open.
        allowed = gallery_items(studio, caller_of(studio, request))[1]
        index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        if not isinstance(sidecars, list) or not isinstance(index, int) or not 0 <= index < len(sidecars) \
                or sidecars[index] not in allowed:
            raise user_error("That video is no longer in your gallery; wait for the list to refresh.")
        sidecar = Path(sidecars[index])
        data = json.loads(sidecar.read_text(encoding="utf-8"))
        video = sidecar.with_name(data["video"]["file"])
        return str(video), data, [str(video), str(sidecar)]

    tab.gallery.select(pick, inputs=[tab.gallery_paths], outputs=[tab.video, tab.params, tab.download],
                       api_name=False)
    tab.load.click(settings_from_sidecar, inputs=[tab.params], outputs=[tab.rerun_settings], api_name=False)
    def rerun(text: str, request: gr.Request) -> str:
        return queue_settings(studio, text, request)

    tab.rerun_go.click(rerun, inputs=[tab.rerun_settings], outputs=[tab.rerun_status], api_name=False)


def settings_from_sidecar(sidecar: dict[str, Any] | None) -> str:
    """The request recorded in a sidecar, as editable JSON (same seed: re-running repeats the video)."""
    if not sidecar or "request" not in sidecar:
        raise user_error("Pick a finished video in the gallery first.")
    return json.dumps(sidecar["request"], indent=2, ensure_ascii=False)


def queue_settings(studio: Studio, text: str, request: gr.Request) -> str:
    """Queue the request written in ``text`` (JSON of request fields)."""
    try:
        data = json.loads(text or "")
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        req = GenerationRequest.from_dict(data)
        caller = caller_of(studio, request)
        job = studio.submit(req, owner=caller.session, user=caller.key)
    except (ValueError, TypeError) as e:  # RequestError and JSON errors are ValueErrors
        return f"Not queued: {e}"
    return f"Queued job {job.id} ({_dt.datetime.now():%H:%M:%S})."


def queue_batch(studio: Studio, file: str | None, text: str, preset: str, seeds: float | None,
                base_seed: float | None, request: gr.Request | None = None) -> str:
    """Expand a batch file or pasted prompts into jobs; reports skipped rows by line number."""
    try:
        if file:
            path = Path(file)
            rows, problems = read_rows(path.read_text(encoding="utf-8-sig"), format_of(path))
            base_dir = path.parent
        elif text and text.strip():
            rows, problems = read_rows(text, "txt")
            base_dir = None
        else:
            return "Add a batch file or paste at least one prompt."
        plan = plan_batch(rows, studio.presets, preset, int(seeds or 1),
                          None if base_seed is None or base_seed < 0 else int(base_seed), base_dir,
                          studio.check_available, studio.settings.max_prompt_chars)
        plan.problems[:0] = problems
        plan.rows += len(problems)
        batch_id = uuid.uuid4().hex[:8]
        caller = caller_of(studio, request)
        jobs = studio.submit_batch(plan.requests, caller, batch_id) if plan.requests else []
    except (BatchError, RequestError, UnicodeDecodeError) as e:
        return f"Nothing was queued: {e}"
    return plan.summary(len(jobs))
