"""Faults from hostile receivers (issue 24, part A): one tenant must not hurt another.

Real loopback servers play the attackers: a header trickler (``200 OK`` and then one header
byte at a time, each well within any read timeout), a hanging receiver, a slow body. Each
test fails without its fix: the trickles last far longer than the tests wait, and the
assertions look at what the receiver saw (a hang-up) or what the server recorded.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import uvicorn

from castframe.app import create_app
from castframe.jobs import accounts
from castframe.jobs import store as job_store
from castframe.media.fetch import FetchError, FetchPolicy, check_url_syntax, fetch
from castframe.services import Services
from castframe.store.tables import jobs, webhook_deliveries
from tests.conftest import Api, body_for, make_settings, open_api
from tests.support.http import LoopbackServer, Reply
from tests.support.polling import eventually, wait_until

LONG = 120.0
"""How long a hostile answer trickles if nobody cuts it: far past every wait below."""


@pytest.fixture
def hostile() -> Iterator[LoopbackServer]:
    """A loopback server for hostile routes; closing it ends their trickles."""
    server = LoopbackServer()
    yield server
    server.close()


def deliveries(api: Api, key: str, job_id: str) -> list[dict[str, Any]]:
    response = api.client.get(f"/v2/jobs/{job_id}/webhooks", headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["deliveries"]
    return found


# 1. One deadline for the whole exchange ---------------------------------------------------


def test_a_header_trickler_is_cut_at_the_deadline(hostile: LoopbackServer) -> None:
    """Each header byte arrives within the read timeout; the one deadline still ends it, and
    the connection is closed (the trickler sees the hang-up)."""
    hostile.routes["/img"] = lambda _r: Reply(trickle_headers=0.2, trickle_for=LONG)
    policy = FetchPolicy(allow_private=True, read_timeout=5.0, total_timeout=1.0)
    with pytest.raises(FetchError) as info:
        fetch(hostile.url("/img"), policy)
    assert info.value.code == "fetch_failed"
    assert "no full answer within 1 seconds" in info.value.message
    eventually(lambda: len(hostile.hangups) == 1, "the trickler to see the hang-up")


def test_a_slow_body_is_cut_at_the_deadline(hostile: LoopbackServer) -> None:
    hostile.routes["/img"] = lambda _r: Reply(trickle_body=0.2, trickle_for=LONG)
    policy = FetchPolicy(allow_private=True, read_timeout=5.0, total_timeout=1.0)
    with pytest.raises(FetchError) as info:
        fetch(hostile.url("/img"), policy)
    assert info.value.code == "fetch_failed"
    eventually(lambda: len(hostile.hangups) == 1, "the trickler to see the hang-up")


def test_the_deadline_spans_redirects(hostile: LoopbackServer) -> None:
    """Three hops that each answer within the read timeout add up past the deadline."""
    hostile.routes["/a"] = lambda _r: Reply(302, headers={"Location": "/b"}, delay=0.6)
    hostile.routes["/b"] = lambda _r: Reply(302, headers={"Location": "/c"}, delay=0.6)
    hostile.routes["/c"] = lambda _r: Reply(200, b"late", delay=0.6)
    policy = FetchPolicy(allow_private=True, read_timeout=5.0, total_timeout=1.0)
    with pytest.raises(FetchError) as info:
        fetch(hostile.url("/a"), policy)
    assert "timed out" in info.value.message


def test_trickled_references_fail_their_jobs_and_free_the_lanes(
    tmp_path: Path, database_url: str, hostile: LoopbackServer, ref: str
) -> None:
    """Two jobs of one account whose references trickle their headers would hold both
    worker lanes for as long as the trickle lasts: they fail at the fetch deadline, and
    another account's job, queued behind them, completes."""
    hostile.routes["/slow.png"] = lambda _r: Reply(trickle_headers=0.2, trickle_for=LONG)
    with open_api(tmp_path, database_url, fetch_deadline=1.5, worker_concurrency=2) as api:
        attacker, other = api.key("attacker"), api.key("other")
        hostile_ids = [
            api.generate(attacker, body_for(hostile.url("/slow.png"))).json()["jobId"]
            for _ in range(2)
        ]
        other_id = api.generate(other, body_for(ref)).json()["jobId"]
        assert api.wait(other, other_id, timeout=40)["status"] == "COMPLETED"
        for job_id in hostile_ids:
            job = api.wait(attacker, job_id, timeout=40)
            assert (job["status"], job["errorCode"]) == ("FAILED", "reference_fetch_failed")
            assert "no full answer within 1.5 seconds" in job["error"]
    eventually(lambda: len(hostile.hangups) == 2, "both tricklers to be hung up on")


