"""Prometheus metrics: counters and histograms in each process, queue gauges from the database.

API processes serve ``GET /metrics``; ``castframe worker --metrics-port N`` serves a worker's
own (engine latency, finished jobs). Queue depth and the oldest queued job's age are read from
the database at scrape time (api/queue_metrics.py), so every API process reports the same,
true values.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

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
JOBS_FAILED = Counter(
    "castframe_jobs_failed_total",
    "Jobs this process finished FAILED, by error code (docs/errors.md)",
    ["engine", "code"],
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
MODEL_LOAD_SECONDS = Histogram(
    "castframe_model_load_seconds",
    "Time a lane spent making a model resident on its device before a job of it "
    "(engines/residency.py: ModelHost.load)",
    ["engine", "model"],
    registry=REGISTRY,
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 300),
)
MODEL_SWITCHES = Counter(
    "castframe_model_switches_total",
    "Model loads a lane made to run a job whose model was not resident",
    ["engine", "model"],
    registry=REGISTRY,
)
MODEL_SWITCH_SECONDS = Counter(
    "castframe_model_switch_seconds_total",
    "Seconds lanes spent switching models (loading instead of running jobs)",
    ["engine"],
    registry=REGISTRY,
)
