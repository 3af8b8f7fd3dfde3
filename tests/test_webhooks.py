"""Webhooks to a real receiver on loopback: signatures, retries, redelivery, restarts."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook

from castframe.webhooks.signing import WebhookVerificationError, verify
from tests.conftest import Api, body_for, make_api
from tests.support.http import LoopbackServer, Reply
from tests.support.images import astronaut_png
from tests.support.jobs import images_of
from tests.support.polling import wait_until


def secret_of(api: Api, key: str) -> str:
    response = api.client.get("/v2/account/webhook-secret", headers={"X-API-Key": key})
    assert response.status_code == 200
    secret: str = response.json()["secret"]
    assert secret.startswith("whsec_")
    return secret


def test_completed_webhook_is_signed_both_ways_and_apiframe_shaped(
    api: Api, http_server: LoopbackServer, ref: str
) -> None:
    http_server.routes["/hook"] = lambda _r: Reply(200, b"ok")
    key = api.key()
    body = body_for(ref, top={"webhookUrl": http_server.url("/hook")})
    job_id = api.generate(key, body).json()["jobId"]
    [delivery] = http_server.wait_for("/hook", 1)
    payload = delivery.json()
    assert payload["event"] == "completed"
    assert payload["jobId"] == job_id
    assert payload["status"] == "COMPLETED"
    assert payload["progress"] == 100
    assert payload["creditCost"] == 10
    assert payload["model"] == "ideogram-character"
    assert images_of(payload)[0]["url"].startswith("http://testserver/v2/files/")
    assert payload["completedAt"].endswith("Z")
    assert delivery.headers["x-webhook-event"] == "completed"
    # Standard Webhooks, verified by the reference library.
    verified = Webhook(secret_of(api, key)).verify(delivery.body, delivery.headers)
    assert verified["jobId"] == job_id
    verify(delivery.body, delivery.headers, secret_of(api, key))
    assert payload["type"] == "completed"
    assert all(isinstance(url, str) for url in payload["result"]["images"])
    # Apiframe: "sha256=" + hex HMAC-SHA256(body), keyed by the raw SHA-256 digest of the key.
    signing_key = hashlib.sha256(key.encode()).digest()
    expected = hmac.new(signing_key, delivery.body, hashlib.sha256).hexdigest()
    assert delivery.headers["x-webhook-signature"] == f"sha256={expected}"
    job = wait_until(lambda: (j := api.get_job(key, job_id))["webhookStatus"] == "delivered" and j)
    assert job["webhookStatus"] == "delivered"


def test_tampered_or_stale_delivery_fails_verification(
    api_sqlite: Api, http_server: LoopbackServer, ref: str
) -> None:
    http_server.routes["/hook"] = lambda _r: Reply(204)
    key = api_sqlite.key()
    api_sqlite.generate(key, body_for(ref, top={"webhookUrl": http_server.url("/hook")}))
    [delivery] = http_server.wait_for("/hook", 1)
    secret = secret_of(api_sqlite, key)
    with pytest.raises(WebhookVerificationError):
        verify(delivery.body + b" ", delivery.headers, secret)
    with pytest.raises(WebhookVerificationError):
        verify(delivery.body, delivery.headers, secret, now=time.time() + 3600)


def test_failed_job_sends_failed_event(api_sqlite: Api, http_server: LoopbackServer) -> None:
    http_server.routes["/hook"] = lambda _r: Reply(200)
    key = api_sqlite.key()
    body = body_for(http_server.url("/missing.png"), top={"webhookUrl": http_server.url("/hook")})
    job_id = api_sqlite.generate(key, body).json()["jobId"]
    [delivery] = http_server.wait_for("/hook", 1)
    payload = delivery.json()
    assert (payload["event"], payload["status"], payload["jobId"]) == ("failed", "FAILED", job_id)
    assert payload["errorCode"] == "reference_fetch_failed"
    assert isinstance(payload["error"], str) and "404" in payload["error"]
    assert payload["creditCost"] == 0
    assert "result" not in payload


def test_cancelled_job_sends_failed_with_code_cancelled(
    api_no_worker: Api, http_server: LoopbackServer
) -> None:
    http_server.routes["/hook"] = lambda _r: Reply(200)
    key = api_no_worker.key()
    body = body_for("https://example.com/a.png", top={"webhookUrl": http_server.url("/hook")})
    job_id = api_no_worker.generate(key, body).json()["jobId"]
    api_no_worker.client.post(f"/v2/jobs/{job_id}/cancel", headers={"X-API-Key": key})
    [delivery] = http_server.wait_for("/hook", 1)
    payload = delivery.json()
    assert (payload["event"], payload["status"]) == ("failed", "CANCELLED")
    assert payload["errorCode"] == "cancelled"
    assert payload["error"] == "cancelled by the owner"


def test_events_filter_and_progress_events(
    api_sqlite: Api, http_server: LoopbackServer, ref: str
) -> None:
    http_server.routes["/hook"] = lambda _r: Reply(200)
    key = api_sqlite.key()
    body = body_for(
        ref,
        rendering_speed="quality",
        top={
            "webhookUrl": http_server.url("/hook"),
            "num_images": 4,
            "webhookEvents": ["progress", "completed"],
        },
    )
    job_id = api_sqlite.generate(key, body).json()["jobId"]
    api_sqlite.wait(key, job_id)
    time.sleep(1.0)
    events = [r.json() for r in http_server.received("/hook")]
    progress = [e for e in events if e["event"] == "progress"]
    assert progress, events
    assert all(e["status"] == "PROCESSING" and 0 <= e["progress"] < 100 for e in progress)
    assert [e["event"] for e in events].count("completed") == 1
    times = sorted(r.at for r in http_server.received("/hook") if r.json()["event"] == "progress")
    assert all(b - a >= 0.4 for a, b in itertools.pairwise(times))
    only_failed = body_for(
        ref, top={"webhookUrl": http_server.url("/hook2"), "webhookEvents": ["failed"]}
    )
    api_sqlite.submit_and_wait(key, only_failed)
    time.sleep(0.5)
    assert http_server.received("/hook2") == []


def test_retries_after_errors_and_timeouts_then_succeeds(
    api: Api, http_server: LoopbackServer, ref: str
) -> None:
    api.services.settings.webhook_timeout = 0.5
    calls: list[int] = []

    def flaky(_request: object) -> Reply:
        calls.append(1)
        if len(calls) == 1:
            return Reply(500, b"boom")
        if len(calls) == 2:
            return Reply(200, b"late", delay=1.5)  # longer than the timeout
        return Reply(200, b"ok")

    http_server.routes["/hook"] = flaky
    key = api.key()
    job_id = api.generate(key, body_for(ref, top={"webhookUrl": http_server.url("/hook")})).json()[
        "jobId"
    ]
    deliveries = http_server.wait_for("/hook", 3, timeout=30)
    ids = {d.headers["webhook-id"] for d in deliveries}
    assert len(ids) == 1  # one event, one id across retries
    log = wait_until(
        lambda: (
            (r := api.client.get(f"/v2/jobs/{job_id}/webhooks", headers={"X-API-Key": key}).json())[
                "deliveries"
            ][0]["status"]
            == "delivered"
            and r
        ),
        20,
    )
    attempts = log["deliveries"][0]["attempts"]
    assert [a["statusCode"] for a in attempts] == [500, None, 200]
    assert "timed out" in attempts[1]["error"]
    assert all(a["latencyMs"] >= 0 for a in attempts)
    assert api.get_job(key, job_id)["webhookStatus"] == "delivered"


def test_gives_up_after_schedule_and_410_stops_at_once(
    api_sqlite: Api, http_server: LoopbackServer, ref: str
) -> None:
    http_server.routes["/down"] = lambda _r: Reply(503)
    http_server.routes["/gone"] = lambda _r: Reply(410)
    key = api_sqlite.key()
    down = api_sqlite.generate(key, body_for(ref, top={"webhookUrl": http_server.url("/down")}))
    gone = api_sqlite.generate(key, body_for(ref, top={"webhookUrl": http_server.url("/gone")}))
    down_id, gone_id = down.json()["jobId"], gone.json()["jobId"]
    wait_until(lambda: api_sqlite.get_job(key, down_id)["webhookStatus"] == "failed", 30)
    assert len(http_server.received("/down")) == 4  # first try + 3 retries in the schedule
    wait_until(lambda: api_sqlite.get_job(key, gone_id)["webhookStatus"] == "failed", 10)
    time.sleep(1.0)
    assert len(http_server.received("/gone")) == 1


def delivery_status(api: Api, key: str, job_id: str) -> str | None:
    """The state of the job's first delivery in its delivery log (a Castframe extension)."""
    deliveries = api.client.get(f"/v2/jobs/{job_id}/webhooks", headers={"X-API-Key": key}).json()
    return deliveries["deliveries"][0]["status"] if deliveries["deliveries"] else None


