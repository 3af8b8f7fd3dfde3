"""Accounts, API keys and per-account webhook secrets.

Keys are ``afk_live_<random>`` or ``afk_test_<random>`` (Apiframe's ``afk_`` prefix plus the
mode, like Stripe's ``sk_live_``/``sk_test_``). Only their SHA-256 is stored; a key is shown
once, at creation. The digest is also what Apiframe's webhook signature is keyed by (its raw
32 bytes, webhooks/signing.py), so Castframe never needs the key itself to sign.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from castframe.jobs import ledger
from castframe.store.notify import KEYS_CHANNEL, publish
from castframe.store.tables import accounts, api_keys

MODES = ("live", "test")
SECRET_ROTATION_OVERLAP = 24 * 3600


@dataclass(frozen=True)
class Principal:
    """Who is calling: resolved from the API key on every request."""

    account_id: str
    account_name: str
    key_id: str
    key_name: str
    mode: str
    key_hash: str
    key_prefix: str
    rate_per_second: float | None
    rate_burst: int | None
    max_active_jobs: int | None

    @property
    def owner(self) -> tuple[str, str]:
        """(account, mode): what this key's uploads and characters belong to."""
        return (self.account_id, self.mode)


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def get_account_by_name(conn: sa.Connection, name: str) -> dict[str, Any] | None:
    row = conn.execute(sa.select(accounts).where(accounts.c.name == name)).mappings().first()
    return dict(row) if row else None


def get_account(conn: sa.Connection, account_id: str) -> dict[str, Any] | None:
    row = conn.execute(sa.select(accounts).where(accounts.c.id == account_id)).mappings().first()
    return dict(row) if row else None


EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def default_email(name: str) -> str:
    """An account created without an email gets a deliverable-looking local one
    (``dev@castframe.local``), so ``GET /v2/me`` always has ``user.email``."""
    local = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-.") or "account"
    return f"{local[:64]}@castframe.local"


def account_email(account: dict[str, Any]) -> str:
    return str(account.get("email") or default_email(str(account["name"])))


def create_account(
    conn: sa.Connection, name: str, credits: int = 0, email: str | None = None
) -> dict[str, Any]:
    if get_account_by_name(conn, name) is not None:
        raise ValueError(f"account {name!r} already exists")
    if email is not None and not EMAIL.match(email):
        raise ValueError(f"{email!r} is not an email address")
    account: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "name": name,
        "email": email or default_email(name),
        "created_at": time.time(),
        "max_active_jobs": None,
        "webhook_secret": new_webhook_secret(),
        "previous_webhook_secret": None,
        "test_webhook_secret": new_webhook_secret(),
        "previous_secret_expires_at": None,
    }
    conn.execute(accounts.insert().values(**account))
    if credits:
        ledger.add_entry(conn, account["id"], "topup", credits, note="initial credits")
    return account


def ensure_account(conn: sa.Connection, name: str, credits: int = 0) -> tuple[dict[str, Any], bool]:
    """The account named ``name``, created if missing; (account, created)."""
    existing = get_account_by_name(conn, name)
    if existing is not None:
        return existing, False
    return create_account(conn, name, credits), True