def test_an_account_holding_a_lane_does_not_get_the_second_before_another_account(
    tmp_path: Path, database_url: str, hostile: LoopbackServer, ref: str
) -> None:
    """The worker's fair share per account: the attacker's four trickling jobs are all keyed
    before the other account's, yet once one of them holds a lane the other account's job
    takes the second, and completes while the attacker's are still cut at the deadline.
    Without the share the second lane took the attacker's next job, and the claim after
    that two more: the other job waited two fetch deadlines."""
    hostile.routes["/slow.png"] = lambda _r: Reply(trickle_headers=0.2, trickle_for=LONG)
    settings = {"fetch_deadline": 6.0, "worker_concurrency": 2}
    with open_api(tmp_path, database_url, run_worker=False, **settings) as api:
        attacker, other = api.key("attacker"), api.key("other")
        hostile_ids = [
            api.generate(attacker, body_for(hostile.url("/slow.png"))).json()["jobId"]
            for _ in range(4)
        ]
        other_id = api.generate(other, body_for(ref)).json()["jobId"]
        with api.services.db.write() as conn:  # it arrived after the attacker's whole run
            conn.execute(
                jobs.update().where(jobs.c.id == other_id).values(queue_key=time.time() + 60)
            )
        api.services.start_worker(concurrency=2)
        assert api.wait(other, other_id, timeout=40)["status"] == "COMPLETED"
        statuses = [api.get_job(attacker, job_id)["status"] for job_id in hostile_ids]
        assert "FAILED" not in statuses, statuses  # none has reached its deadline yet
        for job_id in hostile_ids:
            job = api.wait(attacker, job_id, timeout=60)
            assert (job["status"], job["errorCode"]) == ("FAILED", "reference_fetch_failed")


def test_healthz_answers_while_character_fetches_trickle(
    api_sqlite: Api, hostile: LoopbackServer
) -> None:
    """45 saved characters whose images trickle their headers held the API's whole request
    thread pool: /healthz and every route waited minutes. Saves now run in slots of their
    own (4 by default, as many waiting, then 503 characters_busy), so /healthz and another
    account's reads answer while the attack is still running."""
    api = api_sqlite
    hostile.routes["/face.png"] = lambda _r: Reply(trickle_headers=0.5, trickle_for=LONG)
    attacker, other = api.key("attacker"), api.key("other")
    body = {"name": "x", "image": hostile.url("/face.png")}

    def create() -> Any:
        return api.client.post("/v2/characters", json=body, headers={"X-API-Key": attacker})

    with ThreadPoolExecutor(45) as pool:
        attack = [pool.submit(create) for _ in range(45)]
        eventually(lambda: len(hostile.received("/face.png")) >= 4, "the fetches to start")
        with ThreadPoolExecutor(2) as probes:  # a probe that hangs fails here, not the suite
            health: Future[Any] = probes.submit(api.client.get, "/healthz")
            listing: Future[Any] = probes.submit(
                api.client.get, "/v2/characters", headers={"X-API-Key": other}
            )
            assert health.result(timeout=30).status_code == 200
            assert listing.result(timeout=30).status_code == 200
        assert not all(future.done() for future in attack)  # the attack was still running
        busy = [f.result(timeout=30) for f in attack if f.done()]
        assert busy and all(r.json()["code"] == "characters_busy" for r in busy)
        assert all(r.headers["retry-after"] == "5" for r in busy)
        assert len(hostile.received("/face.png")) <= 8
        hostile.stopping.set()  # end the trickles: the saves waiting on them fail now
        answers = [future.result(timeout=60) for future in attack]
    assert {r.status_code for r in answers} <= {400, 503}


