"""What the web server lets through, in front of Gradio's own routes (an ASGI middleware).

- **Files.** Gradio serves any file under ``allowed_paths`` (the outputs folder, which it must reach
  to copy a finished video into its cache for the player). Under the outputs folder this guard
  lets through only a finished video or sidecar of a job the caller may open, and a running job's
  live preview (``.work/<job id>/preview-<n>.jpg``) to its owner or an admin; everything else
  there (work folders, kept uploads, calibration, half-written temp files, anything a symlink
  points at) answers 404, like a path that does not exist, so nothing about it leaks, not even
  its size. Gradio's own cache (uploads and the copies it serves) is left to Gradio.
- **Bodies of API calls.** ``/gradio_api/run|call/<endpoint>`` and ``/gradio_api/queue/join``
  bodies are checked before Gradio queues them: the right number of values, text that can be
  encoded, and files that were uploaded rather than named by a server path. Each refusal is a 400
  with a sentence. A ``gr.Error`` from a direct ``/run/`` call (Gradio answers those with 500)
  goes out as 400: the caller sent something we refused, the server did not fail.
"""

from __future__ import annotations

import inspect
import json
import os
import re
from pathlib import Path
from typing import Any, Awaitable, Callable

from gradio import utils as gradio_utils
from gradio_client import utils as client_utils
from starlette.requests import Request

from wan_studio.engine.job import WORK_FOLDER
from wan_studio.engine.preview import PREVIEW_NAME
from wan_studio.engine.text import text_problem
from wan_studio.jobs.access import may_act
from wan_studio.jobs.store import JobNotFound
from wan_studio.services import Studio
from wan_studio.ui.sessions import SessionRevoker

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

FILE_ROUTE = re.compile(r"^(?:/gradio_api)?/file=(.+)$", re.DOTALL)
NAMED_CALL = re.compile(r"^/gradio_api/(run|call|api)/([^/]+)/?$")
CHECKED_POSTS = re.compile(r"^/gradio_api/(run|call|api|queue/join)(/|$)")
# Bodies of API calls are a prompt and a few numbers; a larger one goes to Gradio unchecked (its
# own limits apply) rather than being held in memory here.
MAX_CHECKED_BODY = 4 * 1024 * 1024
SERVED_SUFFIXES = (".mp4", ".json")
FILE_DATA_KEYS = {"path", "url", "size", "orig_name", "mime_type", "is_stream", "meta"}


def _is_under(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def file_decision(studio: Studio, raw: str, user: str | None) -> bool | None:
    """Whether the file route may serve ``raw`` to ``user``: None when the path is not ours to judge
    (outside the outputs and state folders: Gradio's own rules apply), else True or False."""
    if client_utils.is_http_url_like(raw):
        return None
    outputs = studio.settings.outputs_dir.resolve()
    state = studio.settings.state_folder.resolve()
    lexical = Path(os.path.abspath(raw))
    try:
        real = lexical.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return False
    if not any(_is_under(p, f) for p in (lexical, real) for f in (outputs, state)):
        return None
    if not _is_under(real, outputs):
        return False
    if real.relative_to(outputs).parts[:1] == (WORK_FOLDER,) and PREVIEW_NAME.match(real.name):
        return _preview_decision(studio, outputs, lexical, real, user)
    if real.suffix not in SERVED_SUFFIXES or not real.is_file():
        return False
    if any(part.startswith(".") for part in real.relative_to(outputs).parts):
        return False  # .work, .inputs, .calibration and temp files are never served
    caller = studio.caller(user, "file-route")
    for job in studio.queue.store.done_with_output(real.name):
        if any(Path(o).resolve() == real for o in job.outputs) and may_act(caller, job):
            return True
    return False


def _preview_decision(studio: Studio, outputs: Path, lexical: Path, real: Path, user: str | None) -> bool:
    """A running job's live preview (``.work/<job id>/preview-<n>.jpg``): only to its owner or an admin,
    only the file itself (no symlink on the way), only while it exists."""
    parts = real.relative_to(outputs).parts
    if len(parts) != 3 or lexical != real or not real.is_file():
        return False
    try:
        job = studio.queue.store.get(parts[1])
    except JobNotFound:
        return False
    return may_act(studio.caller(user, "file-route"), job)


def _is_file_data(value: dict[str, Any]) -> bool:
    """A file as Gradio takes it in a call (``gradio.FileData``), not any JSON holding ``path``."""
    return "path" in value and (client_utils.is_file_obj_with_meta(value) or set(value) <= FILE_DATA_KEYS)


def _body_problem(data: Any) -> str | None:
    """A sentence for the first value of a call that Gradio must not see, or None."""
    upload_dir = gradio_utils.get_upload_folder()

    def walk(value: Any, where: str) -> str | None:
        if isinstance(value, str):
            problem = text_problem(value)
            return None if problem is None or problem.startswith("a NUL") else f"{where} holds {problem}"
        if isinstance(value, dict):
            path = value.get("path")
            if _is_file_data(value) and isinstance(path, str) and path and not client_utils.is_http_url_like(path) \
                    and not gradio_utils.is_in_or_equal(path, upload_dir):
                return (f"{where} names a file on the server; only uploaded files are read: upload it with the "
                        "call (gradio_client: handle_file(path))")
            items = value.items()
        elif isinstance(value, list):
            items = enumerate(value)  # type: ignore[assignment]
        else:
            return None
        for key, item in items:
            found = walk(key, f"a key in {where}") if isinstance(key, str) else None
            found = found or walk(item, where)
            if found:
                return found
        return None

    if isinstance(data, list):
        for i, value in enumerate(data):
            found = walk(value, f"value {i + 1}")
            if found:
                return found
        return None
    return walk(data, "the body")


def _arity_problem(app: Any, api_name: str, data: Any) -> str | None:
    """A sentence when ``data`` has the wrong number of values for endpoint ``api_name``."""
    blocks = app.get_blocks()
    fn = next((f for f in blocks.fns.values() if f.api_name == api_name), None)
    if fn is None or not isinstance(data, list):  # Gradio's own answers: unknown endpoint, 422
        return None
    api_inputs = [b for b in fn.inputs if not getattr(b, "skip_api", False)]
    if len(data) in (len(fn.inputs), len(api_inputs)):
        return None
    try:  # the handler's own parameter names say what each value is
        params = [n for n in inspect.signature(fn.fn).parameters if n != "request"][:len(api_inputs)]
    except (TypeError, ValueError):
        params = []
    names = f" ({', '.join(params)})" if len(params) == len(api_inputs) else ""
    count = f"{len(api_inputs)} value{'s' if len(api_inputs) != 1 else ''}"
    return f"/{api_name} takes {count}{names}; {len(data)} {'was' if len(data) == 1 else 'were'} sent"


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}
    return receive


