"""In-process wake-ups: one announcement wakes one idle thread, shutdown wakes them all."""

from __future__ import annotations

import threading
import time

from castframe.store.notify import Notifier


def _waiters(notifier: Notifier, count: int, woken: list[int]) -> list[threading.Thread]:
    lock = threading.Lock()

    def wait(index: int) -> None:
        started = time.monotonic()
        notifier.wait(2.0)
        if time.monotonic() - started < 1.5:  # woken, not timed out
            with lock:
                woken.append(index)

    threads = [threading.Thread(target=wait, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)  # let them all block
    return threads


def test_one_notify_wakes_exactly_one_idle_thread() -> None:
    notifier, woken = Notifier(), []
    threads = _waiters(notifier, 4, woken)
    notifier.notify()
    for thread in threads:
        thread.join()
    assert len(woken) == 1


def test_notify_all_wakes_every_thread() -> None:
    notifier, woken = Notifier(), []
    threads = _waiters(notifier, 4, woken)
    notifier.notify_all()
    for thread in threads:
        thread.join()
    assert len(woken) == 4


def test_a_wake_up_sent_while_nobody_waits_is_kept_once() -> None:
    notifier = Notifier()
    notifier.notify()
    notifier.notify()
    started = time.monotonic()
    notifier.wait(1.0)
    assert time.monotonic() - started < 0.2
    started = time.monotonic()
    notifier.wait(0.3)  # the second notify did not stack up
    assert time.monotonic() - started >= 0.25