# 2, 11. Webhooks: one attempt in flight, a 2xx status line is a delivery ------------------


def test_a_webhook_receiver_trickling_headers_is_cut_and_recorded(
    api_sqlite: Api, hostile: LoopbackServer, ref: str
) -> None:
    api = api_sqlite
    api.services.settings.webhook_timeout = 1.0
    api.services.settings.webhook_retry_schedule = "3600"
    hostile.routes["/hook"] = lambda _r: Reply(trickle_headers=0.2, trickle_for=LONG)
    key = api.key()
    job_id = api.generate(key, body_for(ref, top={"webhookUrl": hostile.url("/hook")})).json()[
        "jobId"
    ]
    attempts = wait_until(lambda: (d := deliveries(api, key, job_id)) and d[0]["attempts"], 30)
    assert attempts[0]["statusCode"] is None
    assert "no full answer within 1 seconds" in attempts[0]["error"]
    eventually(lambda: len(hostile.hangups) == 1, "the trickler to see the hang-up")


def test_one_attempt_in_flight_per_delivery_and_every_attempt_recorded(
    tmp_path: Path, database_url: str, hostile: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim's lease shorter than the attempt (0.3 s here; 120 s against a receiver that
    hung for 14 minutes in the attack) no longer lets another claim send the same event
    again: the lease is renewed past the attempt's hard deadline before it connects."""
    monkeypatch.setattr(job_store, "DELIVERY_LEASE", 0.3)
    hostile.routes["/hook"] = lambda _r: Reply(trickle_headers=0.2, trickle_for=LONG)
    with open_api(
        tmp_path,
        database_url,
        run_worker=False,
        webhook_timeout=2.0,
        webhook_retry_schedule="3600",
    ) as api:
        key = api.key()
        body = body_for("https://example.com/a.png", top={"webhookUrl": hostile.url("/hook")})
        job_id = api.generate(key, body).json()["jobId"]
        with api.services.db.write() as conn:
            job = job_store.find_job(conn, job_id)
            assert job is not None
            job_store.enqueue_delivery(conn, job, "completed", force=True)
        attempts = wait_until(lambda: (d := deliveries(api, key, job_id)) and d[0]["attempts"], 30)
        assert len(attempts) == 1
        assert len(hostile.received("/hook")) == 1
        assert deliveries(api, key, job_id)[0]["status"] == "failing"


def test_a_2xx_status_line_is_a_delivery_whatever_the_body_does(
    api: Api, hostile: LoopbackServer, ref: str
) -> None:
    api.services.settings.webhook_timeout = 1.0
    hostile.routes["/hook"] = lambda _r: Reply(200, trickle_body=0.2, trickle_for=LONG)
    key = api.key()
    job_id = api.generate(key, body_for(ref, top={"webhookUrl": hostile.url("/hook")})).json()[
        "jobId"
    ]
    wait_until(lambda: api.get_job(key, job_id)["webhookStatus"] == "delivered", 30)
    [delivery] = deliveries(api, key, job_id)
    assert [(a["statusCode"], a["error"]) for a in delivery["attempts"]] == [(200, None)]
    assert len(hostile.received("/hook")) == 1


def test_url_not_allowed_at_delivery_is_final(api_no_worker: Api, hostile: LoopbackServer) -> None:
    """The webhook's host is refused when it is sent (here: private addresses became
    forbidden after submission; a name that resolves to one is the same): given up at once,
    not retried on the schedule."""
    api = api_no_worker
    hostile.routes["/hook"] = lambda _r: Reply(200, b"ok")
    key = api.key()
    body = body_for("https://example.com/a.png", top={"webhookUrl": hostile.url("/hook")})
    job_id = api.generate(key, body).json()["jobId"]
    api.services.settings.allow_private_urls = False
    with api.services.db.write() as conn:
        job = job_store.find_job(conn, job_id)
        assert job is not None
        job_store.enqueue_delivery(conn, job, "completed", force=True)
    wait_until(lambda: deliveries(api, key, job_id)[0]["status"] == "failed", 30)
    time.sleep(1.0)  # the retry schedule is 0.3 s: a retry would show by now
    [delivery] = deliveries(api, key, job_id)
    assert len(delivery["attempts"]) == 1
    assert "127.0.0.1" in delivery["attempts"][0]["error"]
    assert hostile.received("/hook") == []


