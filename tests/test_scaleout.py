"""Scale-out pieces: LISTEN/NOTIFY wake-ups, S3 storage, metrics, readiness, JSON logs."""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from castframe import logs
from castframe.app import create_app
from castframe.services import Services
from castframe.store.db import Database
from tests.conftest import (
    S3_CREDENTIALS,
    Api,
    body_for,
    make_bucket,
    make_settings,
    open_api,
    s3_storage,
)
from tests.support.http import LoopbackServer
from tests.support.images import astronaut_png, data_uri, decode
from tests.support.jobs import images_of
from tests.support.polling import wait_until


def test_notify_wakes_a_worker_in_another_process(tmp_path: Path, postgres_url: str) -> None:
    from tests.conftest import truncate_all

    truncate_all(postgres_url)
    # Same machine, same files: only the wake-up has to cross the process boundary.
    worker_settings = make_settings(tmp_path / "a" / "data", postgres_url, poll_interval=30.0)
    worker_side = Services.build(worker_settings)
    worker_side.start_worker(concurrency=1)
    worker_side.start_listener(jobs=True, webhooks=False)
    time.sleep(0.5)  # the worker's first poll has happened; from now on only NOTIFY wakes it
    try:
        with open_api(tmp_path / "a", postgres_url, run_worker=False) as api:
            key = api.key()
            started = time.time()
            response = api.generate(key, body_for(data_uri(astronaut_png())))
            job_id = response.json()["jobId"]
            wait_until(lambda: api.get_job(key, job_id)["status"] != "QUEUED", 10, 0.01)
            picked_up = time.time() - started
            assert picked_up < 3.0, picked_up  # far below the 30 s poll
            assert api.wait(key, job_id)["status"] == "COMPLETED"
    finally:
        worker_side.stop(grace=5)


def test_s3_storage_serves_presigned_urls(tmp_path: Path, sqlite_url: str, s3_server: str) -> None:
    bucket = make_bucket(s3_server)
    with open_api(tmp_path, sqlite_url, **s3_storage(s3_server, bucket)) as api:
        key = api.key()
        job = api.submit_and_wait(key, body_for(data_uri(astronaut_png())))
        assert job["status"] == "COMPLETED", job
        url = images_of(job)[0]["url"]
        assert url.startswith(f"{s3_server}/{bucket}/castframe/outputs/")
        assert "X-Amz-Signature=" in url and "X-Amz-Expires=3600" in url
        image = httpx.get(url, timeout=10)
        assert image.status_code == 200
        assert decode(image.content).shape == (1024, 1024, 3)
        upload = job["input"]["ideogramParams"]["character_reference_image"]
        assert upload.startswith("upload://")
        assert api.services.storage.exists(
            f"uploads/{api.client.get('/v2/account', headers={'X-API-Key': key}).json()['id']}/"
            f"{upload.removeprefix('upload://')}.png"
        )


def test_s3_misconfiguration_fails_at_start(
    tmp_path: Path, sqlite_url: str, s3_server: str
) -> None:
    settings = make_settings(
        tmp_path,
        sqlite_url,
        storage_url="s3://no-such-bucket/x",
        s3_endpoint_url=s3_server,
        **S3_CREDENTIALS,
    )
    with pytest.raises(Exception, match=r"404|NoSuchBucket|Not Found"):
        Services.build(settings)


def metric(text: str, sample: str) -> float:
    """The value of one sample line (0 when absent); counters are per process, so tests
    compare before and after."""
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def scrape(api: Api) -> str:
    """/metrics as a remote scraper with the operator's token reads it (TestClient's client
    address is not loopback: tests/test_first_hour.py covers the refusals)."""
    api.services.settings.metrics_token = "scrape-token"
    response = api.client.get("/metrics", headers={"Authorization": "Bearer scrape-token"})
    assert response.status_code == 200, response.text
    return response.text


def test_metrics_endpoint(api_sqlite: Api) -> None:
    submitted = (
        'castframe_jobs_submitted_total{engine="sandbox",mode="live",model="ideogram-character"}'
    )
    finished = (
        'castframe_jobs_finished_total{engine="sandbox",model="ideogram-character",'
        'status="COMPLETED"}'
    )
    posted = 'castframe_http_requests_total{method="POST",route="/v2/images/generate",status="202"}'
    before = scrape(api_sqlite)
    key = api_sqlite.key()
    api_sqlite.submit_and_wait(key, body_for(data_uri(astronaut_png())))
    after = scrape(api_sqlite)
    assert metric(after, submitted) == metric(before, submitted) + 1
    assert metric(after, finished) == metric(before, finished) + 1
    assert metric(after, posted) == metric(before, posted) + 1
    assert metric(after, 'castframe_engine_seconds_count{engine="sandbox"}') >= 1
    assert "castframe_job_end_to_end_seconds_bucket" in after
    assert metric(after, 'castframe_queue_depth{status="QUEUED"}') == 0.0
    assert "castframe_queue_oldest_age_seconds 0.0" in after


def test_queue_gauges_report_waiting_jobs(api_no_worker: Api) -> None:
    key = api_no_worker.key()
    for _ in range(3):
        api_no_worker.generate(key, body_for("https://example.com/a.png"))
    time.sleep(1.1)
    text = scrape(api_no_worker)
    assert metric(text, 'castframe_queue_depth{status="QUEUED"}') == 3.0
    age = metric(text, "castframe_queue_oldest_age_seconds")
    assert age >= 1.0


def test_readyz_fails_when_the_database_is_unreachable(tmp_path: Path, sqlite_url: str) -> None:
    settings = make_settings(tmp_path, sqlite_url)
    services = Services.build(settings)
    with TestClient(create_app(settings, services=services, run_worker=False)) as client:
        assert client.get("/readyz").status_code == 200
        services.db = Database("postgresql://nobody@127.0.0.1:1/none")
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["code"] == "not_ready"
        assert client.get("/healthz").status_code == 200


def test_json_logs_carry_request_and_job_ids() -> None:
    stream = io.StringIO()
    logs.configure("json")
    handler = logging.getLogger().handlers[0]
    handler.setStream(stream)  # type: ignore[attr-defined]
    token = logs.job_id.set("job-123")
    request = logs.request_id.set("req-9")
    try:
        logging.getLogger("castframe.test").info("hello %s", "world")
    finally:
        logs.job_id.reset(token)
        logs.request_id.reset(request)
    entry = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert entry["message"] == "hello world"
    assert entry["job_id"] == "job-123" and entry["request_id"] == "req-9"
    assert entry["level"] == "info" and entry["time"].endswith("Z")


def test_failed_jobs_are_counted_by_error_code(
    api_sqlite: Api, http_server: LoopbackServer
) -> None:
    failed = 'castframe_jobs_failed_total{code="invalid_image",engine="sandbox"}'
    api_sqlite.services.settings.metrics_token = "scrape-token"
    scrape = {"Authorization": "Bearer scrape-token"}  # the test client is not loopback
    before = api_sqlite.client.get("/metrics", headers=scrape).text
    key = api_sqlite.key()
    url = http_server.serve_bytes("/page.html", b"<html>hello</html>", "text/html")
    job = api_sqlite.submit_and_wait(key, body_for(url))
    assert (job["status"], job["errorCode"]) == ("FAILED", "invalid_image")
    after = api_sqlite.client.get("/metrics", headers=scrape).text
    assert metric(after, failed) == metric(before, failed) + 1
