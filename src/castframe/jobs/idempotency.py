"""``Idempotency-Key`` records (IETF httpapi draft, Stripe semantics) that cannot double.

A key is scoped to the account AND the mode of the calling key (``live`` or ``test``): a
live submission never replays a test job (which its key could not even read), nor the
reverse. The first request with a key inserts a ``started`` record holding a random owner
token; the submission's own transaction first re-takes that record by its token
(``hold``: a conditional UPDATE, which on PostgreSQL also row-locks it until the commit) and
then marks it ``done`` with the exact response, so "job created" and "response remembered"
cannot come apart. Later requests with the key:
- same body, done: the stored response is replayed (``Idempotent-Replayed: true``);
- same body, still started: 409 ``idempotency_key_in_use`` (we answer at once rather than
  wait, so a client's retry loop never piles up connections);
- different body: 409 ``idempotency_key_reused`` (Apiframe's ConflictError).
A request that fails before creating a job (validation, 402, 429) forgets its key, so the
corrected retry goes through, as Stripe does.

Takeover: a ``started`` record is taken over (given a new owner token) only when its first
request is known to be dead: its token is not one of this process's live requests and the
record is older than ``STALE_AFTER``, which is above any request's own deadline (the body
read timeout plus a submission's longest wait for its database lock). A request that is
merely slow therefore keeps its key. And should a takeover ever meet a request that was
alive after all, that request can no longer create its job: ``hold`` finds another token
and the request answers 409 ``idempotency_key_in_use`` without writing anything. So a key
never yields two jobs, whatever the timing.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from castframe.errors import ApiError
from castframe.store.db import Database
from castframe.store.tables import idempotency_keys

STALE_AFTER = 900.0
"""Seconds after which a ``started`` record of a request not running in this process is
presumed dead. Above any request's deadline (a body arrives within
CASTFRAME_BODY_READ_TIMEOUT, and a submission's transaction waits at most its database's
lock timeout): taking over sooner would let a slow first request race its retry."""
MAX_KEY_LENGTH = 255
_PROCESS = f"{os.getpid()}-{secrets.token_hex(4)}"
"""This process's part of every owner token it makes (a restarted pid is a new process)."""


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: str


@dataclass(frozen=True)
class Claim:
    """A key taken by this request: what its submission's transaction holds and completes."""

    account_id: str
    mode: str
    key: str
    token: str


class _LiveTokens:
    """Owner tokens of requests running in this process: the liveness check of a takeover."""

    def __init__(self) -> None:
        self._tokens: set[str] = set()
        self._lock = threading.Lock()

    def add(self, token: str) -> None:
        with self._lock:
            self._tokens.add(token)

    def discard(self, token: str) -> None:
        with self._lock:
            self._tokens.discard(token)

    def alive(self, token: str | None) -> bool:
        with self._lock:
            return token is not None and token in self._tokens


LIVE = _LiveTokens()


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


def _key_filter(account_id: str, mode: str, key: str) -> sa.ColumnElement[bool]:
    return sa.and_(
        idempotency_keys.c.account_id == account_id,
        idempotency_keys.c.mode == mode,
        idempotency_keys.c.key == key,
    )


def _new_token() -> str:
    return f"{_PROCESS}:{secrets.token_hex(12)}"


def presumed_dead(row: Any, now: float) -> bool:
    """Whether a ``started`` record's request may be taken over (module doc)."""
    return (
        row["state"] == "started"
        and row["created_at"] < now - STALE_AFTER
        and not LIVE.alive(row["owner_token"])
    )


