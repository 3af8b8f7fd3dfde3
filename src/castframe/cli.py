"""The ``castframe`` command: serve, worker, migrate, accounts, keys."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import signal
import socket
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

from castframe import logs
from castframe.allocator import bound_heap_retention
from castframe.catalog import MODELS
from castframe.cli_client import generate, jobs_app
from castframe.config import ConfigFileError, Settings, comma_list
from castframe.jobs import accounts as accounts_mod
from castframe.jobs import ledger
from castframe.store.db import Database
from castframe.store.migrate import upgrade

app = typer.Typer(
    help="Castframe: a self-hosted, Apiframe-v2-compatible image API.\n\n"
    "Server commands (serve, worker, migrate, accounts, keys) read CASTFRAME_* settings "
    "(README: Configuration). Client commands (generate, jobs) take --api-key and --base-url "
    "or read CASTFRAME_API_KEY and CASTFRAME_BASE_URL. Tab completion: "
    "`castframe --install-completion` (bash, zsh, fish, PowerShell).",
    no_args_is_help=True,
)
accounts_app = typer.Typer(help="Accounts and credits.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(accounts_app, name="accounts")
app.add_typer(keys_app, name="keys")
app.add_typer(jobs_app, name="jobs")
weights_app = typer.Typer(help="Open-model weights for the diffusers engine.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")
app.command("generate")(generate)


def _print_version(value: bool) -> None:
    if value:
        from castframe import __version__

        typer.echo(f"castframe {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Castframe: a self-hosted, Apiframe-v2-compatible image API."""
    try:
        Settings()
    except ConfigFileError as exc:
        # A secret file that cannot be read: one clear line, not a traceback.
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from None
    except ValueError:
        pass  # other invalid settings: the command that uses them reports them


def _setup_logging() -> None:
    logs.configure(Settings().log_format)


def _db(settings: Settings) -> Database:
    db = Database(settings.resolved_database_url)
    upgrade(db.engine)
    return db


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
    no_worker: Annotated[bool, typer.Option("--no-worker", help="API only.")] = False,
) -> None:
    """Run the HTTP API (with an in-process worker unless --no-worker)."""
    import uvicorn

    from castframe.app import begin_shutdown, create_app

    _setup_logging()
    bound_heap_retention()  # before any thread: freed images go back to the system
    overrides: dict[str, object] = {}
    if host:
        overrides["host"] = host
    if port:
        overrides["port"] = port
    if no_worker:
        overrides["worker_enabled"] = False
    settings = Settings(**overrides)  # type: ignore[arg-type]
    problem = public_bind_problem(settings)
    if problem:
        typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(2)
    application = create_app(settings)

    class DrainingServer(uvicorn.Server):
        """uvicorn's server that, on SIGTERM/SIGINT, first wakes the requests waiting on
        live status (app.begin_shutdown), then shuts down gracefully as usual."""

        loop: asyncio.AbstractEventLoop | None = None

        async def serve(self, sockets: list[socket.socket] | None = None) -> None:
            self.loop = asyncio.get_running_loop()
            await super().serve(sockets)

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # A signal handler: nothing here may take a lock the interrupted code holds, so
            # the work is handed to the event loop.
            if self.loop is not None and not self.should_exit:
                with contextlib.suppress(RuntimeError):
                    self.loop.call_soon_threadsafe(begin_shutdown, application)
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        application,
        host=settings.host,
        port=settings.port,
        log_level="info",
        log_config=None,
        timeout_graceful_shutdown=15,
    )
    DrainingServer(config).run()


