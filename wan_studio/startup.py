"""What ``app.py`` checks and says before and while it starts: one sentence per problem a user can
cause (bad folder, taken port, missing optional extra, unreachable Hub), the console log format,
and our own "where it is served" lines in place of Gradio's hints.

Nothing here imports torch, diffusers or gradio at module level: ``--help`` and argument errors
must answer at once.
"""

from __future__ import annotations

import errno
import importlib.metadata
import logging
import socket
import sys
import tempfile
from pathlib import Path

from wan_studio.settings import Settings

log = logging.getLogger("wan_studio.app")

# Flags whose feature lives in an optional requirements file: (flag, distribution, file).
EXTRAS = {
    "ray": ("--ray-address", "requirements-cluster.txt"),
    "bitsandbytes": ("--allow-8bit", "requirements-gpu.txt"),
    "xformers": ("--attention xformers", "requirements-gpu.txt"),
}


class StartupError(Exception):
    """A start-up problem the user can fix; the message is one sentence, ``code`` the exit status."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def configure_logging(debug: bool) -> None:
    """Console lines ``HH:MM:SS message`` from our loggers (job events, warnings) on stderr.

    Other libraries' INFO chatter stays hidden unless ``debug``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    ours = logging.getLogger("wan_studio")
    ours.addHandler(handler)
    ours.setLevel(logging.DEBUG if debug else logging.INFO)
    ours.propagate = False
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING)


def installed(distribution: str) -> bool:
    """Whether a package is installed, read from its metadata (nothing is imported)."""
    try:
        importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def check_extras(settings: Settings) -> None:
    """Refuse a flag whose optional package is missing, naming the requirements file to install."""
    wanted = {"ray": bool(settings.ray_address), "bitsandbytes": settings.allow_8bit,
              "xformers": settings.attention == "xformers"}
    for dist, on in wanted.items():
        if on and not installed(dist):
            flag, extra = EXTRAS[dist]
            raise StartupError(f"{flag} needs {dist}, which is not installed: pip install -r {extra}")


def check_model_key(key: str | None, flag: str) -> None:
    """Refuse an unknown model key, listing the known ones."""
    from wan_studio.catalog.specs import CATALOG

    if key is not None and key not in CATALOG:
        raise StartupError(f"{flag} {key}: unknown model; known models: {', '.join(CATALOG)}")


def check_port(host: str, port: int) -> None:
    """Refuse a port another program already listens on, before anything slow starts."""
    if port == 0:
        return
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the web server binds
            s.bind((host, port))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise StartupError(port_in_use(host, port)) from None
        raise StartupError(f"Wan Studio cannot listen on {host}:{port} ({e.strerror or e}); "
                           "check --host and --port") from None


def port_in_use(host: str, port: int) -> str:
    """The sentence for a taken port."""
    return (f"Port {port} on {host} is already in use (another Wan Studio or another program); "
            f"start with --port {port + 1}, or stop the other one")


def check_outputs_dir(folder: Path) -> str | None:
    """Make sure videos can be written to ``folder``; returns a line when it had to be created."""
    if folder.exists() and not folder.is_dir():
        raise StartupError(f"--outputs-dir {folder} is a file, not a folder; give a folder for the videos")
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as e:
        what = "create" if created else "write to"
        raise StartupError(f"Wan Studio cannot {what} the outputs folder {folder} ({e.strerror or e}); "
                           "give a folder you can write with --outputs-dir") from None
    return f"Created the outputs folder {folder.resolve()}" if created else None


def check_comfyui_dir(folder: Path | None) -> None:
    """Refuse a ``--comfyui-dir`` that is not a ComfyUI ``models`` folder, saying which one to give."""
    if folder is None:
        return
    hint = "give ComfyUI's models folder, the one holding diffusion_models/, text_encoders/ and vae/"
    if not folder.is_dir():
        raise StartupError(f"--comfyui-dir {folder} is not a folder: {hint}")
    if not any((folder / d).is_dir() for d in ("diffusion_models", "unet")):
        inner = folder / "models"
        if (inner / "diffusion_models").is_dir() or (inner / "unet").is_dir():
            raise StartupError(f"--comfyui-dir {folder} is ComfyUI's own folder: give --comfyui-dir {inner}")
        raise StartupError(f"--comfyui-dir {folder} holds no diffusion_models/ (or unet/) folder: {hint}")


