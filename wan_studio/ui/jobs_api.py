"""Named API endpoints of the job queue: ``/submit``, ``/job_status``, ``/job_result``, ``/cancel_job``,
``/list_jobs``. Call them with ``gradio_client``; they return at once (``/generate`` is the blocking one).
"""

from __future__ import annotations

import json
from typing import Any

import gradio as gr

from wan_studio.engine.request import API, GenerationRequest, RequestError, fields_on
from wan_studio.jobs.access import HIDDEN, Caller, NotYourJob, check_may_act, may_act, owns, redact_request
from wan_studio.jobs.store import FINISHED, STATUSES, IllegalTransition, Job, JobNotFound
from wan_studio.services import Studio
from wan_studio.ui.errors import user_error
from wan_studio.ui.identity import caller_of

# Request fields an API client may set besides prompt/seed: the field table's ``api`` column.
# ``image`` is not one on purpose: a server-side path from a remote client would let it read files
# on this machine.
API_FIELDS = fields_on(API)


def public_view(job: Job, ahead: int | None = None, preview_url: str | None = None) -> dict[str, Any]:
    """What an API client sees of a job (no server paths but the preview's URL)."""
    view = {k: getattr(job, k) for k in ("id", "status", "progress", "progress_text", "eta_s", "attempts",
                                          "max_attempts", "priority", "worker", "error", "created_at",
                                          "started_at", "finished_at", "plan")}
    view["request"] = {k: v for k, v in job.request.items() if k != "image"}
    if ahead is not None:
        view["queued_ahead"] = ahead
    view["preview_url"] = preview_url
    return view


def view_for(caller: Caller, job: Job, ahead: int | None = None, studio: Studio | None = None) -> dict[str, Any]:
    """``public_view`` for the job's owner or an admin; for anyone else only what explains the wait
    (no prompt, error text, plan or preview). With ``studio``, ``preview_url`` is the running job's
    live preview (a JPEG of its latest step, ``Studio.preview_url``), else None."""
    view = public_view(job, ahead, studio.preview_url(job) if studio is not None and may_act(caller, job) else None)
    view["mine"] = owns(caller, job)
    if not may_act(caller, job):
        view["request"] = redact_request(job.request)
        view.update(error=None, plan="", progress_text=HIDDEN if job.status == "running" else "", worker=None)
    return view


def _whole(value: Any, name: str) -> int | None:
    """``value`` as an int (None stays None), or a ``RequestError`` naming the field."""
    if value is None:
        return None
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        number = None
    if number is None or isinstance(value, bool) or (isinstance(value, float) and value != number):
        raise RequestError(f"{name} must be a whole number, not {value!r}")
    if abs(number) >= 2**63:
        raise RequestError(f"{name} is too large ({name}s are below 2**63)")
    return number


def api_request(studio: Studio, prompt: Any, preset: Any = "demo-fast", seed: Any = -1,
                settings: Any = None, priority: Any = 0) -> tuple[GenerationRequest, int]:
    """The request and priority an API client asks for (``/submit`` and ``POST /api/v1/jobs``).

    ``settings`` is a mapping (or JSON text of one) of ``API_FIELDS``. Raises ``RequestError`` with
    a sentence for the caller; the request is not yet validated against the limits (``Studio.submit``).
    """
    if not isinstance(prompt, str):
        raise RequestError("prompt must be text")
    if not isinstance(preset, str) or preset not in studio.presets:
        raise RequestError(f"unknown preset {preset!r}; choose one of {', '.join(studio.presets)}")
    if isinstance(settings, str):
        try:
            settings = json.loads(settings) if settings.strip() else {}
        except json.JSONDecodeError as e:
            raise RequestError(f"settings_json is not valid JSON: {e.msg}") from None
    settings = {} if settings is None else settings
    if not isinstance(settings, dict) or set(settings) - set(API_FIELDS):
        bad = sorted(map(str, set(settings) - set(API_FIELDS))) if isinstance(settings, dict) else ["(not an object)"]
        raise RequestError(f"settings_json may only set {', '.join(API_FIELDS)}; not {', '.join(bad)}")
    seed_value, priority_value = _whole(seed, "seed"), _whole(priority or 0, "priority")
    try:
        req: GenerationRequest = studio.presets[preset].request(
            prompt, seed=None if seed_value is None or seed_value < 0 else seed_value, **settings)
    except (TypeError, ValueError) as e:  # a field of the wrong type in settings_json
        raise RequestError(f"invalid settings: {e}") from None
    return req, priority_value or 0