def is_loopback_host(host: str) -> bool:
    """Whether a bind address is reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def public_bind_problem(settings: Settings) -> str | None:
    """Why ``serve`` refuses to start, or None.

    A server bound beyond loopback serves other machines, and the links it hands them (signed
    output and upload URLs) are built from ``CASTFRAME_PUBLIC_URL``; without it they would read
    ``http://0.0.0.0:8000/...``, which no client can open. Refusing beats a server that looks
    fine and hands out dead links."""
    if settings.public_url or is_loopback_host(settings.host):
        return None
    return (
        f"--host {settings.host} serves other machines, but CASTFRAME_PUBLIC_URL is not set, so "
        f"image and upload URLs would read http://{settings.host}:{settings.port}/... and open "
        "for no one. Set CASTFRAME_PUBLIC_URL to the address clients use (for example "
        f"https://images.example.com or http://<this machine's name>:{settings.port}), or bind "
        "127.0.0.1."
    )


@app.command()
def worker(
    concurrency: Annotated[int | None, typer.Option(help="Parallel jobs.")] = None,
    devices: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated devices (cuda:0,cuda:1,...): one pipeline and one engine "
            "instance per device (CASTFRAME_WORKER_DEVICES). Overrides --concurrency."
        ),
    ] = None,
    models: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated model ids: claim only their jobs (CASTFRAME_WORKER_MODELS). "
            "Default: every model."
        ),
    ] = None,
    grace: Annotated[float, typer.Option(help="Seconds to drain on SIGTERM.")] = 30.0,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve this worker's Prometheus metrics on this port.")
    ] = None,
    metrics_host: Annotated[
        str,
        typer.Option(
            help="Address of --metrics-port: loopback by default (metrics are for operators); "
            "0.0.0.0 or a private address for a scraper on another machine."
        ),
    ] = "127.0.0.1",
) -> None:
    """Run a worker (and webhook sender) without the API; SIGTERM drains it."""
    from castframe.services import Services

    _setup_logging()
    bound_heap_retention()
    model_list = comma_list(models or "")
    if models is not None and not model_list:
        raise typer.BadParameter("name at least one model id (GET /v2/models lists them)")
    unknown = [name for name in model_list if name not in MODELS]
    if unknown:
        raise typer.BadParameter(
            f"{', '.join(unknown)}: not in the catalog (see GET /v2/models)", param_hint="--models"
        )
    settings = Settings()
    services = Services.build(settings)
    if metrics_port:
        from prometheus_client import start_http_server

        from castframe.metrics import REGISTRY

        start_http_server(metrics_port, addr=metrics_host, registry=REGISTRY)
    device_list = comma_list(devices or "")
    if devices is not None and not device_list:
        raise typer.BadParameter("name at least one device, e.g. --devices cuda:0,cuda:1")
    services.start_worker(concurrency, device_list or None, model_list or None)
    services.start_sender()
    services.start_listener(jobs=True, webhooks=True)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    typer.echo("draining: no new jobs; finishing running ones", err=True)
    services.stop(grace)


@weights_app.command("download")
def weights_download(
    model: Annotated[str, typer.Argument(help="A key of `castframe weights list`.")],
    repo: Annotated[
        str | None, typer.Option(help="Hub repository (default: the official weights).")
    ] = None,
    to: Annotated[
        Path | None, typer.Option(help="A local directory (default: the local hub cache).")
    ] = None,
) -> None:
    """Download a model's weights once, with progress; prints the setting that uses them."""
    from castframe.services import download_weights, weights_table

    try:
        path = download_weights(model, repo, to)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    hub_id, licence = weights_table()[model]
    value = str(path) if to is not None else (repo or hub_id)
    typer.echo(f"{model}: {path}")
    typer.echo(f"licence: {licence}")
    typer.echo("add to CASTFRAME_DIFFUSERS_MODELS: " + json.dumps({model: value}))


@weights_app.command("list")
def weights_list() -> None:
    """The models the diffusers engine can hold, their official weights and licences."""
    from castframe.services import weights_table

    for key, (hub_id, licence) in weights_table().items():
        typer.echo(f"{key:34} {hub_id:48} {licence}")


