"""How the UI reports an error the user caused."""

from __future__ import annotations

import gradio as gr


def user_error(message: str, duration: float | None = 10) -> gr.Error:
    """An error for the person at the browser (bad input, nothing picked, a job that failed for a
    stated reason): shown as words in the UI, with no traceback in the console, where a traceback
    would say the app broke. Real bugs (any other exception) still log theirs.

    ``duration``: seconds the message stays up; None keeps it until closed.
    """
    return gr.Error(message, duration=duration, print_exception=False)
