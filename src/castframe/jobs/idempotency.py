"""``Idempotency-Key`` records (IETF httpapi draft, Stripe semantics).

A key is scoped to the account. The first request with a key inserts a ``started`` record;
the submission's own transaction marks it ``done`` with the exact response, so "job created"
and "response remembered" cannot come apart. Later requests with the key:
- same body, done: the stored response is replayed (``Idempotent-Replayed: true``);
- same body, still started: 409 ``idempotency_key_in_use`` (we answer at once rather than
  wait, so a client's retry loop never piles up connections);
- different body: 409 ``idempotency_key_reused`` (Apiframe's ConflictError).
A request that fails before creating a job (validation, 402, 429) forgets its key, so the
corrected retry goes through, as Stripe does. A ``started`` record older than
``STALE_AFTER`` seconds belongs to a crashed request and may be taken over.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from castframe.errors import ApiError
from castframe.store.db import Database
from castframe.store.tables import idempotency_keys

STALE_AFTER = 60.0
MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: str


def validate_key(key: str) -> str:
    """The key itself; a quoted sf-string (``"abc"``, the IETF form) is unquoted."""
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not all(32 <= ord(c) < 127 for c in key):
        raise ApiError("invalid_idempotency_key")
    return key


def fingerprint(method: str, path: str, body: Any) -> str:
    """Hash of the request: parsed JSON is canonicalised so whitespace and key order don't count."""
    canonical = body if isinstance(body, bytes) else json.dumps(body, sort_keys=True).encode()
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + canonical).hexdigest()


def _key_filter(account_id: str, key: str) -> sa.ColumnElement[bool]:
    return sa.and_(idempotency_keys.c.account_id == account_id, idempotency_keys.c.key == key)


def begin(
    db: Database, account_id: str, key: str, request_hash: str, ttl_seconds: float
) -> StoredResponse | None:
    """Claim ``key`` for this request, or return the response to replay. Raises on conflict."""
    for _ in range(3):
        now = time.time()
        with db.write() as conn:
            row = (
                conn.execute(sa.select(idempotency_keys).where(_key_filter(account_id, key)))
                .mappings()
                .first()
            )
            if row is None:
                try:
                    with conn.begin_nested():
                        conn.execute(
                            idempotency_keys.insert().values(
                                account_id=account_id,
                                key=key,
                                request_hash=request_hash,
                                state="started",
                                created_at=now,
                            )
                        )
                    return None
                except IntegrityError:
                    continue  # another request inserted it first; look again
            expired = row["created_at"] < now - ttl_seconds
            stale = row["state"] == "started" and row["created_at"] < now - STALE_AFTER
            if expired or (stale and row["request_hash"] == request_hash):
                conn.execute(
                    idempotency_keys.update()
                    .where(_key_filter(account_id, key))
                    .values(
                        request_hash=request_hash,
                        state="started",
                        created_at=now,
                        response_status=None,
                        response_body=None,
                    )
                )
                return None
            if row["request_hash"] != request_hash:
                raise ApiError("idempotency_key_reused")
            if row["state"] == "done":
                return StoredResponse(int(row["response_status"]), str(row["response_body"]))
            raise ApiError("idempotency_key_in_use", headers={"Retry-After": "1"})
    raise ApiError("idempotency_key_in_use", headers={"Retry-After": "1"})


def complete(conn: sa.Connection, account_id: str, key: str, status: int, body: str) -> None:
    """Remember the response, inside the transaction that created the job."""
    conn.execute(
        idempotency_keys.update()
        .where(_key_filter(account_id, key))
        .values(state="done", response_status=status, response_body=body)
    )


def forget(db: Database, account_id: str, key: str) -> None:
    with db.write() as conn:
        conn.execute(
            idempotency_keys.delete().where(
                sa.and_(_key_filter(account_id, key), idempotency_keys.c.state == "started")
            )
        )


def purge_expired(conn: sa.Connection, ttl_seconds: float) -> int:
    result = conn.execute(
        idempotency_keys.delete().where(idempotency_keys.c.created_at < time.time() - ttl_seconds)
    )
    return int(result.rowcount or 0)
