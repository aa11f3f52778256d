"""Wan Studio: ``python app.py`` serves the web UI (the built-in demo model needs no GPU, no download)."""

from __future__ import annotations

import secrets
import sys

from wan_studio.settings import Settings, settings_from_args


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
    """Parse flags, build the services, launch the UI (or download a model and exit)."""
    from wan_studio.bootstrap import bootstrap

    bootstrap()  # before anything imports diffusers
    settings = settings_from_args(argv)
    if settings.download:
        from wan_studio.catalog import loading
        from wan_studio.catalog.specs import get_spec

        try:
            spec = get_spec(settings.download)
        except KeyError as e:
            print(e.args[0], file=sys.stderr)
            return 2
        folder = loading.download(spec, settings.models_dir)
        print(f"{spec.title} is ready in {folder}")
        return 0

    if settings.add_user:
        return add_user(settings)

    from wan_studio.jobs.store import StoreError
    from wan_studio.services import Studio
    from wan_studio.ui import rest
    from wan_studio.ui.blocks import build_app, launch_kwargs

    settings.auth = share_credentials(settings)
    try:
        studio = Studio.create(settings)
        studio.start()  # requeues what a crash left running, starts the worker processes
    except StoreError as e:
        print(f"Wan Studio cannot start: {e}", file=sys.stderr)
        return 3
    except RuntimeError as e:
        if settings.ray_address:  # the cluster (or Ray itself) is missing: ClusterUnavailable says which
            print(f"Wan Studio cannot reach the Ray cluster: {e}", file=sys.stderr)
            return 2
        raise
    for notice in studio.notices:  # the job list was moved out of outputs, or damaged and rebuilt
        print(notice, flush=True)
    for job in studio.queue.swept:
        print(f"job {job.id}: {job.status} after restart ({job.error})", flush=True)
    app = build_app(studio)
    app.launch(
        server_name=settings.host,
        server_port=settings.port,
        share=settings.share,
        auth=studio.accounts.check if studio.accounts else settings.auth_pairs,
        prevent_thread_lock=True,
        **launch_kwargs(studio),
    )
    rest.mount(app, studio)  # POST /api/v1/jobs and friends, beside Gradio's own routes
    if settings.share and not app.share_url:
        print(f"Could not open a public link (no internet?); still serving locally at {app.local_url}",
              flush=True)
    try:
        app.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        studio.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
