"""Queue gauges for ``GET /metrics``, read from the database at scrape time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from castframe.jobs import store as job_store
from castframe.store.db import Database


class QueueCollector(Collector):
    """Queue depth and age of the oldest due job."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[Any]:
        depth = GaugeMetricFamily("castframe_queue_depth", "Jobs by status", labels=["status"])
        oldest = GaugeMetricFamily(
            "castframe_queue_oldest_age_seconds", "Age of the oldest QUEUED job"
        )
        with self.db.read() as conn:
            found, first = job_store.queue_depths(conn)
        for status, count in found.items():
            depth.add_metric([status], float(count))
        oldest.add_metric([], max(0.0, time.time() - first) if first else 0.0)
        yield depth
        yield oldest
