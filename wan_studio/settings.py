"""One dataclass of settings: command-line flags, environment, and the paths derived from them."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wan_studio.engine.accel import SpeedOptions


@dataclass
class Settings:
    """Where things live and how the server listens.

    Every field can be set by a flag of ``app.py`` or an environment variable ``WAN_STUDIO_<NAME>``.
    """

    host: str = "127.0.0.1"
    port: int = 7860
    models_dir: Path = Path("models")
    # A ComfyUI ``models`` folder read as it is (diffusion_models/, text_encoders/, vae/, loras/).
    comfyui_dir: Path | None = None
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
    allow_fp8: bool = True
    allow_8bit: bool = False
    # GPU telemetry and thermal guard (°C; seconds between samples).
    thermal_guard: bool = True
    thermal_pause_c: float = 83.0
    thermal_resume_c: float = 75.0
    telemetry_interval_s: float = 1.0
    # Ray cluster ("auto" or "HOST:PORT"; None runs jobs on this PC only) and how jobs may split.
    ray_address: str | None = None
    split: str = "auto"
    # Sharing: accounts file (user:scrypt-hash:role lines) and limits for non-admin users.
    accounts_file: Path | None = None
    add_user: str | None = None
    add_admin: bool = False
    max_job_cost: float | None = None
    max_queued_jobs: int | None = None
    max_upload_mb: int = 50
    # Speed knobs: attention kernel (auto or a backend name) and torch.compile (auto/on/off).
    attention: str = "auto"
    compile: str = "auto"
    # LoRA files (*.safetensors) offered by the Advanced tab and accepted in requests.
    loras_dir: Path = Path("loras")
    # The job database and its lock, kept out of the served outputs folder (None: "<outputs>-state"
    # beside it). New jobs are refused while the outputs disk has less than this free, MB.
    state_dir: Path | None = None
    disk_reserve_mb: int = 64
    # Show tracebacks (and Gradio's own messages) for bug reports instead of one sentence.
    debug: bool = False
    # Load and place the default model in each worker at start when the machine has the RAM for it.
    prepare_model: bool = True

    def __post_init__(self) -> None:
        self.models_dir = Path(self.models_dir).expanduser()
        self.outputs_dir = Path(self.outputs_dir).expanduser()
        self.loras_dir = Path(self.loras_dir).expanduser()
        if self.comfyui_dir is not None:
            self.comfyui_dir = Path(self.comfyui_dir).expanduser()
        if self.accounts_file is not None:
            self.accounts_file = Path(self.accounts_file).expanduser()
        if self.state_dir is not None:
            self.state_dir = Path(self.state_dir).expanduser()

    @property
    def speed(self) -> SpeedOptions:
        """The speed knobs as the engine takes them."""
        from wan_studio.engine.accel import SpeedOptions

        return SpeedOptions(attention=self.attention, compile=self.compile)  # type: ignore[arg-type]

    @property
    def shared(self) -> bool:
        """True when people other than the person at this machine can reach the app."""
        return self.share or self.accounts_file is not None or self.host not in ("127.0.0.1", "localhost", "::1")

    @property
    def state_folder(self) -> Path:
        """Where the app keeps what it never serves: the job database, its WAL and lock."""
        if self.state_dir is not None:
            return self.state_dir
        outputs = self.outputs_dir.resolve()
        return outputs.with_name(f"{outputs.name or 'outputs'}-state")

    @property
    def jobs_db(self) -> Path:
        """The job queue database (SQLite), beside the outputs folder rather than in it."""
        return self.state_folder / "jobs.db"

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
    from wan_studio import __version__

    p = argparse.ArgumentParser(
        prog="app.py", description="Wan Studio: run the Wan2.2 video models on consumer GPUs."
    )
    p.add_argument("--version", action="version", version=f"Wan Studio {__version__}")
    p.add_argument("--debug", action="store_true", default=env("WAN_STUDIO_DEBUG", "") not in ("", "0"),
                   help="print full tracebacks and Gradio's own messages (for bug reports)")
    p.add_argument("--host", default=env("WAN_STUDIO_HOST", "127.0.0.1"),
                   help="address to listen on (0.0.0.0 for the local network)")
    p.add_argument("--port", type=int, default=int(env("WAN_STUDIO_PORT", "7860")))
    p.add_argument("--models-dir", type=Path, default=Path(env("WAN_STUDIO_MODELS_DIR", "models")),
                   help="folder holding models in Diffusers layout (default ./models)")
    p.add_argument("--comfyui-dir", type=Path, default=env("WAN_STUDIO_COMFYUI_DIR"), metavar="PATH",
                   help="also read models from a ComfyUI models folder as it is (diffusion_models/, "
                        "text_encoders/, vae/; its loras/ too unless --loras-dir is given)")
    p.add_argument("--outputs-dir", type=Path, default=Path(env("WAN_STUDIO_OUTPUTS_DIR", "outputs")),
                   help="folder for videos and their JSON sidecars (default ./outputs)")
    p.add_argument("--loras-dir", type=Path, default=Path(env("WAN_STUDIO_LORAS_DIR", "loras")),
                   help="folder of LoRA files (*.safetensors) for the Advanced tab (default ./loras)")
    p.add_argument("--state-dir", type=Path, default=env("WAN_STUDIO_STATE_DIR"),
                   help="folder for the job database (default: <outputs-dir>-state beside the outputs; never served)")
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
    p.add_argument("--no-fp8", dest="allow_fp8", action="store_false",
                   help="never store transformer weights in fp8 (full quality; may need more VRAM or be slower)")
    p.add_argument("--allow-8bit", action="store_true",
                   help="allow bitsandbytes 8-bit weights when nothing else fits (slower, slight quality loss)")
    p.add_argument("--thermal-pause-c", type=float, default=float(env("WAN_STUDIO_THERMAL_PAUSE_C", "83")),
                   metavar="C", help="pause a running job between steps when a GPU reaches C °C (default 83)")
    p.add_argument("--thermal-resume-c", type=float, default=float(env("WAN_STUDIO_THERMAL_RESUME_C", "75")),
                   metavar="C", help="resume a paused job once its GPUs are at or below C °C (default 75)")
    p.add_argument("--no-prepare", dest="prepare_model", action="store_false",
                   default=env("WAN_STUDIO_PREPARE", "1") not in ("0", "false", "no"),
                   help="do not load the default model into the workers at start (it loads with the first job)")
    p.add_argument("--no-thermal-guard", dest="thermal_guard", action="store_false",
                   default=env("WAN_STUDIO_THERMAL_GUARD", "1") not in ("0", "false", "no"),
                   help="never pause jobs for heat (temperatures are still shown)")
    p.add_argument("--ray-address", default=env("WAN_STUDIO_RAY_ADDRESS"), metavar="auto|HOST:PORT",
                   help="run jobs on the GPUs of a Ray cluster (docs/CLUSTER.md); 'auto' joins the one on this PC")
    p.add_argument("--split", choices=("off", "cfg", "experts", "auto"), default=env("WAN_STUDIO_SPLIT", "auto"),
                   help="with --ray-address: let one job use two GPUs (cfg: guidance branches in parallel; "
                        "experts: A14B high/low-noise experts on different GPUs; auto: both where they apply)")
    p.add_argument("--accounts", dest="accounts_file", type=Path, default=env("WAN_STUDIO_ACCOUNTS"),
                   metavar="FILE", help="log in with the accounts in FILE (lines user:scrypt-hash:role)")
    p.add_argument("--add-user", metavar="NAME", default=None,
                   help="add or update NAME in the --accounts file (asks for the password) and exit")
    p.add_argument("--admin", dest="add_admin", action="store_true",
                   help="with --add-user: give the admin role (unload models, act on others' jobs)")
    p.add_argument("--max-job-cost", type=float, default=None, metavar="MPX_FRAME_STEPS",
                   help="largest job a non-admin may run, in width×height×frames×steps/10⁶ "
                        "(720p 5 s 50 steps ≈ 5450; default: unlimited locally, 2 such jobs when shared)")
    p.add_argument("--max-queued-jobs", type=int, default=None, metavar="N",
                   help="jobs one non-admin user may have waiting or running (default: unlimited locally, 5 when shared)")
    p.add_argument("--attention", default=env("WAN_STUDIO_ATTENTION", "auto"),
                   choices=["auto", "sdpa", "cudnn", "flash", "flash3", "sage", "xformers"],
                   help="attention kernel (default auto: per GPU and installed packages, checked against exact attention)")
    p.add_argument("--compile", default=env("WAN_STUDIO_COMPILE", "auto"), choices=["auto", "on", "off"],
                   help="torch.compile the transformer blocks (auto: where measured to pay; ~10 s once per model)")
    p.add_argument("--max-upload-mb", type=int, default=int(env("WAN_STUDIO_MAX_UPLOAD_MB", "50")), metavar="MB",
                   help="largest file a browser or client may upload (default 50)")
    return p


def _loras_dir(ns: argparse.Namespace, parser: argparse.ArgumentParser) -> Path:
    """``--loras-dir``; when it is left at its default and a ComfyUI folder with a ``loras/`` is
    given, that one (the user's LoRAs are where ComfyUI keeps them)."""
    comfy_loras = Path(ns.comfyui_dir).expanduser() / "loras" if ns.comfyui_dir else None
    if comfy_loras is not None and ns.loras_dir == parser.get_default("loras_dir") and comfy_loras.is_dir():
        return comfy_loras
    return ns.loras_dir


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else None


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
        workers=ns.workers,
        max_queue=ns.max_queue,
        allow_fp8=ns.allow_fp8,
        allow_8bit=ns.allow_8bit,
        thermal_guard=ns.thermal_guard,
        thermal_pause_c=ns.thermal_pause_c,
        thermal_resume_c=ns.thermal_resume_c,
        ray_address=ns.ray_address,
        split=ns.split,
        accounts_file=ns.accounts_file,
        add_user=ns.add_user,
        add_admin=ns.add_admin,
        max_job_cost=ns.max_job_cost,
        max_queued_jobs=ns.max_queued_jobs,
        max_upload_mb=ns.max_upload_mb,
        attention=ns.attention,
        compile=ns.compile,
        loras_dir=_loras_dir(ns, parser),
        comfyui_dir=ns.comfyui_dir,
        state_dir=ns.state_dir,
        debug=ns.debug,
        prepare_model=ns.prepare_model,
    )