def test_pending_status_while_retrying_and_retry_after_is_honoured(
    api_sqlite: Api, http_server: LoopbackServer, ref: str
) -> None:
    http_server.routes["/busy"] = lambda _r: Reply(429, headers={"Retry-After": "2"})
    key = api_sqlite.key()
    job_id = api_sqlite.generate(
        key, body_for(ref, top={"webhookUrl": http_server.url("/busy")})
    ).json()["jobId"]
    wait_until(lambda: delivery_status(api_sqlite, key, job_id) == "failing", 20)
    # Apiframe's webhookStatus has no "retrying": a delivery being retried is pending.
    assert api_sqlite.get_job(key, job_id)["webhookStatus"] == "pending"
    first = http_server.received("/busy")[0].at
    [_, second] = http_server.wait_for("/busy", 2, timeout=10)[:2]
    assert second.at - first >= 1.9


def test_redeliver_sends_again(api_sqlite: Api, http_server: LoopbackServer, ref: str) -> None:
    http_server.routes["/hook"] = lambda _r: Reply(200)
    key = api_sqlite.key()
    job_id = api_sqlite.generate(
        key, body_for(ref, top={"webhookUrl": http_server.url("/hook")})
    ).json()["jobId"]
    http_server.wait_for("/hook", 1)
    response = api_sqlite.client.post(
        f"/v2/jobs/{job_id}/webhooks/redeliver", headers={"X-API-Key": key}
    )
    assert response.status_code == 202
    assert response.json()["event"] == "completed"
    second = http_server.wait_for("/hook", 2)[1]
    assert second.json()["jobId"] == job_id
    no_hook = api_sqlite.submit_and_wait(key, body_for(ref))
    refused = api_sqlite.client.post(
        f"/v2/jobs/{no_hook['id']}/webhooks/redeliver", headers={"X-API-Key": key}
    )
    assert (refused.status_code, refused.json()["code"]) == (409, "webhook_not_configured")


