"""The ``castframe`` command: serve, worker, migrate, accounts, keys."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from castframe import logs
from castframe.catalog import FLAGSHIP
from castframe.cli_client import generate, jobs_app
from castframe.config import Settings
from castframe.jobs import accounts as accounts_mod
from castframe.jobs import ledger
from castframe.store.db import Database
from castframe.store.migrate import upgrade

app = typer.Typer(
    help="Castframe: a self-hosted, Apiframe-v2-compatible image API.", no_args_is_help=True
)
accounts_app = typer.Typer(help="Accounts and credits.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(accounts_app, name="accounts")
app.add_typer(keys_app, name="keys")
app.add_typer(jobs_app, name="jobs")
weights_app = typer.Typer(help="Open-model weights for the diffusers engine.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")
app.command("generate")(generate)


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

    from castframe.app import create_app

    _setup_logging()
    overrides: dict[str, object] = {}
    if host:
        overrides["host"] = host
    if port:
        overrides["port"] = port
    if no_worker:
        overrides["worker_enabled"] = False
    settings = Settings(**overrides)  # type: ignore[arg-type]
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="info",
        log_config=None,
        timeout_graceful_shutdown=15,
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
    grace: Annotated[float, typer.Option(help="Seconds to drain on SIGTERM.")] = 30.0,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve this worker's Prometheus metrics on this port.")
    ] = None,
) -> None:
    """Run a worker (and webhook sender) without the API; SIGTERM drains it."""
    from castframe.services import Services

    _setup_logging()
    settings = Settings()
    services = Services.build(settings)
    if metrics_port:
        from prometheus_client import start_http_server

        from castframe.metrics import REGISTRY

        start_http_server(metrics_port, registry=REGISTRY)
    device_list = [name.strip() for name in (devices or "").split(",") if name.strip()]
    if devices is not None and not device_list:
        raise typer.BadParameter("name at least one device, e.g. --devices cuda:0,cuda:1")
    services.start_worker(concurrency, device_list or None)
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
def migrate() -> None:
    """Create or upgrade the database schema."""
    settings = Settings()
    _db(settings).dispose()
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
    base = settings.resolved_public_url
    model, block = FLAGSHIP.id, FLAGSHIP.params_key
    image = FLAGSHIP.saved_character_field
    typer.echo(f"""
Castframe is starting at {base}  (playground: {base}/ , API docs: {base}/docs)
Development API key (account 'dev', {settings.dev_credits} credits, sandbox engine):

  export CASTFRAME_API_KEY={raw}

Try it (upload a reference photo, then generate with it):

  REF=$(curl -s -H "X-API-Key: $CASTFRAME_API_KEY" -F file=@me.jpg {base}/v2/uploads \\
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["url"])')
  curl -s -X POST {base}/v2/images/generate -H "X-API-Key: $CASTFRAME_API_KEY" \\
       -H "Content-Type: application/json" \\
       -d '{{"prompt": "a detective in a rainy city street at night", "model": "{model}",
            "{block}": {{"{image}": "'$REF'", "style_type": "REALISTIC"}}}}'
  curl -s -H "X-API-Key: $CASTFRAME_API_KEY" {base}/v2/jobs/<jobId>
""")


if __name__ == "__main__":
    app()
