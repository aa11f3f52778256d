"""Plain JSON routes for scripts that queue many jobs: ``POST /api/v1/jobs`` (submit),
``GET /api/v1/jobs/{id}`` (status) and ``DELETE /api/v1/jobs/{id}`` (cancel).

The named Gradio endpoints (``/submit``, ``/job_status``, ...) do the same through Gradio's event
machinery, which costs about 10 ms of server CPU per call; these routes cost about 1 ms, so fifty
scripts submitting at once get their job ids back quickly (docs/BENCHMARKS.md, "Submission
latency"). The rules are the same: the same preset and settings fields as ``/submit``, the per-user
limits, and, when the app has a login, the same credentials: the browser's login cookie (``POST
/login`` once) or HTTP Basic. A checked Basic password is remembered for a while, so the slow
password hash (scrypt, on purpose) is not paid on every call.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import inspect
import json
import secrets
import threading
import time
from typing import Any, Callable

import gradio as gr
from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from wan_studio.engine.request import RequestError
from wan_studio.jobs.access import Caller, NotYourJob, check_may_act
from wan_studio.jobs.store import IllegalTransition, JobNotFound, QueueFull
from wan_studio.services import Studio
from wan_studio.ui.jobs_api import api_request, view_for

PREFIX = "/api/v1"
# A submission is a prompt and a few numbers; anything larger is refused before it is parsed.
MAX_BODY_BYTES = 256 * 1024
# How long a checked Basic password stays accepted without hashing it again, seconds.
CREDENTIAL_TTL_S = 600.0
MAX_REMEMBERED = 1024


class _Credentials:
    """Checks a request's login against the app's: Gradio's login cookie, or HTTP Basic."""

    def __init__(self, server: Any, secret_of: Callable[[str], str | None] | None = None) -> None:
        self.server = server
        # The account's stored hash now: a remembered password stops working once it changes or
        # the account is removed from the accounts file.
        self.secret_of = secret_of
        self._salt = secrets.token_bytes(16)
        self._ok: dict[bytes, tuple[str, float, str | None]] = {}
        self._lock = threading.Lock()

    @property
    def required(self) -> bool:
        return self.server.auth is not None or self.server.auth_dependency is not None

    def user(self, request: Request) -> str | None:
        """The logged-in name, ``None`` when the app has no login; raises 401 otherwise."""
        if not self.required:
            return None
        cookie_id = self.server.cookie_id
        token = request.cookies.get(f"access-token-{cookie_id}") or request.cookies.get(
            f"access-token-unsecure-{cookie_id}")
        if token and token in self.server.tokens:
            return self.server.tokens[token]
        header = request.headers.get("authorization", "")
        if header[:6].lower() == "basic ":
            name = self._basic(header[6:].strip())
            if name is not None:
                return name
        raise HTTPException(401, detail="log in: HTTP Basic with your user name and password, or the "
                                        "cookie from POST /login", headers={"WWW-Authenticate": 'Basic realm="Wan Studio"'})

    def _basic(self, encoded: str) -> str | None:
        key = hashlib.sha256(self._salt + encoded.encode()).digest()
        now = time.monotonic()
        with self._lock:
            hit = self._ok.get(key)
        if hit is not None and now - hit[1] < CREDENTIAL_TTL_S:
            if self.secret_of is None or self.secret_of(hit[0]) == hit[2]:
                return hit[0]
            with self._lock:
                self._ok.pop(key, None)
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        if not self._check(user.strip(), password):
            return None
        with self._lock:
            if len(self._ok) >= MAX_REMEMBERED:
                self._ok.clear()
            self._ok[key] = (user.strip(), now, self.secret_of(user.strip()) if self.secret_of else None)
        return user.strip()

    def _check(self, user: str, password: str) -> bool:
        auth = self.server.auth
        if auth is None:
            return False
        if callable(auth):
            if inspect.iscoroutinefunction(auth):
                return False  # only the app's own (synchronous) checks are wired here
            return bool(auth(user, password))
        return user in auth and hmac.compare_digest(password.encode("utf-8"), str(auth[user]).encode("utf-8"))


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def mount(app: gr.Blocks, studio: Studio) -> None:
    """Add the routes to a launched app (``app.app`` exists once ``launch`` has run)."""
    server = app.app
    accounts = studio.accounts

    def secret_of(name: str) -> str | None:
        account = accounts.get(name) if accounts is not None else None
        return account.secret if account is not None else None

    credentials = _Credentials(server, secret_of if accounts is not None else None)

    def caller(request: Request) -> Caller:
        user = credentials.user(request)
        host = request.client.host if request.client else "unknown"
        return studio.caller(user, f"rest:{user or host}")

    async def submit(request: Request) -> Any:
        """Queue one video. Body: ``{"prompt", "preset"?, "seed"?, "priority"?, "settings"?}``."""
        # The password check and the database write block, so they run off the server's event loop.
        who = await run_in_threadpool(caller, request)
        if int(request.headers.get("content-length") or 0) > MAX_BODY_BYTES:
            return _error(413, f"the request body is larger than {MAX_BODY_BYTES // 1024} KiB")
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            return _error(413, f"the request body is larger than {MAX_BODY_BYTES // 1024} KiB")
        try:
            body = json.loads(raw or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            return _error(400, f"the body is not valid JSON: {e}")
        if not isinstance(body, dict):
            return _error(400, 'the body must be a JSON object such as {"prompt": "a red fox in snow"}')
        unknown = sorted(set(body) - {"prompt", "preset", "seed", "priority", "settings"})
        if unknown:
            return _error(400, f"unknown field(s) {', '.join(map(str, unknown))}; use prompt, preset, seed, "
                               "priority, settings")
        return await run_in_threadpool(_queue, who, body)

    def _queue(who: Caller, body: dict[str, Any]) -> JSONResponse:
        try:
            req, priority = api_request(studio, body.get("prompt"), body.get("preset", "demo-fast"),
                                        body.get("seed", -1), body.get("settings"), body.get("priority", 0))
            job = studio.submit(req, owner=who.session, user=who.key, priority=priority)
        except QueueFull as e:
            return _error(429, str(e))
        except RequestError as e:
            return _error(400, str(e))
        except (TypeError, ValueError) as e:
            return _error(400, f"invalid settings: {e}")
        return JSONResponse({"job_id": job.id, "status": job.status}, status_code=201)

    def status(job_id: str, request: Request) -> Any:
        """A job as ``/job_status`` shows it."""
        who = caller(request)
        try:
            job = studio.queue.get(job_id.strip())
        except JobNotFound:
            return _error(404, f"no job with id {job_id!r} (it may have been deleted)")
        ahead = studio.queue.store.queued_ahead(job.id) if job.status == "queued" else None
        return view_for(who, job, ahead, studio)

    def cancel(job_id: str, request: Request) -> Any:
        """Cancel a waiting job, or stop a running one after its current step (own jobs; admins: any)."""
        who = caller(request)
        try:
            job = studio.queue.get(job_id.strip())
            check_may_act(who, job, "cancel")
            return view_for(who, studio.queue.cancel(job.id), studio=studio)
        except JobNotFound:
            return _error(404, f"no job with id {job_id!r} (it may have been deleted)")
        except NotYourJob as e:
            return _error(403, str(e))
        except IllegalTransition as e:
            return _error(409, str(e))

    server.add_api_route(f"{PREFIX}/jobs", submit, methods=["POST"])
    server.add_api_route(f"{PREFIX}/jobs/{{job_id}}", status, methods=["GET"])
    server.add_api_route(f"{PREFIX}/jobs/{{job_id}}", cancel, methods=["DELETE"])
