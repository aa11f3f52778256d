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
    # GPU telemetry and thermal guard (°C; seconds between samples).
    thermal_guard: bool = True
    thermal_pause_c: float = 83.0
    thermal_resume_c: float = 75.0
    telemetry_interval_s: float = 1.0
    # Ray cluster ("auto" or "HOST:PORT"; None runs jobs on this PC only) and how jobs may split.
    ray_address: str | None = None
    split: str = "auto"

    def __post_init__(self) -> None:
        self.models_dir = Path(self.models_dir).expanduser()
        self.outputs_dir = Path(self.outputs_dir).expanduser()

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
    p.add_argument("--thermal-pause-c", type=float, default=float(env("WAN_STUDIO_THERMAL_PAUSE_C", "83")),
                   metavar="C", help="pause a running job between steps when a GPU reaches C °C (default 83)")
    p.add_argument("--thermal-resume-c", type=float, default=float(env("WAN_STUDIO_THERMAL_RESUME_C", "75")),
                   metavar="C", help="resume a paused job once its GPUs are at or below C °C (default 75)")
    p.add_argument("--no-thermal-guard", dest="thermal_guard", action="store_false",
                   default=env("WAN_STUDIO_THERMAL_GUARD", "1") not in ("0", "false", "no"),
                   help="never pause jobs for heat (temperatures are still shown)")
    p.add_argument("--ray-address", default=env("WAN_STUDIO_RAY_ADDRESS"), metavar="auto|HOST:PORT",
                   help="run jobs on the GPUs of a Ray cluster (docs/CLUSTER.md); 'auto' joins the one on this PC")
    p.add_argument("--split", choices=("off", "cfg", "experts", "auto"), default=env("WAN_STUDIO_SPLIT", "auto"),
                   help="with --ray-address: let one job use two GPUs (cfg: guidance branches in parallel; "
                        "experts: A14B high/low-noise experts on different GPUs; auto: both where they apply)")
    return p


def settings_from_args(argv: list[str] | None = None) -> Settings:
    """Parse flags (and environment defaults) into ``Settings``."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    if not 40 <= ns.thermal_resume_c < ns.thermal_pause_c <= 110:
        parser.error(f"--thermal-resume-c ({ns.thermal_resume_c:g}) must be below --thermal-pause-c "
                     f"({ns.thermal_pause_c:g}), both within 40–110 °C")
    return Settings(
        host=ns.host,
        port=ns.port,
        models_dir=ns.models_dir,
        outputs_dir=ns.outputs_dir,
        share=ns.share,
        auth=ns.auth,
        default_model=ns.default_model,
        download=ns.download,
        thermal_guard=ns.thermal_guard,
        thermal_pause_c=ns.thermal_pause_c,
        thermal_resume_c=ns.thermal_resume_c,
        ray_address=ns.ray_address,
        split=ns.split,
    )
