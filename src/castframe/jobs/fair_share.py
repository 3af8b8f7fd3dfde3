"""A worker's fair share per account: which of the due jobs a claim takes, and in what order.

The fair queue (jobs/admission.py) spaces each account's jobs a second apart, which is fair
while jobs take about that long. It is not enough on its own when one account's jobs are
slow (a reference that trickles until the fetch deadline, a 4-image quality job): a worker
claims ahead (a lane's next job is prepared while the engine runs), so the slow account's
next jobs would already be held by the worker when another account's job arrives, and that
job would wait a whole round of them.

So a claim looks at a window of the lowest due keys, wider than what it takes, and gives
each account turns: an account's first job in the window has the turn after the jobs the
worker already holds for it, its second job the turn after that, and so on. The claim takes
the lowest turns (ties by key), and the worker's lanes take them in that order. With nothing
held and one account in the window this is plain key order; an account whose jobs already
fill the worker's lanes goes after every account that has none running.

The rule is this one pure function; jobs/store.py reads the window and writes the claim.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

CLAIM_WINDOW_EXTRA = 16
"""Due jobs a claim looks at beyond the ones it takes: how far past one account's run of
jobs it sees another account's."""


@dataclass(frozen=True)
class Candidate:
    """A due job as the claim's window reads it."""

    id: str
    account_id: str
    queue_key: float


def window_size(limit: int) -> int:
    """How many of the lowest due keys a claim of ``limit`` jobs looks at."""
    return limit + CLAIM_WINDOW_EXTRA


def fair_pick(candidates: Sequence[Candidate], held: Mapping[str, int], limit: int) -> list[str]:
    """The ids of up to ``limit`` candidates to claim, in the order they should run.

    ``candidates``: the window, in queue-key order. ``held``: how many jobs the claiming
    worker holds per account now (claimed, prepared, running or being post-processed).
    """
    turns: dict[str, int] = dict(held)
    ranked: list[tuple[int, float, str]] = []
    for candidate in candidates:
        turn = turns.get(candidate.account_id, 0) + 1
        turns[candidate.account_id] = turn
        ranked.append((turn, candidate.queue_key, candidate.id))
    ranked.sort()
    return [job_id for _, _, job_id in ranked[: max(0, limit)]]