# 13. Unicode spellings of loopback --------------------------------------------------------

LOOPBACK_SPELLINGS = [
    "http://\u24db\u24de\u24d2\u24d0\u24db\u24d7\u24de\u24e2\u24e3/hook",  # circled letters
    "http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/hook",  # fullwidth digits
    "http://127\u30020\u30020\u30021/hook",  # ideographic full stops
    "http://127\uff0e0\uff0e0\uff0e1/hook",  # fullwidth full stops
    "http://localhost./hook",
    "http://LOCALHOST/hook",
    "http://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54/hook",  # fullwidth letters
    "http://api.localhost./hook",
    "http://127.0.0.1./hook",
]


@pytest.mark.parametrize("url", LOOPBACK_SPELLINGS)
def test_unicode_spellings_of_loopback_are_refused(url: str) -> None:
    with pytest.raises(FetchError) as info:
        check_url_syntax(url, allow_private=False)
    assert info.value.code == "url_not_allowed"
    check_url_syntax(url, allow_private=True)  # the operator's setting still lifts it


def test_unicode_loopback_webhooks_and_references_are_refused_at_submission(
    tmp_path: Path, sqlite_url: str
) -> None:
    with open_api(tmp_path, sqlite_url, allow_private_urls=False, run_worker=False) as api:
        key = api.key()
        for url in LOOPBACK_SPELLINGS:
            response = api.generate(
                key, body_for("https://example.com/a.png", top={"webhookUrl": url})
            )
            assert response.status_code == 400, (url, response.text)
            assert response.json()["code"] == "url_not_allowed"
            assert "webhookUrl" in response.json()["details"]
            response = api.generate(key, body_for(url.replace("/hook", "/a.png")))
            assert response.status_code == 400, (url, response.text)
            assert response.json()["code"] == "url_not_allowed"


# 10. Fair shares of the outbox, and a bucket on redeliveries ------------------------------


def test_one_accounts_redelivery_backlog_does_not_delay_anothers_webhook(
    tmp_path: Path, database_url: str, hostile: LoopbackServer, ref: str
) -> None:
    """Account A queues 12 redeliveries to a receiver that takes 1.5 s each; account B's
    webhook, queued after all of them, is delivered while A's backlog is still pending
    (first come, first served made it wait for every one of A's)."""
    hostile.routes["/slow"] = lambda _r: Reply(200, b"ok", delay=1.5)
    hostile.routes["/fast"] = lambda _r: Reply(200, b"ok")
    with open_api(
        tmp_path,
        database_url,
        webhook_concurrency=4,
        webhook_account_concurrency=2,
        redeliver_per_minute=6000,
    ) as api:
        a, b = api.key("a"), api.key("b")
        a_job = api.submit_and_wait(a, body_for(ref, top={"webhookUrl": hostile.url("/slow")}))
        for _ in range(12):
            response = api.client.post(
                f"/v2/jobs/{a_job['id']}/webhooks/redeliver", headers={"X-API-Key": a}
            )
            assert response.status_code == 202, response.text
        b_id = api.generate(b, body_for(ref, top={"webhookUrl": hostile.url("/fast")})).json()[
            "jobId"
        ]
        wait_until(lambda: api.get_job(b, b_id)["webhookStatus"] == "delivered", 60)
        pending = [d for d in deliveries(api, a, a_job["id"]) if d["status"] != "delivered"]
        assert len(pending) >= 6
        # Wait for A's backlog, so the app's shutdown has no attempt in flight.
        wait_until(
            lambda: all(d["status"] == "delivered" for d in deliveries(api, a, a_job["id"])), 60
        )
        with api.services.db.read() as conn:
            leased = conn.execute(
                sa.select(sa.func.count()).where(webhook_deliveries.c.lease_expires_at.is_not(None))
            ).scalar_one()
        assert leased == 0