def models_dir_warning(folder: Path) -> str | None:
    """A warning when ``folder`` cannot hold models; None when it is a readable folder with one."""
    from wan_studio.catalog.specs import CATALOG

    example = f"python app.py --download ti2v-5b" + ("" if folder == Path("models") else f" --models-dir {folder}")
    only_demo = f"only the built-in demo model is available; fetch a real one with: {example}"
    if not folder.exists():
        return f"The models folder {folder} does not exist: {only_demo}"
    if not folder.is_dir():
        return f"--models-dir {folder} is a file, not a folder: {only_demo}"
    try:
        names = {p.name for p in folder.iterdir()}
    except OSError as e:
        return f"The models folder {folder} cannot be read ({e.strerror or e}): {only_demo}"
    if not names & {spec.folder for spec in CATALOG.values() if not spec.is_demo}:
        return f"The models folder {folder} holds no Wan2.2 model: {only_demo}"
    return None


def download_model(settings: Settings) -> str:
    """``--download KEY``: fetch the model into ``--models-dir``; returns the line to print.

    Raises ``StartupError`` for the demo, an unknown key, an unreachable Hub or a refusal."""
    from wan_studio.catalog.specs import get_spec

    check_model_key(settings.download, "--download")
    spec = get_spec(str(settings.download))
    if spec.is_demo:
        raise StartupError("The demo model is built into the app and needs no download; "
                           "python app.py runs it")
    from huggingface_hub import errors
    from wan_studio.catalog import loading

    again = "run the same command again: the download resumes where it stopped"
    try:
        folder = loading.download(spec, settings.models_dir)
    except (errors.HfHubHTTPError, errors.LocalEntryNotFoundError) as e:
        # snapshot_download reports a refusal and a missing connection alike, as "not found
        # locally"; the cause tells them apart.
        cause = e if isinstance(e, errors.HfHubHTTPError) else (e.__cause__ or e.__context__)
        if isinstance(cause, errors.HfHubHTTPError):
            status = getattr(cause.response, "status_code", None) if cause.response is not None else None
            raise StartupError(f"The Hugging Face Hub refused the download of {spec.hub_id} "
                               f"(HTTP {status or '?'}); if the model needs a login run 'hf auth login', "
                               f"then {again}", code=3) from e
        reason = f"{type(cause).__name__}: {first_line(cause)}" if cause else first_line(e)
        raise StartupError(f"Could not reach the Hugging Face Hub to download {spec.title} ({reason}); "
                           f"check the internet connection (and HF_HUB_OFFLINE, HF_ENDPOINT), then {again}",
                           code=3) from e
    except OSError as e:
        raise StartupError(f"The download of {spec.title} into {settings.models_dir} stopped "
                           f"({e.strerror or first_line(e)}); free some space or fix the folder, then {again}",
                           code=3) from e
    return f"{spec.title} is ready in {folder}"


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (library messages run to paragraphs)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def served_lines(settings: Settings, local_url: str, share_url: str | None, model: str) -> list[str]:
    """Our start-up lines: where the app is served, on which model, and how to share it."""
    lines = [f"Wan Studio is ready at {local_url} ({model}); Ctrl-C stops it"]
    if share_url:
        lines.append(f"Public link (login required): {share_url}")
    elif settings.share:
        lines.append(f"Could not open a public link (no internet?); still serving locally at {local_url}")
    elif settings.host in ("127.0.0.1", "localhost", "::1"):
        lines.append("Only this PC can open it: --host 0.0.0.0 serves your network, --share opens a "
                     "public link (README: Sharing safely)")
    return lines


def check_accounts(path: Path | None) -> None:
    """Refuse a missing or damaged ``--accounts`` file before anything slow starts."""
    if path is None:
        return
    from wan_studio.accounts import Accounts, AccountsError

    try:
        Accounts(path)
    except AccountsError as e:
        raise StartupError(f"Wan Studio cannot start: {e}", code=3) from e
    except (OSError, UnicodeDecodeError) as e:
        raise StartupError(f"Wan Studio cannot read the accounts file {path} ({getattr(e, 'strerror', None) or e}); "
                           "fix it, or write a new one with --add-user", code=3) from e
