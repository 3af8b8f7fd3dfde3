"""Admission: may this account queue one more job, and where in the queue does it go?

Each account row counts its unfinished jobs (``active_jobs``) next to its credit totals. A
submission is admitted by one conditional ``UPDATE`` that both checks the active-job limit and
the available credits and takes the slot; the row lock it takes is what serialises an
account's concurrent submissions, and because it is the last thing a submission writes before
its commit, that lock is held for one statement and the commit, not for the whole
transaction. Every transition of a job to a terminal state gives its slot back
(``ledger.settle``, which moves the credit totals in the same UPDATE), in the transaction that
makes the transition.

The same statement places the job in a fair queue (start-time fair queuing): each account
keeps a virtual clock, and a new job's key is ``max(now, clock + FAIR_SHARE_SECONDS)``. A
burst of a thousand jobs from one account gets keys a second apart, so another account's job
submitted a moment later is keyed ahead of all but the burst's first; an idle account's clock
catches up with the present, so idleness earns no credit. Workers take the lowest due key.
"""

from __future__ import annotations

import time

import sqlalchemy as sa

from castframe.errors import ApiError
from castframe.store.tables import accounts

ACTIVE_LIMIT_RETRY_AFTER = "5"
FAIR_SHARE_SECONDS = 1.0
"""How far apart one account's consecutive queued jobs are placed in the fair queue."""

# Built once (values are parameters): one of these runs for every submission.
_NOW = sa.bindparam("now", type_=sa.Float)
_NEXT_CLOCK = accounts.c.queue_clock + FAIR_SHARE_SECONDS
_TAKE_SLOT = (
    accounts.update()
    .where(
        accounts.c.id == sa.bindparam("account"),
        accounts.c.active_jobs < sa.bindparam("limit", type_=sa.Integer),
    )
    .values(
        active_jobs=accounts.c.active_jobs + 1,
        credits_held=accounts.c.credits_held + sa.bindparam("price", type_=sa.BigInteger),
        queue_clock=sa.case((_NEXT_CLOCK > _NOW, _NEXT_CLOCK), else_=_NOW),
    )
    .returning(accounts.c.queue_clock)
)
_TAKE_SLOT_AND_CHECK_CREDITS = _TAKE_SLOT.where(
    accounts.c.credits_balance - accounts.c.credits_held
    >= sa.bindparam("price", type_=sa.BigInteger)
)


def admit(
    conn: sa.Connection, account_id: str, price: int, limit: int, now: float | None = None
) -> float:
    """Take one active-job slot if the limit and the available credits allow; else raise.

    Returns the job's key in the fair queue. Raises ``too_many_active_jobs`` (429) or
    ``insufficient_credits`` (402) with the numbers that decided it. The same UPDATE holds the
    price (``credits_held``); the caller writes the matching ``hold`` entry (``ledger.record_holds``).
    """
    # A free (test-mode) job is admitted even on a negative balance.
    statement = _TAKE_SLOT_AND_CHECK_CREDITS if price > 0 else _TAKE_SLOT
    parameters = {
        "account": account_id,
        "limit": limit,
        "price": price,
        "now": time.time() if now is None else now,
    }
    key = conn.execute(statement, parameters).scalar()
    if key is not None:
        return float(key)
    row = conn.execute(
        sa.select(accounts.c.active_jobs, accounts.c.credits_balance, accounts.c.credits_held)
        .where(accounts.c.id == account_id)
        .with_for_update()
    ).one()
    active, balance, held = int(row[0]), int(row[1]), int(row[2])
    if active >= limit:
        raise ApiError(
            "too_many_active_jobs",
            f"the account has {active} unfinished jobs; the limit is {limit}",
            headers={"Retry-After": ACTIVE_LIMIT_RETRY_AFTER},
        )
    # Apiframe's 402 body: ``error`` is exactly "Insufficient credits", the numbers beside it.
    raise ApiError(
        "insufficient_credits",
        "Insufficient credits",
        extra={
            "creditsRequired": price,
            "creditsAvailable": max(0, balance - held),
            "balance": balance,
            "held": held,
        },
    )


# Several of one account's submissions at once: n slots, the sum of their prices, the clock
# moved n places (the first key as ``admit`` would give it, the rest one share apart).
_COUNT = sa.bindparam("count", type_=sa.Integer)
_TAKE_SLOTS = (
    accounts.update()
    .where(
        accounts.c.id == sa.bindparam("account"),
        accounts.c.active_jobs <= sa.bindparam("limit", type_=sa.Integer) - _COUNT,
    )
    .values(
        active_jobs=accounts.c.active_jobs + _COUNT,
        credits_held=accounts.c.credits_held + sa.bindparam("total", type_=sa.BigInteger),
        queue_clock=sa.case((_NEXT_CLOCK > _NOW, _NEXT_CLOCK), else_=_NOW)
        + (_COUNT - 1) * FAIR_SHARE_SECONDS,
    )
    .returning(accounts.c.queue_clock)
)
_TAKE_SLOTS_AND_CHECK_CREDITS = _TAKE_SLOTS.where(
    accounts.c.credits_balance - accounts.c.credits_held
    >= sa.bindparam("total", type_=sa.BigInteger)
)


def admit_all(
    conn: sa.Connection, account_id: str, prices: list[int], limit: int, now: float | None = None
) -> list[float] | None:
    """Admit all of one account's submissions in one UPDATE, or none of them.

    Returns their fair-queue keys, the same ones ``admit`` called once per submission (in
    this order) would give; None if they do not all fit under the active-job limit or the
    available credits, and then nothing is written: the caller admits them one by one, so
    each still gets its own answer. Under load an API process's batch often holds many
    submissions of one account, and the account's row then moves once instead of once each.
    """
    count = len(prices)
    total = sum(prices)
    statement = _TAKE_SLOTS_AND_CHECK_CREDITS if total > 0 else _TAKE_SLOTS
    last = conn.execute(
        statement,
        {
            "account": account_id,
            "limit": limit,
            "count": count,
            "total": total,
            "now": time.time() if now is None else now,
        },
    ).scalar()
    if last is None:
        return None
    return [float(last) - (count - 1 - index) * FAIR_SHARE_SECONDS for index in range(count)]


def active_jobs(conn: sa.Connection, account_id: str) -> int:
    value = conn.execute(
        sa.select(accounts.c.active_jobs).where(accounts.c.id == account_id)
    ).scalar()
    return int(value or 0)
