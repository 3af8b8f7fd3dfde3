"""One wall-clock deadline for a whole outbound HTTP exchange, enforced from outside the socket.

httpx's timeouts apply to each ``recv()``: a host that answers ``200 OK`` and then one header
byte per second (or one body byte per second) never trips them, and h11 reads ~16 KB of
headers. A ``Deadline`` bounds connect, status line, headers and body together:

- the exchange's ``trace`` extension (httpcore calls it once the TCP connection exists) hands
  over the connection's socket, of which the deadline keeps a duplicate descriptor;
- one watchdog thread per process wakes at each deadline and shuts that socket down
  (``shutdown(2)`` acts on the connection, not the descriptor, so it works through TLS too);
  the blocked ``recv``/``send`` returns at once and httpx raises;
- the caller asks ``expired`` to tell that failure from any other.

Nothing but a socket is touched from the watchdog thread, under the deadline's lock, so a
deadline that fires while its exchange is finishing is harmless. DNS resolution (the system
resolver's own timeouts) is the one step outside it.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from typing import Any


class Deadline:
    """``with Deadline(seconds) as deadline:`` around one exchange (redirects included); pass
    ``deadline.extensions`` to the httpx request and ``deadline.clamp(t)`` as its timeouts."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expires_at = time.monotonic() + seconds
        self.expired = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._closed = False

    def remaining(self) -> float:
        return self.expires_at - time.monotonic()

    def clamp(self, timeout: float) -> float:
        """``timeout``, or the time left if less (at least a millisecond: httpx reads 0 as
        "no timeout" in places)."""
        return max(0.001, min(timeout, self.remaining()))

    @property
    def extensions(self) -> dict[str, Any]:
        return {"trace": self.trace}

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore's trace hook: keep each new connection's socket."""
        if event.endswith("connect_tcp.complete"):
            stream = info.get("return_value")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if isinstance(sock, socket.socket):
                self.attach(sock)

    def attach(self, sock: socket.socket) -> None:
        """Shut ``sock``'s connection down when the deadline passes (at once if it has)."""
        with self._lock:
            if self._closed:
                return
            self._sockets.append(sock.dup())
            late = self.expired
        if late:
            self._fire()

    def _fire(self) -> None:
        """From the watchdog: cut every connection of the exchange."""
        with self._lock:
            if self._closed:
                return
            self.expired = True
            for sock in self._sockets:
                with contextlib.suppress(OSError):  # already closed by its peer
                    sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> Deadline:
        _WATCHDOG.add(self)
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            sock.close()
        _WATCHDOG.remove(self)


class _Watchdog:
    """One daemon thread that fires due deadlines (a heap, so any number cost one thread)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Deadline]] = []
        self._live: set[int] = set()
        self._counter = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, deadline: Deadline) -> None:
        with self._cond:
            heapq.heappush(self._heap, (deadline.expires_at, next(self._counter), deadline))
            self._live.add(id(deadline))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="castframe-deadlines", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def remove(self, deadline: Deadline) -> None:
        with self._cond:
            self._live.discard(id(deadline))
            # Finished entries are dropped when they come due; keep the heap from growing
            # with them when exchanges finish far ahead of their deadlines.
            if len(self._heap) > 64 and len(self._heap) > 4 * len(self._live):
                self._heap = [entry for entry in self._heap if id(entry[2]) in self._live]
                heapq.heapify(self._heap)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    wait = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(wait)
                _, _, due = heapq.heappop(self._heap)
                live = id(due) in self._live
            if live:
                due._fire()


_WATCHDOG = _Watchdog()
