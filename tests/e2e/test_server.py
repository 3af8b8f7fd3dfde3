"""End to end against real server processes: the seed's requests, restarts, concurrency."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from castframe.store.db import Database
from castframe.store.tables import jobs, ledger
from tests.e2e.conftest import Castframe
from tests.support.images import decode
from tests.support.jobs import images_of
from tests.support.polling import wait_until

pytestmark = pytest.mark.e2e


def test_seed_curl_request_and_python_polling_loop(
    castframe_sqlite: Castframe, ref: str, tmp_path: Path
) -> None:
    _, base = castframe_sqlite.server()
    key = castframe_sqlite.key()
    body = json.dumps(
        {
            "prompt": "A cinematic portrait of the character in a rainy neon city",
            "model": "ideogram-character",
            "ideogramParams": {
                "character_reference_image": ref,
                "style_type": "AUTO",
                "magic_prompt_option": "Auto",
                "negative_prompt": "blurry, low quality",
            },
        }
    )
    curl = subprocess.run(
        [
            "curl",
            "-s",
            "-X",
            "POST",
            f"{base}/v2/images/generate",
            "-H",
            f"X-API-Key: {key}",
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    submitted = json.loads(curl.stdout)
    assert list(submitted) == ["jobId", "status"] and submitted["status"] == "QUEUED"
    # The README's Python polling loop, run as a user would run it.
    script = tmp_path / "poll.py"
    script.write_text(
        textwrap.dedent(f"""
        import json, time, urllib.request

        API_KEY = {key!r}
        job_id = {submitted["jobId"]!r}
        status = "QUEUED"
        while status not in ("COMPLETED", "FAILED"):
            time.sleep(0.5)
            request = urllib.request.Request("{base}/v2/jobs/" + job_id,
                                             headers={{"X-API-Key": API_KEY}})
            job = json.load(urllib.request.urlopen(request))
            status = job["status"]
        print(json.dumps(job))
    """)
    )
    result = subprocess.run(
        [shutil.which("python3") or "python3", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    job = json.loads(result.stdout)
    assert job["status"] == "COMPLETED"
    image = httpx.get(images_of(job)[0]["url"], timeout=10)
    assert image.status_code == 200
    assert decode(image.content).shape == (1024, 1024, 3)


def test_javascript_fetch_loop(castframe_sqlite: Castframe, ref: str, tmp_path: Path) -> None:
    node = shutil.which("node")
    assert node, "node is part of this project's machine image"
    _, base = castframe_sqlite.server()
    key = castframe_sqlite.key()
    script = tmp_path / "poll.mjs"
    script.write_text(
        textwrap.dedent(f"""
        const BASE = "{base}";
        const headers = {{"X-API-Key": "{key}", "Content-Type": "application/json"}};
        const submit = await fetch(`${{BASE}}/v2/images/generate`, {{
          method: "POST", headers,
          body: JSON.stringify({{prompt: "a hiker on snowy mountains", model: "ideogram-character",
            ideogramParams: {{character_reference_image: "{ref}", rendering_speed: "turbo"}}}})
        }});
        const {{ jobId }} = await submit.json();
        let job;
        do {{
          await new Promise(r => setTimeout(r, 500));
          job = await (await fetch(`${{BASE}}/v2/jobs/${{jobId}}`, {{ headers }})).json();
        }} while (job.status !== "COMPLETED" && job.status !== "FAILED");
        console.log(JSON.stringify({{status: submit.status, job}}));
    """)
    )
    result = subprocess.run(
        [node, str(script)], capture_output=True, text=True, timeout=60, check=True
    )
    out = json.loads(result.stdout)
    assert out["status"] == 202
    assert out["job"]["status"] == "COMPLETED"
    assert images_of(out["job"])[0]["width"] == 1024


def _captures(database_url: str) -> list[tuple[str, int]]:
    db = Database(database_url)
    with db.read() as conn:
        rows = conn.execute(
            sa.select(ledger.c.job_id, ledger.c.amount).where(ledger.c.kind == "capture")
        ).all()
    db.dispose()
    return [(str(job_id), int(amount)) for job_id, amount in rows]


def test_restart_with_jobs_in_flight_loses_nothing(castframe_sqlite: Castframe, ref: str) -> None:
    deployment = castframe_sqlite
    server, base = deployment.server()
    key = deployment.key(credits=10_000)
    headers = {"X-API-Key": key}
    body = {
        "prompt": "a knight in a misty forest",
        "model": "ideogram-character",
        "num_images": 4,
        "ideogramParams": {"character_reference_image": ref, "rendering_speed": "quality"},
    }
    ids = [
        httpx.post(f"{base}/v2/images/generate", json=body, headers=headers).json()["jobId"]
        for _ in range(6)
    ]
    wait_until(
        lambda: any(
            httpx.get(f"{base}/v2/jobs/{i}", headers=headers).json()["status"] == "PROCESSING"
            for i in ids
        ),
        30,
    )
    server.kill()  # SIGKILL: no chance to clean up
    _, base = deployment.server()
    final = {}
    for job_id in ids:
        final[job_id] = wait_until(
            lambda j=job_id: (
                (r := httpx.get(f"{base}/v2/jobs/{j}", headers=headers).json())["status"]
                in ("COMPLETED", "FAILED")
                and r
            ),
            120,
        )
    assert {job["status"] for job in final.values()} == {"COMPLETED"}
    captures = _captures(deployment.env["CASTFRAME_DATABASE_URL"])
    assert sorted(job_id for job_id, _ in captures) == sorted(ids)
    assert all(amount == 80 for _, amount in captures)


def test_api_only_server_and_separate_worker_with_sigkill_takeover(
    castframe_any: Castframe, ref: str
) -> None:
    deployment = castframe_any
    _, base = deployment.server("--no-worker")
    key = deployment.key()
    headers = {"X-API-Key": key}
    body = {
        "prompt": "portrait in a studio",
        "model": "ideogram-character",
        "num_images": 4,
        "ideogramParams": {"character_reference_image": ref, "rendering_speed": "quality"},
    }
    ids = [
        httpx.post(f"{base}/v2/images/generate", json=body, headers=headers).json()["jobId"]
        for _ in range(4)
    ]
    time.sleep(1.0)
    assert {httpx.get(f"{base}/v2/jobs/{i}", headers=headers).json()["status"] for i in ids} == {
        "QUEUED"
    }  # no worker in the API process
    doomed = deployment.worker("--concurrency", "1")
    wait_until(
        lambda: any(
            httpx.get(f"{base}/v2/jobs/{i}", headers=headers).json()["status"] == "PROCESSING"
            for i in ids
        ),
        60,
    )
    doomed.kill()
    survivor = deployment.worker("--concurrency", "2")
    for job_id in ids:
        wait_until(
            lambda j=job_id: (
                httpx.get(f"{base}/v2/jobs/{j}", headers=headers).json()["status"] == "COMPLETED"
            ),
            120,
        )
    assert survivor.terminate() == 0  # SIGTERM drains and exits cleanly
    captures = _captures(deployment.env["CASTFRAME_DATABASE_URL"])
    assert sorted(job_id for job_id, _ in captures) == sorted(ids)


def test_twenty_concurrent_identical_requests_create_one_job(castframe_any: Castframe) -> None:
    deployment = castframe_any
    _, base = deployment.server("--no-worker")
    key = deployment.key(credits=1000)
    body = {
        "prompt": "a sailor on the beach",
        "model": "ideogram-character",
        "ideogramParams": {"character_reference_image": "https://example.com/a.png"},
    }
    headers = {"X-API-Key": key, "Idempotency-Key": "order-42"}

    def send(_: int) -> httpx.Response:
        with httpx.Client(timeout=30) as client:
            return client.post(f"{base}/v2/images/generate", json=body, headers=headers)

    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(send, range(20)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {202, 409}, statuses
    created = {r.json()["jobId"] for r in responses if r.status_code == 202}
    assert len(created) == 1
    assert all(
        r.json()["code"] == "idempotency_key_in_use" for r in responses if r.status_code == 409
    )
    again = httpx.post(f"{base}/v2/images/generate", json=body, headers=headers)
    assert again.json()["jobId"] in created
    assert again.headers["idempotent-replayed"] == "true"
    db = Database(deployment.env["CASTFRAME_DATABASE_URL"])
    with db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(jobs)).scalar() == 1
        holds = conn.execute(
            sa.select(sa.func.sum(ledger.c.amount)).where(ledger.c.kind == "hold")
        ).scalar()
    db.dispose()
    assert holds == 15


def test_cli_keys_lifecycle(castframe_sqlite: Castframe) -> None:
    deployment = castframe_sqlite
    _, base = deployment.server("--no-worker")
    created = deployment.cli(
        "keys", "create", "--account", "team", "--mode", "test", "--name", "ci"
    )
    key = created.strip().splitlines()[-1]
    assert key.startswith("afk_test_")
    listing = deployment.cli("keys", "list", "--account", "team")
    assert key[:13] in listing and "active" in listing and key not in listing
    assert httpx.get(f"{base}/v2/jobs", headers={"X-API-Key": key}).status_code == 200
    deployment.cli("keys", "deactivate", key[:13])
    assert httpx.get(f"{base}/v2/jobs", headers={"X-API-Key": key}).status_code == 403
    deployment.cli("keys", "activate", key[:13])
    deployment.cli("keys", "revoke", key)
    assert httpx.get(f"{base}/v2/jobs", headers={"X-API-Key": key}).status_code == 401
    shown = json.loads(deployment.cli("accounts", "topup", "team", "50"))
    assert shown["balance"] == 50
    assert json.loads(deployment.cli("accounts", "show", "team"))["available"] == 50


def test_cli_per_key_rate_limit_and_usage(castframe_sqlite: Castframe) -> None:
    deployment = castframe_sqlite
    _, base = deployment.server("--no-worker")
    out = deployment.cli(
        "keys", "create", "--account", "slow", "--credits", "1000", "--rate", "0.5", "--burst", "2"
    )
    key = out.strip().splitlines()[-1]
    body = {
        "prompt": "p",
        "model": "ideogram-character",
        "ideogramParams": {"character_reference_image": "https://example.com/a.png"},
    }
    statuses = [
        httpx.post(f"{base}/v2/images/generate", json=body, headers={"X-API-Key": key}).status_code
        for _ in range(3)
    ]
    assert statuses == [202, 202, 429]
    usage = deployment.cli("accounts", "usage", "slow")
    assert usage.splitlines()[0].split() == ["day", "jobs", "images", "credits"]


def test_sigterm_answers_an_in_flight_prefer_wait_with_its_job(
    castframe_sqlite: Castframe,
) -> None:
    """A `Prefer: wait` submission in flight when the server gets SIGTERM is answered 202
    with its job at once, not cut by a connection reset when the graceful-shutdown timeout
    (15 s) runs out."""
    server, base = castframe_sqlite.server("--no-worker")  # the job stays queued
    key = castframe_sqlite.key()
    body = {
        "prompt": "a portrait",
        "model": "ideogram-character",
        "ideogramParams": {"character_reference_image": "https://example.com/a.png"},
    }
    headers = {"X-API-Key": key, "Prefer": "wait=60"}
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(
            httpx.post, f"{base}/v2/images/generate", json=body, headers=headers, timeout=90
        )

        def listed() -> bool:
            jobs = httpx.get(f"{base}/v2/jobs", headers={"X-API-Key": key}, timeout=5).json()
            return bool(jobs["jobs"])

        wait_until(listed, timeout=30)
        time.sleep(0.5)  # the submission now waits on its job's live status
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        response = waiting.result(timeout=60)
    assert response.status_code == 202, response.text
    answered = response.json()
    assert answered.get("jobId") or answered.get("id")
    assert answered["status"] == "QUEUED"
    server.proc.wait(30)
