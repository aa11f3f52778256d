"""One dataclass of settings: command-line flags, environment, and the paths derived from them."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Settings:
    """Where things live and how the server listens.

    Every field can be set by a flag of ``app.py`` or an environment variable ``WAN_STUDIO_<NAME>``.
    """

    host: str = "127.0.0.1"
    port: int = 7860
    models_dir: Path = Path("models")
    outputs_dir: Path = Path("outputs")
    share: bool = False
    auth: tuple[str, str] | None = None
    default_model: str | None = None
    download: str | None = None
    max_prompt_chars: int = 4000
    # Worker processes: None = one per GPU (one CPU worker without a GPU); 0 = accept jobs only.
    workers: int | None = None
    max_queue: int = 1000
    max_attempts: int = 3

    def __post_init__(self) -> None:
        self.models_dir = Path(self.models_dir).expanduser()
        self.outputs_dir = Path(self.outputs_dir).expanduser()

    @property
    def jobs_db(self) -> Path:
        """The job queue database (SQLite) inside the outputs folder."""
        return self.outputs_dir / "jobs.db"

    @property
    def auth_pairs(self) -> list[tuple[str, str]] | None:
        """Credentials in the form Gradio's ``launch(auth=...)`` takes."""
        return [self.auth] if self.auth else None


def parse_auth(text: str) -> tuple[str, str]:
    """Parse ``user:password``; the password may contain colons."""
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise argparse.ArgumentTypeError("--auth must look like user:password (both non-empty)")
    return user, password


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``app.py``."""
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="app.py", description="Wan Studio: run the Wan2.2 video models on consumer GPUs."
    )
    p.add_argument("--host", default=env("WAN_STUDIO_HOST", "127.0.0.1"),
                   help="address to listen on (0.0.0.0 for the local network)")
    p.add_argument("--port", type=int, default=int(env("WAN_STUDIO_PORT", "7860")))
    p.add_argument("--models-dir", type=Path, default=Path(env("WAN_STUDIO_MODELS_DIR", "models")),
                   help="folder holding models in Diffusers layout (default ./models)")
    p.add_argument("--outputs-dir", type=Path, default=Path(env("WAN_STUDIO_OUTPUTS_DIR", "outputs")),
                   help="folder for videos and their JSON sidecars (default ./outputs)")
    p.add_argument("--share", action="store_true",
                   help="open a public link (always password-protected)")
    p.add_argument("--auth", type=parse_auth, default=None, metavar="USER:PASS",
                   help="require this login; with --share and no --auth a password is generated")
    p.add_argument("--model", dest="default_model", default=env("WAN_STUDIO_MODEL"),
                   help="model preselected in the UI (default: TI2V-5B if downloaded, else demo)")
    p.add_argument("--download", metavar="MODEL", default=None,
                   help="download MODEL (e.g. ti2v-5b) into --models-dir and exit")
    p.add_argument("--workers", type=int, default=_env_int("WAN_STUDIO_WORKERS"),
                   help="worker processes (default: one per GPU, or one on the CPU; 0 = queue only)")
    p.add_argument("--max-queue", type=int, default=int(env("WAN_STUDIO_MAX_QUEUE", "1000")),
                   help="most unfinished jobs the queue accepts (default 1000)")
    return p


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else None


def settings_from_args(argv: list[str] | None = None) -> Settings:
    """Parse flags (and environment defaults) into ``Settings``."""
    ns = build_parser().parse_args(argv)
    return Settings(
        host=ns.host,
        port=ns.port,
        models_dir=ns.models_dir,
        outputs_dir=ns.outputs_dir,
        share=ns.share,
        auth=ns.auth,
        default_model=ns.default_model,
        download=ns.download,
        workers=ns.workers,
        max_queue=ns.max_queue,
    )
