"""Ends the logins of accounts that were removed from the accounts file or given a new password.

Gradio keeps a login as a cookie token mapped to a user name (``App.tokens``) for as long as the
server runs; the browser UI, the file route, REST calls with the cookie and ``gradio_client``
sessions all present that token. A watcher compares the accounts file with what it held a moment
ago and drops every token of a name that is gone or whose password hash changed, so the next call
of that session answers 401 and the person has to log in again.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

from wan_studio.accounts import Accounts

log = logging.getLogger(__name__)

# How often the accounts file is compared, seconds: a revoked login stops working within this.
POLL_S = 1.0


class SessionRevoker:
    """Watches ``accounts`` and drops the Gradio login tokens of changed accounts."""

    def __init__(self, accounts: Accounts, poll_s: float = POLL_S) -> None:
        self.accounts = accounts
        self.poll_s = poll_s
        self._servers: weakref.WeakSet[Any] = weakref.WeakSet()
        self._known = accounts.secrets()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def attach(self, server: Any) -> None:
        """Watch the tokens of ``server`` (a Gradio ``App``) too; starts the watcher once."""
        with self._lock:
            self._servers.add(server)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="session-revoker", daemon=True)
                self._thread.start()

    def is_current(self, user: str | None) -> bool:
        """False when ``user`` is no longer in the accounts file (checked now, not at the next poll)."""
        return user is None or self.accounts.get(user) is not None

    def drop(self, server: Any, names: set[str]) -> int:
        """Remove every login token of ``names`` from ``server``; returns how many went."""
        tokens: dict[str, str] = getattr(server, "tokens", {})
        stale = [t for t, name in list(tokens.items()) if name in names]
        for token in stale:
            tokens.pop(token, None)
        return len(stale)

    def check_now(self) -> set[str]:
        """Compare the file with the last look; drop the tokens of changed names and return them."""
        now = self.accounts.secrets()
        changed = {name for name, secret in self._known.items() if now.get(name) != secret}
        self._known = now
        if changed:
            dropped = sum(self.drop(server, changed) for server in list(self._servers))
            log.warning("logins ended for %s (removed or new password): %d session(s)",
                        ", ".join(sorted(changed)), dropped)
        return changed

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.check_now()
            except Exception:  # noqa: BLE001 - the watcher must outlive one unreadable moment of the file
                log.exception("could not compare the accounts file")

    def stop(self) -> None:
        """Stop the watcher thread."""
        self._stop.set()