def begin(
    db: Database, account_id: str, mode: str, key: str, request_hash: str, ttl_seconds: float
) -> StoredResponse | Claim:
    """Claim ``key`` for this request, or return the response to replay. Raises on conflict."""
    for _ in range(3):
        now = time.time()
        token = _new_token()
        with db.write() as conn:
            row = (
                conn.execute(sa.select(idempotency_keys).where(_key_filter(account_id, mode, key)))
                .mappings()
                .first()
            )
            if row is None:
                # ON CONFLICT DO NOTHING rather than a savepoint around a plain INSERT: two
                # round trips fewer. Read first, as ever: an INSERT would wait for a
                # submission that holds the record (``hold``), where the read does not.
                dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
                inserted = conn.execute(
                    dialect.insert(idempotency_keys)
                    .values(
                        account_id=account_id,
                        mode=mode,
                        key=key,
                        request_hash=request_hash,
                        state="started",
                        owner_token=token,
                        created_at=now,
                    )
                    .on_conflict_do_nothing()
                    .returning(idempotency_keys.c.owner_token)
                ).first()
                if inserted is None:
                    continue  # another request inserted it first; look again
                LIVE.add(token)
                return Claim(account_id, mode, key, token)
            expired = row["created_at"] < now - ttl_seconds
            if expired or (presumed_dead(row, now) and row["request_hash"] == request_hash):
                # Conditional on the token read: a takeover that raced another one loses.
                taken = conn.execute(
                    idempotency_keys.update()
                    .where(
                        _key_filter(account_id, mode, key),
                        idempotency_keys.c.owner_token.is_not_distinct_from(row["owner_token"]),
                        idempotency_keys.c.state == row["state"],
                    )
                    .values(
                        request_hash=request_hash,
                        state="started",
                        owner_token=token,
                        created_at=now,
                        response_status=None,
                        response_body=None,
                    )
                ).rowcount
                if taken != 1:
                    continue
                LIVE.add(token)
                return Claim(account_id, mode, key, token)
            if row["request_hash"] != request_hash:
                raise ApiError("idempotency_key_reused")
            if row["state"] == "done":
                return StoredResponse(int(row["response_status"]), str(row["response_body"]))
            raise ApiError("idempotency_key_in_use", headers={"Retry-After": "1"})
    raise ApiError("idempotency_key_in_use", headers={"Retry-After": "1"})


def answered(db: Database, account_id: str, mode: str, key: str) -> bool:
    """Whether ``key`` holds a stored answer (by key alone: read before the body is)."""
    with db.read() as conn:
        state = conn.execute(
            sa.select(idempotency_keys.c.state).where(_key_filter(account_id, mode, key))
        ).scalar()
    return state == "done"


def hold(conn: sa.Connection, claims: Sequence[Claim]) -> set[str]:
    """In the submissions' transaction, before their jobs are written: the tokens of the
    ``claims`` that still own their keys. One conditional UPDATE for the whole batch (a
    statement per claim cost each keyed submission a round trip), so on PostgreSQL the
    records stay locked until the commit and a takeover waits for them (then finds them
    done); SQLite's writers are serial."""
    if not claims:
        return set()
    held = conn.execute(
        idempotency_keys.update()
        .where(
            # An OR of primary keys: an index search per claim on both databases (SQLite
            # scans the table for a row-value IN).
            sa.or_(
                *(
                    sa.and_(
                        _key_filter(claim.account_id, claim.mode, claim.key),
                        idempotency_keys.c.owner_token == claim.token,
                    )
                    for claim in claims
                )
            ),
            idempotency_keys.c.state == "started",
        )
        .values(state="started")
        .returning(idempotency_keys.c.owner_token)
    )
    return {str(token) for token in held.scalars()}


def lost() -> ApiError:
    """The answer of a request whose key was taken over meanwhile (it wrote nothing)."""
    return ApiError(
        "idempotency_key_in_use",
        "another request took over this Idempotency-Key; nothing was created by this one. "
        "Retry with the same key to get the job",
        headers={"Retry-After": "1"},
    )


_COMPLETE = (
    idempotency_keys.update()
    .where(
        idempotency_keys.c.account_id == sa.bindparam("b_account_id"),
        idempotency_keys.c.mode == sa.bindparam("b_mode"),
        idempotency_keys.c.key == sa.bindparam("b_key"),
        idempotency_keys.c.owner_token == sa.bindparam("b_token"),
    )
    .values(
        state="done",
        response_status=sa.bindparam("b_status"),
        response_body=sa.bindparam("b_body"),
    )
)


def complete(conn: sa.Connection, answers: Sequence[tuple[Claim, int, str]]) -> None:
    """Remember each claim's response (status, body), inside the transaction that created
    its job (after ``hold``): one executemany for the batch."""
    if not answers:
        return
    conn.execute(
        _COMPLETE,
        [
            {
                "b_account_id": claim.account_id,
                "b_mode": claim.mode,
                "b_key": claim.key,
                "b_token": claim.token,
                "b_status": status,
                "b_body": body,
            }
            for claim, status, body in answers
        ],
    )


def release(claim: Claim) -> None:
    """The request is over (answered or failed): its token is no longer alive here."""
    LIVE.discard(claim.token)


def forget(db: Database, claim: Claim) -> None:
    """Drop the key of a request that created nothing (only while it still owns it)."""
    with db.write() as conn:
        conn.execute(
            idempotency_keys.delete().where(
                _key_filter(claim.account_id, claim.mode, claim.key),
                idempotency_keys.c.state == "started",
                idempotency_keys.c.owner_token == claim.token,
            )
        )


def purge_expired(conn: sa.Connection, ttl_seconds: float) -> int:
    result = conn.execute(
        idempotency_keys.delete().where(idempotency_keys.c.created_at < time.time() - ttl_seconds)
    )
    return int(result.rowcount or 0)
