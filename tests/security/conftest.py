"""A real Gradio server on 127.0.0.1 with an accounts file: two users (ann, bob) and an admin (root)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PASSWORDS = {"ann": "ann-password", "bob": "bob-password", "root": "root-password"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class AccountsServer:
    url: str
    studio: object
    app: object
    outputs: Path

    def auth(self, name: str) -> tuple[str, str]:
        return name, PASSWORDS[name]


def start(root: Path, workers: int) -> tuple[object, object, str]:
    """Build a studio with the accounts file and launch it with login required."""
    from wan_studio.accounts import add_account
    from wan_studio.services import Studio
    from wan_studio.settings import Settings
    from wan_studio.ui.blocks import build_app, launch_kwargs

    accounts = root / "accounts.txt"
    for name, password in PASSWORDS.items():
        add_account(accounts, name, password, "admin" if name == "root" else "user")
    studio = Studio.create(Settings(models_dir=root / "models", outputs_dir=root / "outputs", workers=workers,
                                    accounts_file=accounts))
    studio.start()
    app = build_app(studio)
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
               auth=studio.accounts.check, **launch_kwargs(studio))
    return studio, app, f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def idle_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AccountsServer]:
    """No worker processes: jobs stay queued, so ownership rules can be checked deterministically."""
    root = tmp_path_factory.mktemp("accounts-idle")
    studio, app, url = start(root, workers=0)
    try:
        yield AccountsServer(url, studio, app, root / "outputs")
    finally:
        app.close()  # type: ignore[attr-defined]
        studio.close()  # type: ignore[attr-defined]
