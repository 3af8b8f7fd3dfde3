"""The worker's fair share per account (jobs/fair_share.py): which due jobs a claim takes."""

from __future__ import annotations

from castframe.jobs.fair_share import CLAIM_WINDOW_EXTRA, Candidate, fair_pick, window_size


def window(*accounts: str) -> list[Candidate]:
    """Candidates in key order: the n-th of ``accounts`` gets key n and id ``<account><n>``."""
    return [
        Candidate(f"{account}{key}", account, float(key)) for key, account in enumerate(accounts)
    ]


def test_with_nothing_held_and_one_account_it_is_key_order() -> None:
    assert fair_pick(window("a", "a", "a"), {}, 2) == ["a0", "a1"]


def test_accounts_take_turns_in_the_window() -> None:
    """a's run of jobs comes first in the queue; b and c still get the second and third turn."""
    assert fair_pick(window("a", "a", "a", "b", "c", "b"), {}, 4) == ["a0", "b3", "c4", "a1"]


def test_jobs_the_worker_holds_count_as_turns_taken() -> None:
    """a already holds two of the worker's slots: b's later job goes first, then c's."""
    picked = fair_pick(window("a", "a", "b", "c"), {"a": 2}, 3)
    assert picked == ["b2", "c3", "a0"]


def test_an_account_holding_nothing_goes_before_one_holding_a_lane() -> None:
    assert fair_pick(window("a", "a", "a", "b"), {"a": 1}, 1) == ["b3"]


def test_held_accounts_absent_from_the_window_change_nothing() -> None:
    assert fair_pick(window("a", "b"), {"z": 5}, 2) == ["a0", "b1"]


def test_the_limit_bounds_the_pick_and_an_empty_window_picks_nothing() -> None:
    assert fair_pick(window("a", "b", "c"), {}, 0) == []
    assert fair_pick([], {"a": 1}, 3) == []
    assert window_size(4) == 4 + CLAIM_WINDOW_EXTRA
