"""One console line per job event, written where every status change happens (``JobStore``).

The lines name the job, its model and size, the worker, timings and errors; never the prompt
(prompts stay in the sidecar next to the video, and a shared app's users should not see each
other's words in the operator's console).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wan_studio.jobs.store import Job

log = logging.getLogger("wan_studio.jobs")


def describe(job: Job) -> str:
    """``demo 256×256, 9 frames, 4 steps``: what the job makes, without its prompt."""
    r = job.request
    size = f" {r['width']}×{r['height']}" if r.get("width") and r.get("height") else ""
    frames = f", {r['num_frames']} frames" if r.get("num_frames") else ""
    steps = f", {r['steps']} steps" if r.get("steps") else ""
    return f"{r.get('model', '?')}{size}{frames}{steps}"


def queued(job: Job) -> None:
    """Log a newly accepted job."""
    who = f" for {job.user}" if job.user else ""
    log.info("job %s queued: %s%s", job.id, describe(job), who)


def changed(before: str, job: Job) -> None:
    """Log ``job``'s move from status ``before`` to its current status, with timings in seconds."""
    if job.status == "running":
        log.info("job %s started on %s (attempt %d/%d): %s", job.id, job.worker or "a worker",
                 job.attempts, job.max_attempts, describe(job))
    elif job.status == "done":
        ran = (job.finished_at or 0) - (job.started_at or job.created_at)
        total = (job.finished_at or 0) - job.created_at
        plan = f", plan: {job.plan}" if job.plan else ""
        log.info("job %s done in %.1f s (%.1f s running, %.1f s waiting)%s -> %s", job.id, total, ran,
                 max(total - ran, 0.0), plan, ", ".join(job.outputs) or "no file")
    elif job.status == "failed":
        log.warning("job %s failed: %s", job.id, job.error or "no reason given")
    elif job.status == "cancelled":
        log.info("job %s cancelled%s", job.id, f" while {before}" if before in ("running", "paused") else "")
    elif job.status == "queued" and before != "queued":
        why = job.error or f"was {before}"
        log.info("job %s %s", job.id, why if why.startswith("requeued") else f"requeued: {why}")
    elif job.status == "paused":
        log.info("job %s paused", job.id)