def register(studio: Studio) -> None:
    """Add the endpoints to the ``gr.Blocks`` being built (call inside its ``with`` block)."""
    q = studio.queue

    def submit(prompt: str, preset: str = "demo-fast", seed: int = -1, settings_json: str = "",
               priority: int = 0, request: gr.Request = None) -> str:  # type: ignore[assignment]
        """Queue one video; returns its job id at once. ``settings_json`` may set request fields."""
        caller = caller_of(studio, request, "api:")
        try:
            req, priority_value = api_request(studio, prompt, preset, seed, settings_json, priority)
            # Through the studio so the per-user size and queue limits apply to API clients too.
            return studio.submit(req, owner=caller.session, user=caller.key, priority=priority_value).id
        except RequestError as e:
            raise user_error(str(e)) from None
        except (TypeError, ValueError) as e:  # a field of the wrong type reaching validation
            raise user_error(f"invalid settings: {e}") from None

    def job_status(job_id: str, request: gr.Request = None) -> dict[str, Any]:  # type: ignore[assignment]
        """Status, progress (0..1), ETA (seconds), error text and, while it runs, ``preview_url`` (a
        JPEG of its latest step) of a job (another user's job: no prompt, no error text, no preview)."""
        job = _get(job_id)
        ahead = q.store.queued_ahead(job.id) if job.status == "queued" else None
        return view_for(caller_of(studio, request, "api:"), job, ahead, studio)

    def cancel_job(job_id: str, request: gr.Request = None) -> dict[str, Any]:  # type: ignore[assignment]
        """Cancel a waiting job, or stop a running one after its current step (own jobs; admins: any)."""
        caller = caller_of(studio, request, "api:")
        job = _get(job_id)
        try:
            check_may_act(caller, job, "cancel")
            return view_for(caller, q.cancel(job.id), studio=studio)
        except (IllegalTransition, NotYourJob) as e:
            raise user_error(str(e)) from None

    def list_jobs(status: str = "", limit: int = 100,
                  request: gr.Request = None) -> list[dict[str, Any]]:  # type: ignore[assignment]
        """Jobs in queue order; ``status`` filters (comma-separated, e.g. ``queued,running``)."""
        if not isinstance(status, str) and status is not None:
            raise user_error("status must be text, e.g. queued,running")
        wanted = tuple(s.strip() for s in (status or "").split(",") if s.strip())
        unknown = sorted(set(wanted) - set(STATUSES))
        if unknown:
            raise user_error(f"unknown status {', '.join(unknown)}; use {', '.join(STATUSES)}")
        caller = caller_of(studio, request, "api:")
        try:
            n = max(1, min(int(limit), 1000))
        except (TypeError, ValueError, OverflowError):
            raise user_error(f"limit must be a whole number, not {limit!r}") from None
        return [view_for(caller, j, studio=studio) for j in q.store.list(wanted or None, limit=n)]

    def job_result(job_id: str, request: gr.Request = None) -> tuple[str, str, dict[str, Any]]:  # type: ignore[assignment]
        """The finished video, its sidecar file and the sidecar's contents (own jobs; admins: any)."""
        job = _get(job_id)
        try:
            check_may_act(caller_of(studio, request, "api:"), job, "download")
        except NotYourJob as e:
            raise user_error(str(e)) from None
        if job.status != "done":
            hint = f": {job.error}" if job.error and job.status in FINISHED else ""
            raise user_error(f"job {job.id} is {job.status}{hint}; the result exists once it is done")
        video = next(o for o in job.outputs if o.endswith(".mp4"))
        sidecar = next(o for o in job.outputs if o.endswith(".json"))
        with open(sidecar, encoding="utf-8") as f:
            return video, sidecar, json.load(f)

    def _get(job_id: str) -> Job:
        if not isinstance(job_id, str) and job_id is not None:
            raise user_error("job_id must be text: the id that /submit returned")
        try:
            return q.get((job_id or "").strip())
        except JobNotFound:
            raise user_error(f"no job with id {job_id!r} (it may have been deleted)") from None

    # Submissions must never wait behind a running /generate: their own unlimited concurrency group.
    # queue=False also opens the direct one-request route POST /gradio_api/run/submit (no SSE).
    gr.api(submit, api_name="submit", queue=False)
    gr.api(job_status, api_name="job_status", concurrency_limit=None, concurrency_id="jobs-api")
    gr.api(cancel_job, api_name="cancel_job", concurrency_limit=None, concurrency_id="jobs-api")
    gr.api(list_jobs, api_name="list_jobs", concurrency_limit=None, concurrency_id="jobs-api")
    # Files need real file components to travel to the client, so this one is a hidden event.
    with gr.Column(visible=False):
        job_id_in = gr.Textbox()
        video_out = gr.File()
        sidecar_out = gr.File()
        data_out = gr.JSON()
        trigger = gr.Button()
    trigger.click(job_result, inputs=[job_id_in], outputs=[video_out, sidecar_out, data_out],
                  api_name="job_result", concurrency_limit=None, concurrency_id="jobs-api")