@app.command()
def migrate(
    wait: Annotated[
        float,
        typer.Option(
            min=0,
            help="Seconds to keep retrying while the database does not answer yet (a "
            "container started beside its database).",
        ),
    ] = 0.0,
) -> None:
    """Create or upgrade the database schema."""
    from castframe.store.db import is_transient

    settings = Settings()
    deadline = time.monotonic() + wait
    while True:
        try:
            _db(settings).dispose()
            break
        except Exception as exc:
            if not is_transient(exc) or time.monotonic() >= deadline:
                raise
            typer.echo("migrate: the database does not answer yet; retrying", err=True)
            time.sleep(1.0)
    typer.echo(f"database ready: {settings.resolved_database_url.split('@')[-1]}")


@accounts_app.command("create")
def accounts_create(
    name: str,
    credits: Annotated[int, typer.Option(min=0)] = 0,
    email: Annotated[
        str | None, typer.Option(help="The account owner's email, shown by GET /v2/me.")
    ] = None,
) -> None:
    """Create an account, optionally with initial credits and its owner's email."""
    db = _db(Settings())
    with db.write() as conn:
        try:
            account = accounts_mod.create_account(conn, name, credits, email=email)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
    typer.echo(
        json.dumps(
            {"id": account["id"], "name": name, "email": account["email"], "credits": credits}
        )
    )


@accounts_app.command("topup")
def accounts_topup(name: str, credits: Annotated[int, typer.Argument(min=1)]) -> None:
    """Add credits to an account."""
    db = _db(Settings())
    with db.write() as conn:
        account = _account(conn, name)
        ledger.add_entry(conn, account["id"], "topup", credits, note="cli topup")
        balance = ledger.account_balance(conn, account["id"])
    typer.echo(
        json.dumps({"name": name, "balance": balance.balance, "available": balance.available})
    )


@accounts_app.command("show")
def accounts_show(name: str) -> None:
    """Balance, held and available credits of an account."""
    db = _db(Settings())
    with db.read() as conn:
        account = _account(conn, name)
        balance = ledger.account_balance(conn, account["id"])
    typer.echo(
        json.dumps(
            {
                "id": account["id"],
                "name": name,
                "balance": balance.balance,
                "held": balance.held,
                "available": balance.available,
            }
        )
    )


@accounts_app.command("usage")
def accounts_usage(name: str) -> None:
    """Successful jobs, images and credits per day (live jobs)."""
    from castframe.jobs.usage import usage_rows

    db = _db(Settings())
    with db.read() as conn:
        account = _account(conn, name)
        rows = usage_rows(conn, account["id"], "live", None, None, "day")
    typer.echo(f"{'day':12}{'jobs':>8}{'images':>8}{'credits':>10}")
    for row in rows:
        typer.echo(f"{row['day']:12}{row['jobs']:>8}{row['images']:>8}{row['credits']:>10}")


@accounts_app.command("webhook-secret")
def accounts_webhook_secret(
    name: str,
    rotate: Annotated[bool, typer.Option()] = False,
    mode: Annotated[str, typer.Option(help="live or test: each mode signs with its own")] = "live",
) -> None:
    """Show (or --rotate) the account's Standard Webhooks secret of a mode."""
    if mode not in accounts_mod.MODES:
        raise typer.BadParameter(f"mode must be one of {', '.join(accounts_mod.MODES)}")
    db = _db(Settings())
    with db.write() as conn:
        account = _account(conn, name)
        if rotate:
            account = accounts_mod.rotate_webhook_secret(conn, account["id"], mode)
    typer.echo(accounts_mod.secret_state(account, mode).secret)


def _account(conn: Any, name: str) -> dict[str, Any]:
    account = accounts_mod.get_account_by_name(conn, name)
    if account is None:
        typer.echo(f"no account named {name!r}", err=True)
        raise typer.Exit(1)
    return account


