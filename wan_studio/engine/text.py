"""Text that can be stored and sent back: valid Unicode, no NUL characters.

A lone surrogate (``"\\ud800"``, which JSON can spell but UTF-8 cannot encode) stored in a job makes
every later response that includes it fail to encode, so the job list breaks for everyone. A NUL
cuts C strings short in the tokenizer and in ffmpeg metadata. Both are refused at the door
(``check_text``); what an older version stored is cleaned on the way out (``clean_text``).
"""

from __future__ import annotations

from typing import Any


class TextError(ValueError):
    """A text field holds something that is not valid text; the message names the field."""


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text (``"a lone surrogate at character 3"``), or None."""
    if "\x00" in value:
        return f"a NUL character at character {value.index(chr(0)) + 1}"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"a lone surrogate (invalid Unicode) at character {e.start + 1}"
    return None


def check_text(value: object, name: str) -> None:
    """Raise ``TextError`` naming ``name`` when ``value`` (a string, or a list/dict holding strings)
    contains a NUL or a lone surrogate. Other types pass: their checks live with their fields."""
    if isinstance(value, str):
        problem = text_problem(value)
        if problem is not None:
            raise TextError(f"{name} holds {problem}; remove it and send the text again")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_text(item, f"{name}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, f"a key of {name}")
            check_text(item, f"{name}[{key!r}]")


def clean_text(value: Any) -> Any:
    """``value`` with every lone surrogate replaced by U+FFFD, in strings nested in lists and dicts,
    so a stored value that slipped past ``check_text`` can always be shown."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            # UTF-16 with surrogatepass joins proper pairs again and marks only the lone halves.
            return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, list):
        return [clean_text(v) for v in value]
    if isinstance(value, dict):
        return {clean_text(k): clean_text(v) for k, v in value.items()}
    return value
