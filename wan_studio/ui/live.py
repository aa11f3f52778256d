"""A job's live view in a tab: its preview picture (the worker's latest step, ``engine.preview``)
beside its own progress display, one pair per job, refreshed by a timer while the tab's job runs."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, Callable

import gradio as gr

from wan_studio.services import Studio

TICK_S = 0.5  # how often a tab with a running job asks for its preview and progress


@dataclass
class JobPanel:
    """One job's preview picture and progress display, side by side."""

    preview: gr.Image
    progress: gr.HTML


def render_panel(elem_prefix: str, label: str) -> JobPanel:
    """Lay out one panel (call inside a Blocks context); hidden until a job of the tab runs."""
    with gr.Row(elem_classes=["wan-job-panel"], equal_height=True):
        preview = gr.Image(label=f"{label}: live preview", type="filepath", interactive=False, height=220,
                           elem_id=f"{elem_prefix}-preview", scale=2, buttons=[])
        progress = gr.HTML("", elem_id=f"{elem_prefix}-progress", scale=1)
    return JobPanel(preview, progress)


def progress_html(job: Any) -> str:
    """The progress display of ``job``: a bar (0..1) and its line (``step 12/50 · 34 s left``)."""
    if job is None:
        return ""
    fraction = max(0.0, min(1.0, float(job.progress or 0.0)))
    text = job.progress_text or job.status
    if job.status == "queued":
        text = "waiting in the queue"
    return (f'<div class="wan-job-progress" data-status="{html.escape(job.status)}">'
            f'<progress max="1" value="{fraction:.3f}"></progress>'
            f'<span class="wan-job-progress-text">{html.escape(text)}</span></div>')


def panel_values(studio: Studio, job: Any, shown: str | None) -> tuple[Any, str, str | None]:
    """(preview value, progress HTML, preview path now shown) for ``job`` (None: an empty panel).
    The picture is sent only when a newer step's exists (``shown`` is the one the browser has)."""
    path = studio.preview_of(job) if job is not None else None
    now = str(path) if path is not None else None
    picture = gr.update() if now == shown else (now if now is not None else None)
    return picture, progress_html(job), now


@dataclass
class LiveView:
    """A tab's panels (by part: ``"job"``, or ``"scene"`` / ``"talk"``) and the timer refreshing them."""

    timer: gr.Timer
    panels: dict[str, JobPanel]
    shown: gr.JSON  # the preview path each panel shows (hidden): unchanged pictures are not re-sent

    @property
    def outputs(self) -> list[Any]:
        """Every component a refresh writes."""
        return [c for p in self.panels.values() for c in (p.preview, p.progress)] + [self.shown]


def render_view(elem_prefix: str, labels: dict[str, str]) -> LiveView:
    """A timer and one panel per part in ``labels`` (part → label)."""
    timer = gr.Timer(TICK_S, active=False)
    panels = {part: render_panel(f"{elem_prefix}-{part}" if len(labels) > 1 else elem_prefix, label)
              for part, label in labels.items()}
    return LiveView(timer, panels, gr.JSON({}, visible=False))


def refresh(studio: Studio, view: LiveView, assign: Callable[[list[Any]], dict[str, Any]],
            session: str, shown: dict[str, Any] | None) -> list[Any]:
    """Values for ``view.outputs``: ``assign`` maps the session's live jobs to the view's parts."""
    jobs = assign(studio.live_jobs(session)) if session else {}
    before, values, now = dict(shown or {}), [], {}
    for part in view.panels:
        picture, bar, now[part] = panel_values(studio, jobs.get(part), before.get(part))
        values += [picture, bar]
    return values + [now]


def first_job(jobs: list[Any]) -> dict[str, Any]:
    """A one-job tab: its running job, else its first queued one."""
    return {"job": jobs[0]} if jobs else {}


def arm(view: LiveView, start: gr.Button) -> None:
    """Start ``view``'s refresh when ``start`` is clicked. Register this before the job's own event
    on the same button: the browser runs a click's listeners in the order they were added, and a
    timer switched on after the job's event would start ticking only once the job is over."""
    start.click(lambda: gr.Timer(active=True), outputs=[view.timer], api_name=False, queue=False,
                show_progress="hidden")


def follow(view: LiveView, studio: Studio, event: Any,
           assign: Callable[[list[Any]], dict[str, Any]] = first_job, timer_wired: bool = False) -> None:
    """Refresh ``view`` (armed by ``arm``) until ``event``, the job's own event, ends; the panels
    are emptied then (the video replaces them). ``timer_wired``: a second event of the same view
    (its timer's refresh is wired already)."""

    def tick(shown: dict[str, Any] | None, request: gr.Request) -> list[Any]:
        return refresh(studio, view, assign, getattr(request, "session_hash", None) or "", shown)

    def stop() -> list[Any]:
        return [gr.Timer(active=False)] + [v for _ in view.panels for v in (None, "")] + [{}]

    if not timer_wired:
        view.timer.tick(tick, inputs=[view.shown], outputs=view.outputs, api_name=False, queue=False,
                        show_progress="hidden")
    event.then(stop, outputs=[view.timer, *view.outputs], api_name=False, queue=False, show_progress="hidden")
