"""Who may see and act on which job.

Rules (the README's "Sharing safely" section repeats them for users):

- A job belongs to the logged-in user who submitted it (``Job.user``); without a login it belongs
  to the browser session / API client that submitted it (``Job.owner``).
- The owner may cancel, retry, delete, pause, reprioritise and move their own jobs and download
  their own videos. An admin may do all of that to every job.
- Everyone sees the whole queue (so the wait is explainable), but another user's job shows only its
  id, status, progress, model, size and times: never its prompt, input image, error text or outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wan_studio.jobs.store import Job

# Request fields another user may see: enough to explain the wait, nothing the author typed.
PUBLIC_REQUEST_FIELDS = ("model", "width", "height", "num_frames", "steps")
HIDDEN = "(another user's job)"


class NotYourJob(PermissionError):
    """The caller asked to act on, or read the result of, a job that belongs to someone else."""


@dataclass(frozen=True)
class Caller:
    """The person behind one request: ``user`` is the login name (None without accounts/auth),
    ``session`` the browser or API-client key, ``admin`` whether the admin rules apply."""

    user: str | None
    session: str
    admin: bool = False

    @property
    def key(self) -> str:
        """What ``Job.user`` holds for jobs this caller submits."""
        return self.user or self.session


def owns(caller: Caller, job: Job) -> bool:
    """True when ``job`` was submitted by ``caller`` (same login, or same session without a login)."""
    if caller.user is not None:
        return job.user == caller.user
    return job.user == caller.session or job.owner == caller.session


def may_act(caller: Caller, job: Job) -> bool:
    """True when ``caller`` may change ``job`` or fetch its outputs."""
    return caller.admin or owns(caller, job)


def check_may_act(caller: Caller, job: Job, action: str) -> None:
    """Raise ``NotYourJob`` with a sentence for the user unless ``caller`` may ``action`` ``job``."""
    if not may_act(caller, job):
        raise NotYourJob(f"job {job.id} belongs to another user; only its owner or an admin may {action} it")


def redact_request(request: dict[str, Any]) -> dict[str, Any]:
    """The part of another user's request that anyone may see."""
    return {k: request[k] for k in PUBLIC_REQUEST_FIELDS if k in request}
