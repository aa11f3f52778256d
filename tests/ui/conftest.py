"""A real Gradio server on 127.0.0.1 with the demo model, shared by the UI and API tests."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    studio: object
    outputs: Path


@pytest.fixture(scope="package")
def server(tmp_path_factory) -> Iterator[Server]:
    from wan_studio.services import Studio
    from wan_studio.settings import Settings
    from wan_studio.ui.blocks import build_app, launch_kwargs

    root = tmp_path_factory.mktemp("server")
    studio = Studio.create(Settings(models_dir=root / "models", outputs_dir=root / "outputs"))
    app = build_app(studio)
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
               **launch_kwargs(studio))
    try:
        yield Server(f"http://127.0.0.1:{port}/", studio, root / "outputs")
    finally:
        app.close()
        studio.close()
