"""The scale-out promise: 2 API processes, 3 workers, PostgreSQL, S3, one worker SIGKILLed."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from castframe.store.db import Database
from castframe.store.tables import jobs, ledger
from tests.conftest import make_bucket, truncate_all
from tests.e2e.conftest import Castframe
from tests.support.http import LoopbackServer, Reply
from tests.support.images import astronaut_png, data_uri
from tests.support.jobs import images_of
from tests.support.polling import wait_until

pytestmark = pytest.mark.e2e

JOBS = 200


def test_two_apis_three_workers_postgres_s3_and_a_killed_worker(
    tmp_path: Path, postgres_url: str, s3_server: str, http_server: LoopbackServer
) -> None:
    truncate_all(postgres_url)
    bucket = make_bucket(s3_server)
    http_server.routes["/hook"] = lambda _r: Reply(200)
    deployment = Castframe(
        tmp_path,
        postgres_url,
        storage_url=f"s3://{bucket}/run",
        s3_endpoint_url=s3_server,
        s3_access_key_id="test",
        s3_secret_access_key="test",
        max_active_jobs="1000",
        faces_enabled="false",
        lease_seconds="3",
        poll_interval="1",
    )
    try:
        _, api_a = deployment.server("--no-worker")
        _, api_b = deployment.server("--no-worker")
        workers = [deployment.worker("--concurrency", "2") for _ in range(3)]
        key = deployment.key(credits=JOBS * 10)
        headers = {"X-API-Key": key}
        upload = httpx.post(
            f"{api_a}/v2/uploads",
            headers=headers,
            files={"file": ("r.png", astronaut_png(), "image/png")},
        ).json()
        body = {
            "prompt": "a sailor on a beach",
            "model": "ideogram-character",
            "webhookUrl": http_server.url("/hook"),
            "ideogramParams": {
                "character_reference_image": upload["reference"],
                "rendering_speed": "turbo",
            },
        }

        def submit(index: int) -> str:
            base = api_a if index % 2 else api_b
            with httpx.Client(timeout=30) as client:
                response = client.post(
                    f"{base}/v2/images/generate",
                    json=body,
                    headers={**headers, "Idempotency-Key": f"job-{index}"},
                )
            assert response.status_code == 202, response.text
            return str(response.json()["jobId"])

        with ThreadPoolExecutor(16) as pool:
            ids = list(pool.map(submit, range(JOBS)))
        assert len(set(ids)) == JOBS

        db = Database(postgres_url)

        def count(status: str) -> int:
            with db.read() as conn:
                return int(
                    conn.execute(
                        sa.select(sa.func.count()).select_from(jobs).where(jobs.c.status == status)
                    ).scalar()
                    or 0
                )

        wait_until(lambda: count("COMPLETED") >= 20, 120, 0.2)
        workers[0].kill()  # mid-run, with jobs in its hands
        wait_until(lambda: count("COMPLETED") == JOBS, 300, 0.5)
        assert count("FAILED") == 0

        with db.read() as conn:
            captures = conn.execute(
                sa.select(ledger.c.job_id, ledger.c.amount).where(ledger.c.kind == "capture")
            ).all()
            attempts = conn.execute(sa.select(sa.func.max(jobs.c.attempts))).scalar()
        db.dispose()
        assert sorted(str(job_id) for job_id, _ in captures) == sorted(ids)
        assert {int(amount) for _, amount in captures} == {10}
        balance = httpx.get(f"{api_b}/v2/account", headers=headers).json()
        assert (balance["balance"], balance["held"]) == (0, 0)
        assert attempts is not None and attempts >= 1

        hooks = http_server.wait_for("/hook", JOBS, timeout=120)
        delivered = {r.json()["jobId"] for r in hooks if r.json()["event"] == "completed"}
        assert delivered == set(ids)

        sample = httpx.get(f"{api_a}/v2/jobs/{ids[0]}", headers=headers).json()
        image = httpx.get(images_of(sample)[0]["url"], timeout=10)
        assert image.status_code == 200 and image.content[:4] == b"\x89PNG"
        assert images_of(sample)[0]["url"].startswith(s3_server)
        for worker in workers[1:]:
            assert worker.terminate(timeout=60) == 0
        time.sleep(0.1)
    finally:
        deployment.close()


def test_upload_to_one_api_is_visible_to_another(
    tmp_path: Path, postgres_url: str, s3_server: str
) -> None:
    truncate_all(postgres_url)
    bucket = make_bucket(s3_server)
    deployment = Castframe(
        tmp_path,
        postgres_url,
        storage_url=f"s3://{bucket}",
        s3_endpoint_url=s3_server,
        s3_access_key_id="test",
        s3_secret_access_key="test",
    )
    try:
        _, api_a = deployment.server("--no-worker")
        _, api_b = deployment.server()
        key = deployment.key()
        headers = {"X-API-Key": key}
        body = {
            "prompt": "p",
            "model": "ideogram-character",
            "ideogramParams": {
                "character_reference_image": data_uri(astronaut_png()),
                "rendering_speed": "turbo",
            },
        }
        job_id = httpx.post(f"{api_a}/v2/images/generate", json=body, headers=headers).json()[
            "jobId"
        ]
        wait_until(
            lambda: (
                httpx.get(f"{api_b}/v2/jobs/{job_id}", headers=headers).json()["status"]
                == "COMPLETED"
            ),
            60,
        )
    finally:
        deployment.close()