def create_key(
    conn: sa.Connection,
    account_id: str,
    mode: str = "live",
    name: str = "default",
    rate_per_second: float | None = None,
    rate_burst: int | None = None,
) -> tuple[str, dict[str, Any]]:
    """Create a key; returns (the raw key, shown only now, and its stored row)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    raw = f"afk_{mode}_{secrets.token_urlsafe(24)}"
    row = {
        "id": str(uuid.uuid4()),
        "account_id": account_id,
        "name": name,
        "mode": mode,
        "key_hash": hash_key(raw),
        "prefix": raw[:13],
        "created_at": time.time(),
        "revoked_at": None,
        "active": True,
        "rate_per_second": rate_per_second,
        "rate_burst": rate_burst,
    }
    conn.execute(api_keys.insert().values(**row))
    return raw, row


# Built once: every authenticated request runs it.
_KEY_LOOKUP = (
    sa.select(api_keys, accounts.c.name.label("account_name"), accounts.c.max_active_jobs)
    .join(accounts, accounts.c.id == api_keys.c.account_id)
    .where(api_keys.c.key_hash == sa.bindparam("key_hash"))
)


def resolve_key(conn: sa.Connection, raw_key: str) -> tuple[str, Principal | None]:
    """('ok', principal), ('unknown', None) or ('inactive', None)."""
    row = conn.execute(_KEY_LOOKUP, {"key_hash": hash_key(raw_key)}).mappings().first()
    if row is None or row["revoked_at"] is not None:
        return "unknown", None
    if not row["active"]:
        return "inactive", None
    return "ok", Principal(
        account_id=row["account_id"],
        account_name=row["account_name"],
        key_id=row["id"],
        key_name=row["name"],
        mode=row["mode"],
        key_hash=row["key_hash"],
        key_prefix=row["prefix"],
        rate_per_second=row["rate_per_second"],
        rate_burst=row["rate_burst"],
        max_active_jobs=row["max_active_jobs"],
    )


def find_key(conn: sa.Connection, key_ref: str) -> dict[str, Any] | None:
    """A key by id, by its displayed prefix, or by the raw key itself."""
    condition = sa.or_(
        api_keys.c.id == key_ref,
        api_keys.c.prefix == key_ref,
        api_keys.c.key_hash == hash_key(key_ref),
    )
    rows = conn.execute(sa.select(api_keys).where(condition)).mappings().all()
    return dict(rows[0]) if len(rows) == 1 else None


def revoke_key(conn: sa.Connection, key_id: str) -> None:
    conn.execute(api_keys.update().where(api_keys.c.id == key_id).values(revoked_at=time.time()))
    keys_changed(conn)


def set_key_active(conn: sa.Connection, key_id: str, active: bool) -> None:
    conn.execute(api_keys.update().where(api_keys.c.id == key_id).values(active=active))
    keys_changed(conn)


_generation = 0


def key_generation() -> int:
    """Moves on every key change made in this process (jobs/keycache.py)."""
    return _generation


def keys_changed(conn: sa.Connection) -> None:
    """A key or an account changed: caches of key lookups must forget them (jobs/keycache.py).

    This process's caches at once; other processes' when this transaction commits (on
    PostgreSQL; the announcement is delivered at commit).
    """
    global _generation
    _generation += 1
    publish(conn, KEYS_CHANNEL)


def list_keys(conn: sa.Connection, account_id: str | None = None) -> list[dict[str, Any]]:
    query = sa.select(api_keys, accounts.c.name.label("account_name")).join(
        accounts, accounts.c.id == api_keys.c.account_id
    )
    if account_id:
        query = query.where(api_keys.c.account_id == account_id)
    return [dict(row) for row in conn.execute(query.order_by(api_keys.c.created_at)).mappings()]


SECRET_COLUMNS = {
    "live": ("webhook_secret", "previous_webhook_secret", "previous_secret_expires_at"),
    "test": (
        "test_webhook_secret",
        "test_previous_webhook_secret",
        "test_previous_secret_expires_at",
    ),
}
"""Each mode's Standard Webhooks secret, the previous one and when that stops signing."""


@dataclass(frozen=True)
class SecretState:
    """A mode's signing secrets as the API shows them."""

    secret: str
    active: list[str]
    previous_expires_at: float | None


def secret_state(account: dict[str, Any], mode: str, now: float | None = None) -> SecretState:
    """The mode's current secret and the ones that sign (the previous one during rotation)."""
    current_name, previous_name, expires_name = SECRET_COLUMNS[mode]
    now = time.time() if now is None else now
    active = [account[current_name]]
    previous, expires = account.get(previous_name), account.get(expires_name)
    if previous and expires and expires > now:
        active.append(previous)
    return SecretState(account[current_name], active, expires)


def webhook_secrets(account: dict[str, Any], mode: str, now: float | None = None) -> list[str]:
    """Secrets to sign a ``mode`` job's deliveries with: the current one, plus the previous
    one during a rotation's overlap. Test jobs are signed with the test secret only."""
    return secret_state(account, mode, now).active


def rotate_webhook_secret(conn: sa.Connection, account_id: str, mode: str) -> dict[str, Any]:
    """A new secret for ``mode``; the old one keeps signing for ``SECRET_ROTATION_OVERLAP``."""
    account = get_account(conn, account_id)
    if account is None:
        raise KeyError(account_id)
    current_name, previous_name, expires_name = SECRET_COLUMNS[mode]
    values = {
        current_name: new_webhook_secret(),
        previous_name: account[current_name],
        expires_name: time.time() + SECRET_ROTATION_OVERLAP,
    }
    conn.execute(accounts.update().where(accounts.c.id == account_id).values(**values))
    account.update(values)
    return account
