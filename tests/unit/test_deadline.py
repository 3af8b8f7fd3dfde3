"""The wall-clock deadline of an outbound exchange (media/deadline.py), on real sockets."""

from __future__ import annotations

import socket
import time

from castframe.media.deadline import Deadline
from tests.support.polling import eventually


def test_a_blocked_read_returns_once_the_deadline_passes() -> None:
    """No read timeout at all: only the deadline's watchdog can end this ``recv``."""
    ours, theirs = socket.socketpair()
    with ours, theirs, Deadline(0.3) as deadline:
        deadline.attach(ours)
        ours.settimeout(None)
        assert ours.recv(1) == b""  # shut down under the blocked read
        assert deadline.expired


def test_a_socket_attached_after_the_deadline_is_shut_down_at_once() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs, Deadline(0.05) as deadline:
        eventually(lambda: deadline.expired, "the deadline to pass")
        deadline.attach(ours)
        assert ours.recv(1) == b""


def test_a_finished_exchange_is_left_alone_when_its_deadline_comes() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        with Deadline(0.1) as deadline:
            deadline.attach(ours)
        time.sleep(0.3)  # past the deadline it no longer has
        assert not deadline.expired
        theirs.sendall(b"x")
        assert ours.recv(1) == b"x"


def test_many_short_exchanges_do_not_pile_up_in_the_watchdog() -> None:
    """Exchanges that end long before their deadlines leave no trace behind."""
    from castframe.media import deadline as module

    for _ in range(500):
        with Deadline(3600):
            pass
    assert len(module._WATCHDOG._heap) <= 4 * 64