async def _answer(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _user_errors_as_400(send: Send) -> Send:
    """``send`` that turns a 500 carrying a ``gr.Error`` message into a 400 (same body)."""
    held: Message | None = None

    async def wrapped(message: Message) -> None:
        nonlocal held
        if message["type"] == "http.response.start" and message["status"] == 500:
            held = message
            return
        if held is not None and message["type"] == "http.response.body":
            try:
                refused = isinstance(json.loads(message.get("body", b"") or b"null").get("error"), str)
            except (ValueError, AttributeError):
                refused = False
            await send({**held, "status": 400 if refused else 500})
            held = None
        await send(message)
    return wrapped


def _login_token(scope: Scope, server: Any) -> str | None:
    """The Gradio login token the request's cookie carries, or None."""
    cookie_id = getattr(server, "cookie_id", None)
    if cookie_id is None:
        return None
    cookies = Request(scope).cookies
    return cookies.get(f"access-token-{cookie_id}") or cookies.get(f"access-token-unsecure-{cookie_id}")


class HttpGuard:
    """The ASGI middleware; install with ``launch(app_kwargs=guard_app_kwargs(studio))``."""

    def __init__(self, app: ASGIApp, studio: Studio) -> None:
        self.app = app
        self.studio = studio
        self.revoker = SessionRevoker(studio.accounts) if studio.accounts is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        server = scope.get("app")
        if self.revoker is not None and server is not None:
            self.revoker.attach(server)
            token = _login_token(scope, server)
            if token is not None and not self.revoker.is_current(server.tokens.get(token)):
                server.tokens.pop(token, None)  # removed from the accounts file: logged out now
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        method = scope.get("method", "GET")
        match = FILE_ROUTE.match(path)
        if match and method in ("GET", "HEAD"):
            return await self._file(scope, receive, send, match.group(1))
        if method == "POST" and CHECKED_POSTS.match(path):
            return await self._call(scope, receive, send, path)
        return await self.app(scope, receive, send)

    async def _file(self, scope: Scope, receive: Receive, send: Send, raw: str) -> None:
        from starlette.concurrency import run_in_threadpool

        app = scope.get("app")
        user = None
        if app is not None and getattr(app, "auth", None) is not None:
            token = _login_token(scope, app)
            user = app.tokens.get(token) if token else None
            if user is None:
                return await self.app(scope, receive, send)  # Gradio's login check answers 401
        decision = await run_in_threadpool(file_decision, self.studio, raw, user)
        if decision is False:
            return await _answer(send, 404, {"detail": "Not Found"})
        return await self.app(scope, receive, send)

    async def _call(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        headers = dict(scope.get("headers") or [])
        try:
            length = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            length = 0
        if b"json" not in headers.get(b"content-type", b"") or length > MAX_CHECKED_BODY:
            return await self.app(scope, receive, send)
        body = await _read_body(receive)
        try:
            payload = json.loads(body or b"null")
        except (ValueError, UnicodeDecodeError):
            payload = None  # Gradio's own 422 names the JSON error
        named = NAMED_CALL.match(path)
        if named and not (isinstance(payload, dict) and isinstance(payload.get("data"), list)):
            return await _answer(send, 400, {"error": 'the body must be a JSON object {"data": [values]} with '
                                                      f"one value per input of /{named.group(2)}"})
        data = payload.get("data") if isinstance(payload, dict) and "data" in payload else payload
        problem = _body_problem(data) if payload is not None else None
        if problem is None and named and payload is not None and scope.get("app") is not None:
            problem = _arity_problem(scope["app"], named.group(2), data)
        if problem is not None:
            return await _answer(send, 400, {"error": problem})
        direct = named is not None and named.group(1) in ("run", "api")
        await self.app(scope, _replay(body), _user_errors_as_400(send) if direct else send)


def guard_app_kwargs(studio: Studio) -> dict[str, Any]:
    """``launch(app_kwargs=...)`` that puts ``HttpGuard`` in front of every Gradio route."""
    from starlette.middleware import Middleware

    return {"middleware": [Middleware(HttpGuard, studio=studio)]}