@keys_app.command("create")
def keys_create(
    account: Annotated[str, typer.Option(help="Account name (created if missing).")],
    mode: Annotated[str, typer.Option(help="live or test.")] = "live",
    credits: Annotated[int, typer.Option(min=0, help="Credits for a new account.")] = 0,
    name: Annotated[str, typer.Option(help="A label for the key.")] = "default",
    rate: Annotated[float | None, typer.Option(help="Submissions per second (this key).")] = None,
    burst: Annotated[int | None, typer.Option(help="Burst size (this key).")] = None,
) -> None:
    """Create an API key; the key is printed alone on the last line (shown only once)."""
    if mode not in accounts_mod.MODES:
        raise typer.BadParameter("mode must be live or test")
    db = _db(Settings())
    with db.write() as conn:
        row, created = accounts_mod.ensure_account(conn, account, credits)
        raw, _ = accounts_mod.create_key(conn, row["id"], mode, name, rate, burst)
    if created:
        typer.echo(f"created account {account!r} with {credits} credits")
    typer.echo(f"{mode} key {name!r} for account {account!r} (shown once):")
    typer.echo(raw)


@keys_app.command("list")
def keys_list(account: Annotated[str | None, typer.Option()] = None) -> None:
    """List keys (prefix, mode, state); never the keys themselves."""
    db = _db(Settings())
    with db.read() as conn:
        account_id = _account(conn, account)["id"] if account else None
        rows = accounts_mod.list_keys(conn, str(account_id) if account_id else None)
    for row in rows:
        state = "revoked" if row["revoked_at"] else ("active" if row["active"] else "inactive")
        typer.echo(
            f"{row['id']}  {row['prefix']}...  {row['mode']:4}  {state:8}  "
            f"{row['account_name']}  {row['name']}"
        )


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="Key id, prefix or the key itself.")],
) -> None:
    """Revoke a key for good (401 from then on)."""
    _set_key_state(key, revoke=True)


@keys_app.command("deactivate")
def keys_deactivate(key: str) -> None:
    """Deactivate a key (403 until reactivated)."""
    _set_key_state(key, active=False)


@keys_app.command("activate")
def keys_activate(key: str) -> None:
    """Reactivate a deactivated key."""
    _set_key_state(key, active=True)


def _set_key_state(key: str, revoke: bool = False, active: bool = True) -> None:
    db = _db(Settings())
    with db.write() as conn:
        row = accounts_mod.find_key(conn, key)
        if row is None:
            typer.echo("no such key (or the prefix is ambiguous)", err=True)
            raise typer.Exit(1)
        if revoke:
            accounts_mod.revoke_key(conn, row["id"])
        else:
            accounts_mod.set_key_active(conn, row["id"], active)
    typer.echo(f"{'revoked' if revoke else ('activated' if active else 'deactivated')} {row['id']}")


@app.command("dev-key")
def dev_key() -> None:
    """Print a ready-to-use development key (created once, kept in the data dir)."""
    settings = Settings()
    db = _db(settings)
    key_file = Path(settings.data_dir) / "dev_api_key"
    raw = key_file.read_text().strip() if key_file.exists() else ""
    with db.write() as conn:
        status = accounts_mod.resolve_key(conn, raw)[0] if raw else "unknown"
        if status != "ok":
            account, _ = accounts_mod.ensure_account(conn, "dev", settings.dev_credits)
            raw, _ = accounts_mod.create_key(conn, account["id"], "live", "make run")
            key_file.write_text(raw + "\n")
            key_file.chmod(0o600)
        dev = accounts_mod.get_account_by_name(conn, "dev")
        available = ledger.account_balance(conn, dev["id"]).available if dev else 0
    base = settings.resolved_public_url
    typer.echo(f"""
Castframe is starting at {base}  (playground: {base}/ , API docs: {base}/docs)
Development API key (account 'dev', {available:,} credits available, sandbox engine):

  export CASTFRAME_API_KEY={raw}

The `castframe` command is in .venv/bin (source .venv/bin/activate, or run .venv/bin/castframe).
Try the README's quick start in another terminal, from this folder.
""")


if __name__ == "__main__":
    app()
