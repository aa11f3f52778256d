"""Wan Studio: ``python app.py`` serves the web UI (the built-in demo model needs no GPU, no download).

Flags are parsed before anything heavy is imported, so ``--help``, ``--version`` and a mistyped
flag answer at once. A start-up problem the user can fix is one sentence and a non-zero exit
status; ``--debug`` adds the traceback for bug reports.
"""

from __future__ import annotations

import contextlib
import io
import secrets
import signal
import sys
import time
import traceback
from typing import TYPE_CHECKING

from wan_studio.settings import Settings, settings_from_args
from wan_studio.startup import StartupError

if TYPE_CHECKING:  # heavy: imported only once the flags are known
    import gradio as gr

    from wan_studio.cluster.local import LocalExecutor
    from wan_studio.services import Studio


def share_credentials(settings: Settings) -> tuple[str, str] | None:
    """Credentials to require. A public link is never opened without a login: with ``--share`` and
    no ``--auth`` (nor an accounts file) a password is generated here and printed once."""
    if settings.auth or settings.accounts_file:
        return settings.auth
    if settings.share:
        creds = ("wan", secrets.token_urlsafe(12))
        print(f"Public link requested without --auth; log in with user '{creds[0]}' and password '{creds[1]}'",
              flush=True)
        return creds
    return None


def add_user(settings: Settings) -> int:
    """``--add-user NAME``: write a hashed account into the ``--accounts`` file. The password comes
    from ``WAN_STUDIO_NEW_PASSWORD`` or is asked for twice."""
    import getpass
    import os

    from wan_studio.accounts import AccountsError, add_account

    if settings.accounts_file is None:
        print("--add-user needs --accounts FILE (where the account is written)", file=sys.stderr)
        return 2
    password = os.environ.get("WAN_STUDIO_NEW_PASSWORD")
    if password is None:
        password = getpass.getpass(f"password for {settings.add_user}: ")
        if getpass.getpass("again: ") != password:
            print("the two passwords differ; nothing written", file=sys.stderr)
            return 2
    try:
        add_account(settings.accounts_file, settings.add_user, password, "admin" if settings.add_admin else "user")
    except AccountsError as e:
        print(e, file=sys.stderr)
        return 2
    role = "admin" if settings.add_admin else "user"
    print(f"{settings.add_user} ({role}) saved in {settings.accounts_file}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse flags, then serve the UI (or download a model, or add a user, and exit)."""
    settings = settings_from_args(argv)
    from wan_studio.startup import configure_logging

    configure_logging(settings.debug)
    # SIGTERM stops the app as Ctrl-C does: workers stop and running jobs are handed back.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        if settings.download:
            from wan_studio.startup import download_model

            print(download_model(settings))
            return 0
        if settings.add_user:
            return add_user(settings)
        return serve(settings)
    except StartupError as e:
        if settings.debug:
            traceback.print_exc()
        print(e, file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - a bug: one sentence, the traceback under --debug
        if settings.debug:
            raise
        print(f"Wan Studio stopped on an unexpected error ({type(e).__name__}: {e}); run the same command "
              "with --debug for the traceback to attach to a bug report", file=sys.stderr)
        return 1


def serve(settings: Settings) -> int:
    """Check the folders, port and extras, build the services and serve until Ctrl-C / SIGTERM."""
    from wan_studio import startup

    startup.check_model_key(settings.default_model, "--model")
    startup.check_extras(settings)
    startup.check_port(settings.host, settings.port)
    startup.check_accounts(settings.accounts_file)
    startup.check_comfyui_dir(settings.comfyui_dir)
    created = startup.check_outputs_dir(settings.outputs_dir)
    if created:
        startup.log.info(created)
    # with a ComfyUI folder, an empty --models-dir is expected; the models list says what is found
    warning = None if settings.comfyui_dir else startup.models_dir_warning(settings.models_dir)
    if warning:
        startup.log.warning(warning)
    startup.log.info("Starting Wan Studio on http://%s:%d ...", settings.host, settings.port)
    settings.auth = share_credentials(settings)
    # The worker processes start first: their imports and the default model's load run while this
    # process imports torch, Gradio and the services below (a cold first job waited for both in turn).
    from wan_studio.cluster.local import launch_workers

    workers = launch_workers(settings)
    from wan_studio.bootstrap import bootstrap

    bootstrap()  # after the quick checks (it imports torch), before anything imports diffusers
    studio = build_studio(settings, workers)
    try:
        for notice in studio.notices:  # the job list was moved out of outputs, or damaged and rebuilt
            startup.log.warning(notice)
        app = launch(studio)
        for line in startup.served_lines(settings, app.local_url, app.share_url,
                                         studio.default_preset("beginner").fields["model"]):
            print(line, flush=True)
        try:
            while app.is_running:
                time.sleep(0.2)
        except KeyboardInterrupt:
            startup.log.info("Stopping: running jobs go back to the queue and resume at the next start")
            with contextlib.nullcontext() if settings.debug else contextlib.redirect_stdout(io.StringIO()):
                app.close()  # Gradio says "Closing server" on stdout
    finally:
        studio.close()
    return 0


def build_studio(settings: Settings, workers: LocalExecutor | None = None) -> Studio:
    """The services, started; the start-up problems they can meet become one sentence. ``workers``:
    the worker processes started already (``launch_workers``), stopped again if the start fails."""
    from wan_studio.accounts import AccountsError
    from wan_studio.jobs.store import StoreError
    from wan_studio.services import Studio

    cluster_errors: tuple[type[BaseException], ...] = ()
    if settings.ray_address:  # ClusterUnavailable says what is missing and how to fix it
        from wan_studio.cluster.ray_backend import ClusterUnavailable

        cluster_errors = (ClusterUnavailable, RuntimeError)
    studio = None
    try:
        studio = Studio.create(settings, workers=workers)
        studio.start()  # requeues what a crash left running, starts the worker processes
    except BaseException as e:
        if studio is not None:
            studio.close()
        if workers is not None:
            workers.shutdown()
        if isinstance(e, (StoreError, AccountsError)):
            raise StartupError(f"Wan Studio cannot start: {e}", code=3) from e
        if isinstance(e, cluster_errors):
            raise StartupError(f"Wan Studio cannot reach the Ray cluster: {e}") from e
        raise
    return studio


def launch(studio: Studio) -> gr.Blocks:
    """Serve the UI and the JSON routes; Gradio's own hints are replaced by ours (kept under --debug)."""
    from wan_studio.startup import port_in_use
    from wan_studio.ui import rest
    from wan_studio.ui.blocks import build_app, launch_kwargs

    settings = studio.settings
    app = build_app(studio)
    gradio_says = io.StringIO()
    quiet = contextlib.nullcontext() if settings.debug else contextlib.redirect_stdout(gradio_says)
    try:
        with quiet:
            app.launch(server_name=settings.host, server_port=settings.port, share=settings.share,
                       auth=studio.accounts.check if studio.accounts else settings.auth_pairs,
                       prevent_thread_lock=True, quiet=not settings.debug, **launch_kwargs(studio))
    except OSError as e:
        if "port" in str(e).lower():  # taken between our check and Gradio's bind
            raise StartupError(port_in_use(settings.host, settings.port)) from e
        raise
    rest.mount(app, studio)  # POST /api/v1/jobs and friends, beside Gradio's own routes
    return app


if __name__ == "__main__":
    sys.exit(main())
