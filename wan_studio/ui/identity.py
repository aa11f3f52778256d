"""Who is calling: turns a ``gr.Request`` into the ``Caller`` the job access rules use."""

from __future__ import annotations

import gradio as gr

from wan_studio.jobs.access import Caller
from wan_studio.services import Studio


def caller_of(studio: Studio, request: gr.Request | None, prefix: str = "") -> Caller:
    """The logged-in user (if any), the session key and the admin flag of ``request``.

    A handler called directly (no request: tests, scripts in this process) acts as the person at
    this machine, ``local``.
    """
    user = getattr(request, "username", None) if request is not None else None
    session = getattr(request, "session_hash", None) if request is not None else None
    return studio.caller(user, f"{prefix}{session}" if session else "local")
