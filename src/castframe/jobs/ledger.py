"""Credits: an append-only ledger is the only truth; balances are sums over it.

Entry kinds and their effect (amounts are positive integers):
- ``topup`` / ``adjustment``: credits added (an adjustment may be negative);
- ``hold``: credits reserved for a job at submission;
- ``capture``: the part of a hold actually charged (at most one per job);
- ``release``: the part of a hold given back (at most one per job).

balance = topups + adjustments - captures; held = holds - captures - releases;
available = balance - held. A unique (job_id, kind) constraint makes a second capture or
release of one job impossible, whatever a crashed and retried worker does.

The account row carries the same two sums (``credits_balance``, ``credits_held``), moved in
the entry's own transaction (by ``add_entry``; for a job's hold, by admission's UPDATE, whose
entry ``record_holds`` writes; for its capture and release, by ``settle``), so reading a
balance is one row, not a scan of every entry the account ever had. ``ledger_balance``
recomputes them from the entries, for audits and for the tests that hold the two equal.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from castframe.store.db import insert_rows
from castframe.store.tables import accounts, ledger

KINDS = ("topup", "adjustment", "hold", "capture", "release")

# Built once (values are parameters): these run several times for every job.
_INSERT_ENTRY = ledger.insert()
_MOVE_TOTALS = (
    accounts.update()
    .where(accounts.c.id == sa.bindparam("account"))
    .values(
        credits_balance=accounts.c.credits_balance
        + sa.bindparam("balance_delta", type_=sa.BigInteger),
        credits_held=accounts.c.credits_held + sa.bindparam("held_delta", type_=sa.BigInteger),
    )
)
# Jobs' end: their captures leave the balance, their whole holds leave ``held``, slots free.
_SETTLE_AND_FREE_SLOTS = (
    accounts.update()
    .where(accounts.c.id == sa.bindparam("account"))
    .values(
        credits_balance=accounts.c.credits_balance - sa.bindparam("capture", type_=sa.BigInteger),
        credits_held=accounts.c.credits_held - sa.bindparam("price", type_=sa.BigInteger),
        active_jobs=accounts.c.active_jobs - sa.bindparam("count", type_=sa.Integer),
    )
)
_JOB_ENTRIES = sa.select(ledger.c.kind, ledger.c.amount).where(
    ledger.c.job_id == sa.bindparam("job_id")
)


@dataclass(frozen=True)
class Balance:
    balance: int
    held: int

    @property
    def available(self) -> int:
        return self.balance - self.held


def balance_from_totals(totals: dict[str, int]) -> Balance:
    """Pure: the balance from per-kind sums."""
    get = totals.get
    balance = get("topup", 0) + get("adjustment", 0) - get("capture", 0)
    held = get("hold", 0) - get("capture", 0) - get("release", 0)
    return Balance(balance=balance, held=held)


def entry_deltas(kind: str, amount: int) -> tuple[int, int]:
    """Pure: how one entry moves (balance, held)."""
    if kind in ("topup", "adjustment"):
        return amount, 0
    if kind == "hold":
        return 0, amount
    if kind == "capture":
        return -amount, -amount
    if kind == "release":
        return 0, -amount
    raise ValueError(f"unknown ledger kind {kind!r}")


def balance_from_entries(entries: Iterable[tuple[str, int]]) -> Balance:
    totals: dict[str, int] = {}
    for kind, amount in entries:
        totals[kind] = totals.get(kind, 0) + amount
    return balance_from_totals(totals)


def split_charge(price: int, requested: int, delivered: int) -> tuple[int, int]:
    """(capture, release) for a job that delivered ``delivered`` of ``requested`` images."""
    delivered = max(0, min(delivered, requested))
    capture = price * delivered // requested if requested else 0
    return capture, price - capture


def account_balance(conn: sa.Connection, account_id: str) -> Balance:
    """The account's running totals (one row)."""
    row = conn.execute(
        sa.select(accounts.c.credits_balance, accounts.c.credits_held).where(
            accounts.c.id == account_id
        )
    ).first()
    if row is None:
        return Balance(balance=0, held=0)
    return Balance(balance=int(row[0]), held=int(row[1]))


def ledger_balance(conn: sa.Connection, account_id: str) -> Balance:
    """The balance recomputed from every entry (slow; for audits and tests)."""
    rows = conn.execute(
        sa.select(ledger.c.kind, sa.func.coalesce(sa.func.sum(ledger.c.amount), 0))
        .where(ledger.c.account_id == account_id)
        .group_by(ledger.c.kind)
    ).all()
    return balance_from_totals({kind: int(total) for kind, total in rows})