def test_rotation_signs_with_both_secrets(
    api_sqlite: Api, http_server: LoopbackServer, ref: str
) -> None:
    http_server.routes["/hook"] = lambda _r: Reply(200)
    key = api_sqlite.key()
    old = secret_of(api_sqlite, key)
    rotated = api_sqlite.client.post(
        "/v2/account/webhook-secret/rotate", headers={"X-API-Key": key}
    ).json()
    new = rotated["secret"]
    assert new != old and rotated["previousSecretExpiresAt"]
    api_sqlite.generate(key, body_for(ref, top={"webhookUrl": http_server.url("/hook")}))
    [delivery] = http_server.wait_for("/hook", 1)
    assert len(delivery.headers["webhook-signature"].split()) == 2
    Webhook(new).verify(delivery.body, delivery.headers)
    Webhook(old).verify(delivery.body, delivery.headers)


def test_slow_receiver_does_not_delay_others(
    api_sqlite: Api, http_server: LoopbackServer, ref: str
) -> None:
    api_sqlite.services.settings.webhook_timeout = 5
    http_server.routes["/slow"] = lambda _r: Reply(200, delay=3)
    http_server.routes["/fast"] = lambda _r: Reply(200)
    key = api_sqlite.key()
    api_sqlite.generate(key, body_for(ref, top={"webhookUrl": http_server.url("/slow")}))
    fast_id = api_sqlite.generate(
        key, body_for(ref, top={"webhookUrl": http_server.url("/fast")})
    ).json()["jobId"]
    api_sqlite.wait(key, fast_id)
    started = time.time()
    http_server.wait_for("/fast", 1, timeout=10)
    assert time.time() - started < 2.0


def test_private_webhook_url_is_refused_without_the_dev_setting(api_no_worker: Api) -> None:
    api_no_worker.services.settings.allow_private_urls = False
    key = api_no_worker.key()
    response = api_no_worker.generate(
        key, body_for("https://example.com/a.png", top={"webhookUrl": "http://127.0.0.1:9/h"})
    )
    assert (response.status_code, response.json()["code"]) == (400, "url_not_allowed")
    assert "webhookUrl" in response.json()["details"]
    # The refusal names the setting that lifts it, for someone testing webhooks locally.
    (message,) = response.json()["details"]["webhookUrl"]
    assert "CASTFRAME_ALLOW_PRIVATE_URLS=1" in message
    assert "CASTFRAME_TRUSTED_HOSTS" in message
    localhost = api_no_worker.generate(
        key, body_for("https://example.com/a.png", top={"webhookUrl": "http://localhost:9/h"})
    )
    assert "CASTFRAME_ALLOW_PRIVATE_URLS=1" in localhost.json()["details"]["webhookUrl"][0]


def test_pending_deliveries_survive_a_restart(
    tmp_path: Path, sqlite_url: str, http_server: LoopbackServer
) -> None:
    """Outbox rows written while the receiver is down are delivered by the next process."""
    state = {"up": False}
    http_server.routes["/hook"] = lambda _r: Reply(200 if state["up"] else 503)
    ref = http_server.serve_bytes("/a.png", astronaut_png())
    first = make_api(tmp_path, sqlite_url, webhook_retry_schedule="60,60,60")
    api = next(first)
    key = api.key()
    job_id = api.generate(key, body_for(ref, top={"webhookUrl": http_server.url("/hook")})).json()[
        "jobId"
    ]
    wait_until(lambda: delivery_status(api, key, job_id) == "failing", 20)
    first.close()  # the process stops with the retry 60 s away
    from castframe.store.db import Database
    from castframe.store.tables import webhook_deliveries

    db = Database(sqlite_url)
    with db.write() as conn:  # fast-forward the clock of the pending retry
        conn.execute(webhook_deliveries.update().values(next_attempt_at=0))
    db.dispose()
    state["up"] = True
    second = make_api(tmp_path, sqlite_url)
    api = next(second)
    wait_until(lambda: api.get_job(key, job_id)["webhookStatus"] == "delivered", 20)
    assert json.loads(http_server.received("/hook")[-1].body)["jobId"] == job_id
    second.close()
