"""The live workers and the models they serve: the ``workers`` table.

A worker inserts its row when it starts (``register``), its heartbeat renews it (``beat``,
every third of a lease) and it deletes it when it stops (``forget``). A worker that died
leaves its row behind: rows not renewed for ``live_seconds`` (a lease) are not live, and are
deleted by the next ``register``. ``models`` NULL means the worker serves every model.

Nothing here routes a job: a worker claims only the models it serves (jobs/store.py's
``claim_many``), so a job whose model no live worker serves simply stays queued. This table
lets the API say so (``GET /v2/models``, ``/healthz``) and, when the operator chooses
(``CASTFRAME_UNSERVED_MODELS=reject``), refuse such a submission with 503 ``model_unavailable``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Sequence

import sqlalchemy as sa

from castframe.store.tables import workers


def register(
    conn: sa.Connection,
    worker_id: str,
    models: Sequence[str] | None,
    lanes: int,
    live_seconds: float,
    now: float | None = None,
) -> None:
    """Record this worker as live, serving ``models`` (None: all); drop dead workers' rows."""
    now = time.time() if now is None else now
    conn.execute(workers.delete().where(workers.c.seen_at < now - live_seconds))
    conn.execute(workers.delete().where(workers.c.id == worker_id))
    conn.execute(
        workers.insert().values(
            id=worker_id,
            models=None if models is None else sorted(models),
            lanes=lanes,
            started_at=now,
            seen_at=now,
        )
    )


def beat(
    conn: sa.Connection,
    worker_id: str,
    models: Sequence[str] | None,
    lanes: int,
    now: float | None = None,
) -> None:
    """Renew the worker's row (inserting it again if a sweep took it while it was silent)."""
    now = time.time() if now is None else now
    renewed = conn.execute(
        workers.update().where(workers.c.id == worker_id).values(seen_at=now)
    ).rowcount
    if not renewed:
        conn.execute(
            workers.insert().values(
                id=worker_id,
                models=None if models is None else sorted(models),
                lanes=lanes,
                started_at=now,
                seen_at=now,
            )
        )


def forget(conn: sa.Connection, worker_id: str) -> None:
    """The worker stopped: it serves nothing any more."""
    conn.execute(workers.delete().where(workers.c.id == worker_id))


def live_models(
    conn: sa.Connection, live_seconds: float, now: float | None = None
) -> frozenset[str] | None:
    """The models some live worker serves; None when a live worker serves every model."""
    now = time.time() if now is None else now
    served: set[str] = set()
    rows = conn.execute(sa.select(workers.c.models).where(workers.c.seen_at >= now - live_seconds))
    for (models,) in rows:
        if models is None:
            return None
        served.update(str(model) for model in models)
    return frozenset(served)


def unserved(catalog: Collection[str], live: frozenset[str] | None) -> list[str]:
    """The models of ``catalog`` that no live worker serves, in catalog order."""
    if live is None:
        return []
    return [model for model in catalog if model not in live]


class LiveModels:
    """``live_models`` read at most once per ``ttl`` seconds per process: what submission
    checks when the operator refuses unserved models, and what the catalog and ``/healthz``
    show (a read per request would put a statement on hot paths, and on a liveness probe, for
    a fact that changes when workers start or stop)."""

    def __init__(self, ttl: float = 2.0) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._value: frozenset[str] | None = None
        self._read_at = float("-inf")

    def value(self, read: Callable[[], frozenset[str] | None]) -> frozenset[str] | None:
        """``live_models`` as last read, read again (``read()``) once ``ttl`` has passed."""
        now = time.monotonic()
        with self._lock:
            if now - self._read_at >= self.ttl:
                self._value = read()
                self._read_at = now
            return self._value

    def serves(self, model: str, read: Callable[[], frozenset[str] | None]) -> bool:
        """Whether some live worker serves ``model``."""
        value = self.value(read)
        return value is None or model in value
