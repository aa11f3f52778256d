"""User accounts for a shared app: a text file of ``user:scrypt-hash:role`` lines.

Passwords are never stored in clear: each line holds a salted scrypt hash. Roles are ``user`` and
``admin``; only admins may unload models or act on other people's jobs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Role = Literal["user", "admin"]
NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
# scrypt cost: ~50 ms per check on a desktop CPU, so guessing is slow and logins stay quick.
SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class AccountsError(ValueError):
    """The accounts file or a new account is malformed; the message says where."""


@dataclass(frozen=True)
class Account:
    """One login. ``secret`` is ``scrypt$<salt b64>$<hash b64>``."""

    name: str
    secret: str
    role: Role

    @property
    def is_admin(self) -> bool:
        """True for the admin role."""
        return self.role == "admin"


def hash_password(password: str, salt: bytes | None = None) -> str:
    """A salted scrypt hash of ``password`` in our ``scrypt$salt$hash`` text form."""
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, dklen=32, **SCRYPT)
    return "scrypt$" + base64.b64encode(salt).decode() + "$" + base64.b64encode(digest).decode()


def verify_password(password: str, secret: str) -> bool:
    """Constant-time check of ``password`` against a stored ``scrypt$salt$hash``."""
    try:
        scheme, salt_b64, hash_b64 = secret.split("$")
        salt, expected = base64.b64decode(salt_b64), base64.b64decode(hash_b64)
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, dklen=len(expected), **SCRYPT)
    return hmac.compare_digest(digest, expected)


class Accounts:
    """The accounts of one file; re-read when the file changes, so edits need no restart."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._mtime: tuple[int, int, int] | None = None
        self._accounts: dict[str, Account] = {}
        self._load()

    def _load(self) -> None:
        try:
            st = self.path.stat()
            # Size and inode too: an edit within the clock's resolution, or a file replaced by a
            # rename (``add_account``), still reads as a change.
            mtime = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            raise AccountsError(f"accounts file {self.path} does not exist; create it with "
                                f"python app.py --accounts {self.path} --add-user NAME") from None
        if mtime == self._mtime:
            return
        accounts: dict[str, Account] = {}
        for number, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(":")
            if len(parts) != 3 or not NAME_RE.match(parts[0]) or parts[2] not in ("user", "admin") \
                    or not parts[1].startswith("scrypt$"):
                raise AccountsError(f"{self.path} line {number}: expected name:scrypt-hash:user|admin")
            accounts[parts[0]] = Account(parts[0], parts[1], parts[2])  # type: ignore[arg-type]
        if not accounts:
            raise AccountsError(f"{self.path} holds no accounts")
        self._accounts, self._mtime = accounts, mtime

    def get(self, name: str | None) -> Account | None:
        """The account called ``name``, or None (also while the file is missing or malformed: a
        half-saved edit logs nobody in rather than answering with a server error)."""
        return self._current().get(name or "")

    def _current(self) -> dict[str, Account]:
        with self._lock:
            try:
                self._load()
            except (AccountsError, OSError, UnicodeDecodeError):
                return {}
            return self._accounts

    def secrets(self) -> dict[str, str]:
        """Every account's name and stored hash as the file says now (re-read when it changed); a
        file that became unreadable or empty counts as no accounts, so nobody stays logged in."""
        return {a.name: a.secret for a in self._current().values()}

    def check(self, name: str, password: str) -> bool:
        """Gradio's ``auth`` callable: True when ``name`` exists and ``password`` matches."""
        account = self.get(name)
        return account is not None and verify_password(password, account.secret)

    def is_admin(self, name: str | None) -> bool:
        """True when ``name`` has the admin role."""
        account = self.get(name)
        return account is not None and account.is_admin


def add_account(path: Path, name: str, password: str, role: Role = "user") -> None:
    """Add or replace ``name`` in the accounts file (created if missing), keeping other lines."""
    if not NAME_RE.match(name):
        raise AccountsError("a user name is 1–64 letters, digits or _ . @ -")
    if len(password) < 8:
        raise AccountsError("a password needs at least 8 characters")
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    lines = [ln for ln in lines if ln.split(":", 1)[0] != name]
    lines.append(f"{name}:{hash_password(password)}:{role}")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