def add_entry(
    conn: sa.Connection,
    account_id: str,
    kind: str,
    amount: int,
    job_id: str | None = None,
    note: str | None = None,
) -> None:
    balance_delta, held_delta = entry_deltas(kind, amount)
    conn.execute(_INSERT_ENTRY, _entry(account_id, job_id, kind, amount, time.time(), note))
    conn.execute(
        _MOVE_TOTALS,
        {"account": account_id, "balance_delta": balance_delta, "held_delta": held_delta},
    )


def job_entries(conn: sa.Connection, job_id: str) -> dict[str, int]:
    rows = conn.execute(_JOB_ENTRIES, {"job_id": job_id}).all()
    return {kind: int(amount) for kind, amount in rows}


def record_holds(conn: sa.Connection, holds: Sequence[tuple[str, str, int]]) -> None:
    """Write jobs' ``hold`` entries, (account, job, price) each, in one statement; admission's
    own UPDATE has already moved the totals."""
    now = time.time()
    insert_rows(
        conn, ledger, [_entry(account, job, "hold", price, now) for account, job, price in holds]
    )


@dataclass(frozen=True)
class Closing:
    """A job that has just become terminal, for ``settle_many``."""

    account_id: str
    job_id: str
    price: int
    requested: int
    delivered: int


def settle(
    conn: sa.Connection, account_id: str, job_id: str, price: int, requested: int, delivered: int
) -> int:
    """Close a job: capture what was delivered, release the rest, give back its slot.

    Returns the credits charged. Runs once per job, in the transaction of the job's one
    transition to a terminal state (each is a conditional UPDATE of the job row, so exactly one
    succeeds); the unique (job_id, kind) constraint refuses a second capture regardless.
    """
    return settle_many(conn, [Closing(account_id, job_id, price, requested, delivered)])[0]


def settle_many(conn: sa.Connection, closings: Sequence[Closing]) -> list[int]:
    """``settle`` for several jobs in one transaction; returns each one's charge.

    Each account's row moves once, by the sums of its jobs (totals and active-job count, which
    is admission's, in one UPDATE: every statement on that row is lock time that the account's
    submissions wait on), accounts in id order so concurrent settlements cannot deadlock. The
    rows come first: the entries' foreign-key checks then find them already locked by this
    transaction, instead of adding share locks that concurrent settlements would merge into
    multixacts (costly for every later reader of the row). Then all entries in one INSERT.
    """
    charges: list[int] = []
    entries: list[dict[str, Any]] = []
    moves: dict[str, list[int]] = {}
    now = time.time()
    for closing in closings:
        price = max(closing.price, 0)
        capture, release = (
            split_charge(price, closing.requested, closing.delivered) if price else (0, 0)
        )
        charges.append(capture)
        entries.extend(
            _entry(closing.account_id, closing.job_id, kind, amount, now)
            for kind, amount in (("capture", capture), ("release", release))
            if amount
        )
        move = moves.setdefault(closing.account_id, [0, 0, 0])
        move[0] += capture
        move[1] += price
        move[2] += 1
    for account_id in sorted(moves):
        capture, price, count = moves[account_id]
        conn.execute(
            _SETTLE_AND_FREE_SLOTS,
            {"account": account_id, "capture": capture, "price": price, "count": count},
        )
    if entries:
        insert_rows(conn, ledger, entries)
    return charges


def _entry(
    account_id: str,
    job_id: str | None,
    kind: str,
    amount: int,
    now: float,
    note: str | None = None,
) -> dict[str, Any]:
    return {
        "account_id": account_id,
        "job_id": job_id,
        "kind": kind,
        "amount": amount,
        "created_at": now,
        "note": note,
    }


MAX_ENTRY_ID = 2**31 - 1
"""The largest ledger entry id (an ``Integer`` column: 32 bits on PostgreSQL), so the top of
the range a ``cursor`` may name; a larger one would overflow the driver (SQLite: 64 bits)."""

TEST_BALANCE = Balance(balance=0, held=0)
"""What a test key sees: test jobs are free and hold nothing, so test mode has no ledger."""


def balance_in_mode(conn: sa.Connection, account_id: str, mode: str) -> Balance:
    """The live balance for live keys; test keys see only test mode's (empty) one."""
    return TEST_BALANCE if mode == "test" else account_balance(conn, account_id)


def ledger_page(
    conn: sa.Connection, account_id: str, mode: str, limit: int, before: int | None
) -> tuple[list[dict[str, Any]], bool]:
    """The account's entries newest first, below entry id ``before``; (page, more after it).
    Every entry is live money: a test key's page is empty."""
    if mode == "test":
        return [], False
    query = sa.select(ledger).where(ledger.c.account_id == account_id)
    if before is not None:
        query = query.where(ledger.c.id < before)
    rows = [
        dict(row)
        for row in conn.execute(query.order_by(ledger.c.id.desc()).limit(limit + 1)).mappings()
    ]
    return rows[:limit], len(rows) > limit