def test_claims_skip_accounts_at_their_cap(api_no_worker: Api) -> None:
    """The store's claim, directly: with account A at its cap of in-flight deliveries, the
    next claim is B's, though A's are older."""
    api = api_no_worker
    if api.services.sender is not None:  # this test plays the sender itself
        api.services.sender.stop()
    a, b = api.key("a"), api.key("b")
    body = body_for("https://example.com/a.png", top={"webhookUrl": "https://example.com/h"})
    a_id = api.generate(a, body).json()["jobId"]
    b_id = api.generate(b, body).json()["jobId"]
    with api.services.db.write() as conn:
        for job_id, count, at in ((a_id, 3, 1.0), (b_id, 1, 2.0)):
            job = job_store.find_job(conn, job_id)
            assert job is not None
            for _ in range(count):
                job_store.enqueue_delivery(conn, job, "completed", now=at, force=True)
    now = time.time()
    claimed = []
    for _ in range(3):
        with api.services.db.write() as conn:
            delivery = job_store.claim_due_delivery(conn, now, account_cap=2)
        assert delivery is not None
        claimed.append(delivery["job_id"])
    assert claimed == [a_id, a_id, b_id]
    with api.services.db.write() as conn:
        assert job_store.claim_due_delivery(conn, now, account_cap=2) is None
        assert job_store.claim_due_delivery(conn, now, account_cap=3) is not None


def test_redeliveries_take_tokens_of_their_own_bucket(
    tmp_path: Path, sqlite_url: str, hostile: LoopbackServer, ref: str
) -> None:
    hostile.routes["/hook"] = lambda _r: Reply(200, b"ok")
    with open_api(tmp_path, sqlite_url, redeliver_per_minute=2) as api:
        a, b = api.key("a"), api.key("b")
        body = body_for(ref, top={"webhookUrl": hostile.url("/hook")})
        a_job, b_job = api.submit_and_wait(a, body), api.submit_and_wait(b, body)

        def redeliver(key: str, job_id: str) -> Any:
            path = f"/v2/jobs/{job_id}/webhooks/redeliver"
            return api.client.post(path, headers={"X-API-Key": key})

        assert [redeliver(a, a_job["id"]).status_code for _ in range(2)] == [202, 202]
        refused = redeliver(a, a_job["id"])
        assert refused.status_code == 429
        assert refused.json()["code"] == "rate_limited"
        assert int(refused.headers["retry-after"]) >= 1
        assert redeliver(b, b_job["id"]).status_code == 202  # another key's bucket
        assert api.generate(a, body).status_code == 202  # submissions have their own


# 12. Prefer: wait listeners -----------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path, sqlite_url: str) -> Iterator[tuple[Services, int]]:
    """The API (no worker: jobs stay queued) on a real uvicorn server in a thread, so a
    client can hang up for real."""
    settings = make_settings(tmp_path / "data", sqlite_url)
    services = Services.build(settings)
    app = create_app(settings, services=services, run_worker=False)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    eventually(lambda: server.started, "uvicorn to start")
    yield services, port
    server.should_exit = True
    thread.join(20)


def test_prefer_wait_listener_is_freed_when_the_client_hangs_up(
    served: tuple[Services, int],
) -> None:
    services, port = served
    with services.db.write() as conn:
        account, _ = accounts.ensure_account(conn, "acme", 100_000)
        key, _ = accounts.create_key(conn, account["id"], "live")
    body = json.dumps(body_for("https://example.com/a.png")).encode()
    request = (
        b"POST /v2/images/generate HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nPrefer: wait=60\r\n"
        + f"X-API-Key: {key}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(request)
        eventually(lambda: services.watcher.listeners == 1, "the wait to take a listener")
    eventually(lambda: services.watcher.listeners == 0, "the listener to be freed", timeout=20)
