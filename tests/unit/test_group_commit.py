"""Group commit: callers that overlap share a batch, and each gets its own outcome."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from castframe.store.group_commit import GroupCommit
from tests.support.polling import wait_until


class Refused(Exception):
    pass


class Recorder:
    """A write_batch that records its batches and can hold the first one open."""

    def __init__(self, hold_first: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.alone: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()

    def write_batch(self, items: Sequence[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        self.entered.set()
        self.release.wait(10)
        if 13 in items:
            raise RuntimeError("the transaction failed")
        return [Refused(f"no {item}") if item < 0 else item * 10 for item in items]

    def write_one(self, item: int) -> int:
        self.alone.append(item)
        if item == 13:
            raise Refused("13 is poisoned")
        return item * 10


def run_concurrently(group: GroupCommit[int, int], items: list[int]) -> dict[int, object]:
    results: dict[int, object] = {}

    def call(item: int) -> None:
        try:
            results[item] = group.submit(item)
        except Exception as exc:
            results[item] = exc

    threads = [threading.Thread(target=call, args=(item,)) for item in items]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return results


def test_a_lone_caller_is_written_at_once() -> None:
    recorder = Recorder()
    group = GroupCommit(recorder.write_batch, recorder.write_one)
    assert group.submit(4) == 40
    assert recorder.batches == [[4]]


def behind_a_held_batch(
    recorder: Recorder, group: GroupCommit[int, int], items: list[int]
) -> dict[int, object]:
    """Hold batch [1] open while ``items`` queue up behind it, then let everything run."""
    first = threading.Thread(target=group.submit, args=(1,))
    first.start()
    assert recorder.entered.wait(5)
    waiting = run_in_background(group, items)
    wait_until(lambda: len(group._queued) == len(items), timeout=5.0, interval=0.001)
    recorder.release.set()
    first.join(5)
    return waiting()


def test_callers_that_arrive_during_a_flush_share_the_next_batch() -> None:
    recorder = Recorder(hold_first=True)
    group: GroupCommit[int, int] = GroupCommit(recorder.write_batch, recorder.write_one)
    results = behind_a_held_batch(recorder, group, [2, 3, 4, 5, 6])
    assert results == {2: 20, 3: 30, 4: 40, 5: 50, 6: 60}
    assert recorder.batches[0] == [1]
    assert sorted(recorder.batches[1]) == [2, 3, 4, 5, 6]
    assert group.batches == 2


def test_batches_are_capped() -> None:
    recorder = Recorder(hold_first=True)
    group: GroupCommit[int, int] = GroupCommit(recorder.write_batch, recorder.write_one, 2)
    results = behind_a_held_batch(recorder, group, [2, 3, 4, 5, 6])
    assert results == {2: 20, 3: 30, 4: 40, 5: 50, 6: 60}
    assert all(len(batch) <= 2 for batch in recorder.batches)


def test_an_items_own_refusal_reaches_only_its_caller() -> None:
    recorder = Recorder()
    group = GroupCommit(recorder.write_batch, recorder.write_one)
    results = run_concurrently(group, [1, -2, 3])
    assert results[1] == 10 and results[3] == 30
    assert isinstance(results[-2], Refused)
    assert recorder.alone == []  # refusals are outcomes, not batch failures


def test_a_failed_batch_is_written_item_by_item() -> None:
    recorder = Recorder(hold_first=True)
    group: GroupCommit[int, int] = GroupCommit(recorder.write_batch, recorder.write_one)
    results = behind_a_held_batch(recorder, group, [12, 13, 14])
    # The batch with the poisoned 13 failed as a whole; each item was then written alone, so
    # 12 and 14 still succeed and only 13's caller sees its error.
    assert results[12] == 120 and results[14] == 140
    assert isinstance(results[13], Refused)
    assert sorted(recorder.alone) == [12, 13, 14]


def test_a_write_batch_that_miscounts_falls_back_too() -> None:
    group: GroupCommit[int, int] = GroupCommit(lambda items: [], lambda item: item + 1)
    assert group.submit(1) == 2


def run_in_background(
    group: GroupCommit[int, int], items: list[int]
) -> Callable[[], dict[int, object]]:
    """Start callers in the background; returns a function that waits for their results."""
    results: dict[int, object] = {}
    done = threading.Event()

    def runner() -> None:
        results.update(run_concurrently(group, items))
        done.set()

    threading.Thread(target=runner).start()

    def join() -> dict[int, object]:
        assert done.wait(10)
        return results

    return join


def test_many_threads_each_get_their_own_result() -> None:
    """Leadership passes from batch to batch without losing or mixing anyone's outcome."""
    batches: list[int] = []

    def write_batch(items: Sequence[int]) -> list[int | BaseException]:
        batches.append(len(items))
        time.sleep(0.001)
        return [Refused(str(item)) if item % 7 == 0 else item * 2 for item in items]

    group: GroupCommit[int, int] = GroupCommit(write_batch, lambda item: item * 2, max_batch=8)
    failures: list[str] = []

    def caller(start: int) -> None:
        for item in range(start, start + 20):
            try:
                result = group.submit(item)
                if item % 7 == 0 or result != item * 2:
                    failures.append(f"{item} -> {result}")
            except Refused as refused:
                if item % 7 != 0 or str(refused) != str(item):
                    failures.append(f"{item} refused")

    threads = [threading.Thread(target=caller, args=(index * 100,)) for index in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []
    assert sum(batches) == 24 * 20
    assert max(batches) <= 8 and len(batches) < 24 * 20  # they did share


def test_a_leader_lingers_for_its_busy_siblings_and_writes_them_in_one_batch() -> None:
    """Three busy slots that finish a moment apart share one transaction."""
    recorder = Recorder()
    group: GroupCommit[int, int] = GroupCommit(
        recorder.write_batch, recorder.write_one, siblings=lambda: 3, linger=10.0
    )
    results: dict[int, object] = {}

    def call(item: int) -> None:
        results[item] = group.submit(item)

    threads = []
    for item in (1, 2, 3):
        threads.append(threading.Thread(target=call, args=(item,)))
        threads[-1].start()
        time.sleep(0.05)  # each finishes a little after the previous one
    for thread in threads:
        thread.join(10)
    assert recorder.batches == [[1, 2, 3]]
    assert results == {1: 10, 2: 20, 3: 30}


def test_a_leader_stops_lingering_when_the_linger_is_over() -> None:
    """A sibling that stays busy (a long job) does not hold a finished job back for long."""
    recorder = Recorder()
    group: GroupCommit[int, int] = GroupCommit(
        recorder.write_batch, recorder.write_one, siblings=lambda: 2, linger=0.05
    )
    assert group.submit(1) == 10
    assert recorder.batches == [[1]]


def test_without_siblings_nothing_lingers() -> None:
    """The default: the lone caller is written at once, however long the linger."""
    recorder = Recorder()
    group: GroupCommit[int, int] = GroupCommit(
        recorder.write_batch, recorder.write_one, siblings=lambda: 1, linger=60.0
    )
    assert group.submit(5) == 50  # would take a minute if it waited for a sibling
    assert recorder.batches == [[5]]
