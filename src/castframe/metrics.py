"""Prometheus metrics: counters and histograms in each process, queue gauges from the database.

API processes serve ``GET /metrics``; ``castframe worker --metrics-port N`` serves a worker's
own (engine latency, finished jobs). Queue depth and the oldest queued job's age are read from
the database at scrape time, so every API process reports the same, true values.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from castframe.jobs import states
from castframe.store.db import Database
from castframe.store.tables import jobs, status_is

REGISTRY = CollectorRegistry(auto_describe=True)

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 300)

HTTP_REQUESTS = Counter(
    "castframe_http_requests_total",
    "HTTP requests",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_SECONDS = Histogram(
    "castframe_http_request_seconds",
    "HTTP request latency",
    ["method", "route"],
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
JOBS_SUBMITTED = Counter(
    "castframe_jobs_submitted_total",
    "Jobs accepted",
    ["model", "engine", "mode"],
    registry=REGISTRY,
)
JOBS_FINISHED = Counter(
    "castframe_jobs_finished_total",
    "Jobs finished by this process",
    ["model", "engine", "status"],
    registry=REGISTRY,
)
ENGINE_SECONDS = Histogram(
    "castframe_engine_seconds",
    "Engine time per job",
    ["engine"],
    registry=REGISTRY,
    buckets=LATENCY_BUCKETS,
)
END_TO_END_SECONDS = Histogram(
    "castframe_job_end_to_end_seconds",
    "Submission to completion",
    ["model", "engine"],
    registry=REGISTRY,
    buckets=LATENCY_BUCKETS,
)
WEBHOOK_ATTEMPTS = Counter(
    "castframe_webhook_attempts_total",
    "Webhook delivery attempts",
    ["event", "outcome"],
    registry=REGISTRY,
)


# Each read through its partial index (store/tables.py), counting the index's own column
# (never NULL in it: a queued job has its key, a running one its lease) rather than ``*``,
# for which SQLite would pick the smallest whole-table index instead.
QUEUE_DEPTH = {
    states.QUEUED: sa.select(sa.func.count(jobs.c.queue_key)).where(
        status_is(jobs.c.status, states.QUEUED)
    ),
    states.PROCESSING: sa.select(sa.func.count(jobs.c.lease_expires_at)).where(
        status_is(jobs.c.status, states.PROCESSING)
    ),
}
OLDEST_QUEUED = sa.select(sa.func.min(jobs.c.created_at)).where(
    status_is(jobs.c.status, states.QUEUED)
)


class QueueCollector(Collector):
    """Queue depth and age of the oldest due job, read at scrape time."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[Any]:
        depth = GaugeMetricFamily("castframe_queue_depth", "Jobs by status", labels=["status"])
        oldest = GaugeMetricFamily(
            "castframe_queue_oldest_age_seconds", "Age of the oldest QUEUED job"
        )
        with self.db.read() as conn:
            found = {
                status: int(conn.execute(statement).scalar_one())
                for status, statement in QUEUE_DEPTH.items()
            }
            first = conn.execute(OLDEST_QUEUED).scalar()
        for status, count in found.items():
            depth.add_metric([status], float(count))
        oldest.add_metric([], max(0.0, time.time() - float(first)) if first else 0.0)
        yield depth
        yield oldest
