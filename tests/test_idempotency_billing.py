"""Idempotency-Key semantics, billing through the API, rate limits and the active-job cap."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from castframe.errors import ApiError
from castframe.jobs import accounts
from castframe.jobs.accounts import Principal
from castframe.jobs.record import Job
from castframe.jobs.submission import insert_many
from castframe.jobs.validation import Submission, prepare
from castframe.store.tables import idempotency_keys, jobs
from tests.conftest import Api, body_for, open_api
from tests.support.http import LoopbackServer
from tests.support.images import astronaut_png

REF = "https://example.com/a.png"


def count_jobs(api: Api) -> int:
    with api.services.db.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(jobs)).scalar() or 0)


def test_same_key_same_body_replays_the_first_response(api_no_worker: Api) -> None:
    key = api_no_worker.key(credits=100)
    first = api_no_worker.generate(key, body_for(REF), **{"Idempotency-Key": "abc-1"})
    assert first.status_code == 202
    assert "idempotent-replayed" not in first.headers
    # Same JSON with other key order and spacing is the same request.
    raw = (
        '{"model": "ideogram-character", "ideogramParams": {"rendering_speed": "turbo",'
        ' "character_reference_image": "https://example.com/a.png"},'
        ' "prompt": "a woman in a city street at night"}'
    )
    second = api_no_worker.client.post(
        "/v2/images/generate",
        content=raw,
        headers={"X-API-Key": key, "Content-Type": "application/json", "Idempotency-Key": "abc-1"},
    )
    assert second.status_code == 202
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json() == first.json()
    assert count_jobs(api_no_worker) == 1
    account = api_no_worker.client.get("/v2/account", headers={"X-API-Key": key}).json()
    assert account["held"] == 10


def test_same_key_different_body_is_409(api_no_worker: Api) -> None:
    key = api_no_worker.key()
    api_no_worker.generate(key, body_for(REF), **{"Idempotency-Key": "k"})
    other = api_no_worker.generate(
        key, body_for(REF, prompt="different"), **{"Idempotency-Key": "k"}
    )
    assert (other.status_code, other.json()["code"]) == (409, "idempotency_key_reused")
    assert "Idempotency-Key" in other.json()["error"]


def test_keys_are_scoped_to_the_account(api_no_worker: Api) -> None:
    alice, bob = api_no_worker.key("alice"), api_no_worker.key("bob")
    a = api_no_worker.generate(alice, body_for(REF), **{"Idempotency-Key": "shared"})
    b = api_no_worker.generate(bob, body_for(REF), **{"Idempotency-Key": "shared"})
    assert a.status_code == b.status_code == 202
    assert a.json()["jobId"] != b.json()["jobId"]


def test_key_in_progress_is_409(api_no_worker: Api) -> None:
    key = api_no_worker.key()
    account_id = api_no_worker.client.get("/v2/account", headers={"X-API-Key": key}).json()["id"]
    from castframe.jobs import idempotency

    fingerprint = idempotency.fingerprint("POST", "/v2/images/generate", body_for(REF))
    claim = idempotency.begin(
        api_no_worker.services.db, account_id, "live", "busy", fingerprint, 3600
    )
    assert isinstance(claim, idempotency.Claim)
    response = api_no_worker.generate(key, body_for(REF), **{"Idempotency-Key": "busy"})
    assert (response.status_code, response.json()["code"]) == (409, "idempotency_key_in_use")
    assert response.headers["retry-after"] == "1"


def test_failed_submission_forgets_the_key(api_no_worker: Api) -> None:
    key = api_no_worker.key(credits=5)
    refused = api_no_worker.generate(key, body_for(REF), **{"Idempotency-Key": "retry-me"})
    assert refused.status_code == 402
    with api_no_worker.services.db.write() as conn:
        from castframe.jobs import accounts, ledger

        account = accounts.get_account_by_name(conn, "acme")
        assert account is not None
        ledger.add_entry(conn, account["id"], "topup", 100)
    accepted = api_no_worker.generate(key, body_for(REF), **{"Idempotency-Key": "retry-me"})
    assert accepted.status_code == 202


@pytest.mark.parametrize("bad", ["", "x" * 256, "caf\u00e9", "tab\there"])
def test_malformed_keys_are_400(api_no_worker: Api, bad: str) -> None:
    key = api_no_worker.key()
    response = api_no_worker.client.post(
        "/v2/images/generate",
        json=body_for(REF),  # type: ignore[arg-type]
        headers=[("X-API-Key", key), ("Idempotency-Key", bad.encode("utf-8"))],
    )
    assert (response.status_code, response.json()["code"]) == (400, "invalid_idempotency_key")


def test_quoted_sf_string_key_is_the_same_key(api_no_worker: Api) -> None:
    key = api_no_worker.key()
    a = api_no_worker.generate(key, body_for(REF), **{"Idempotency-Key": '"q-1"'})
    b = api_no_worker.generate(key, body_for(REF), **{"Idempotency-Key": "q-1"})
    assert b.headers.get("idempotent-replayed") == "true"
    assert a.json() == b.json()


def test_expired_keys_can_be_reused(api_no_worker: Api) -> None:
    key = api_no_worker.key()
    first = api_no_worker.generate(key, body_for(REF), **{"Idempotency-Key": "old"})
    with api_no_worker.services.db.write() as conn:
        conn.execute(idempotency_keys.update().values(created_at=time.time() - 25 * 3600))
    second = api_no_worker.generate(key, body_for(REF, prompt="new"), **{"Idempotency-Key": "old"})
    assert second.status_code == 202
    assert second.json()["jobId"] != first.json()["jobId"]


def test_insufficient_credits_is_402_with_numbers(api_no_worker: Api) -> None:
    key = api_no_worker.key(credits=25)
    assert api_no_worker.generate(key, body_for(REF)).status_code == 202  # 10 held
    response = api_no_worker.generate(key, body_for(REF, rendering_speed="quality"))
    assert response.status_code == 402
    payload = response.json()
    assert (payload["error"], payload["code"]) == ("Insufficient credits", "insufficient_credits")
    assert (payload["creditsRequired"], payload["creditsAvailable"]) == (20, 15)
    assert (payload["balance"], payload["held"]) == (25, 10)
    assert count_jobs(api_no_worker) == 1


def test_completed_job_is_captured_once_and_shows_in_usage_and_ledger(
    api: Api, http_server: LoopbackServer
) -> None:
    ref = http_server.serve_bytes("/a.png", astronaut_png())
    key = api.key(credits=100)
    job = api.submit_and_wait(key, body_for(ref, top={"num_images": 2}))
    assert job["status"] == "COMPLETED" and job["creditCost"] == 20
    headers = {"X-API-Key": key}
    account = api.client.get("/v2/account", headers=headers).json()
    assert (account["balance"], account["held"], account["available"]) == (80, 0, 80)
    me = api.client.get("/v2/me", headers=headers).json()
    assert me["team"]["credits"] == 80 and me["apiKey"]["name"] == "default"
    entries = api.client.get("/v2/account/ledger", headers=headers).json()["entries"]
    assert [(e["kind"], e["amount"]) for e in entries] == [
        ("capture", 20),
        ("hold", 20),
        ("topup", 100),
    ]
    usage = api.client.get("/v2/account/usage", params={"group_by": "model"}, headers=headers)
    assert usage.json()["usage"] == [
        {"model": "ideogram-character", "jobs": 1, "images": 2, "credits": 20}
    ]
    by_day = api.client.get("/v2/account/usage", headers=headers).json()
    assert by_day["total"] == {"jobs": 1, "images": 2, "credits": 20}
    future = api.client.get("/v2/account/usage", params={"from": "2999-01-01"}, headers=headers)
    assert future.json()["total"]["jobs"] == 0
    bad = api.client.get("/v2/account/usage", params={"from": "yesterday"}, headers=headers)
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_request")


def test_test_keys_are_free_and_use_the_sandbox(
    api_sqlite: Api, http_server: LoopbackServer
) -> None:
    ref = http_server.serve_bytes("/a.png", astronaut_png())
    key = api_sqlite.key(account="fresh", mode="test", credits=0)
    job = api_sqlite.submit_and_wait(key, body_for(ref, rendering_speed="quality"))
    assert job["status"] == "COMPLETED"
    assert job["engine"] == "sandbox" and job["mode"] == "test"
    assert job["creditCost"] == 0
    account = api_sqlite.client.get("/v2/account", headers={"X-API-Key": key}).json()
    assert (account["balance"], account["held"]) == (0, 0)


def test_rate_limit_429_with_headers(api_no_worker: Api) -> None:
    settings = api_no_worker.services.settings
    settings.rate_limit_burst, settings.rate_limit_per_second = 3, 1.0
    from castframe.api.ratelimit import RateLimiter

    api_no_worker.client.app.state.rate_limiter = RateLimiter(1.0, 3)  # type: ignore[attr-defined]
    key = api_no_worker.key()
    statuses = [api_no_worker.generate(key, body_for(REF)) for _ in range(4)]
    assert [r.status_code for r in statuses] == [202, 202, 202, 429]
    limited = statuses[-1]
    assert limited.json()["code"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1
    assert statuses[0].headers["ratelimit-limit"] == "3"
    assert statuses[0].headers["ratelimit-remaining"] == "2"
    assert limited.headers["ratelimit-remaining"] == "0"
    listing = api_no_worker.client.get("/v2/jobs", headers={"X-API-Key": key})
    assert "ratelimit-remaining" in listing.headers
    time.sleep(1.1)
    assert api_no_worker.generate(key, body_for(REF)).status_code == 202


def test_active_job_cap(api_no_worker: Api) -> None:
    api_no_worker.services.settings.max_active_jobs = 2
    key = api_no_worker.key()
    assert api_no_worker.generate(key, body_for(REF)).status_code == 202
    assert api_no_worker.generate(key, body_for(REF)).status_code == 202
    third = api_no_worker.generate(key, body_for(REF))
    assert (third.status_code, third.json()["code"]) == (429, "too_many_active_jobs")
    other = api_no_worker.key("other")
    assert api_no_worker.generate(other, body_for(REF)).status_code == 202


def test_one_batch_admits_and_refuses_each_submission_on_its_own(api_no_worker: Api) -> None:
    """``insert_many`` (the group commit's transaction): a refusal writes nothing of its own
    and does not disturb its neighbours."""
    services = api_no_worker.services
    poor, rich = api_no_worker.key("poor", credits=25), api_no_worker.key("rich")
    with services.db.read() as conn:
        poor_principal = accounts.resolve_key(conn, poor)[1]
        rich_principal = accounts.resolve_key(conn, rich)[1]
    assert poor_principal is not None and rich_principal is not None

    def pending(principal: Principal, reference: str = REF) -> tuple[Principal, Submission]:
        submission = prepare(body_for(reference), principal, services.settings, services.routing)
        return principal, submission

    batch = [
        pending(poor_principal),
        pending(rich_principal),
        pending(poor_principal),
        pending(poor_principal),  # 25 credits pay for two turbo jobs of 10
        pending(rich_principal, "upload://upl_0000000000000000000000ff"),
        pending(rich_principal),
    ]
    with services.db.write() as conn:
        outcomes = insert_many(conn, batch, services.settings)
    codes = [o.code if isinstance(o, ApiError) else "accepted" for o in outcomes]
    assert codes == [
        "accepted",
        "accepted",
        "accepted",
        "insufficient_credits",
        "upload_not_found",
        "accepted",
    ]
    assert count_jobs(api_no_worker) == 4
    for key, held in ((poor, 20), (rich, 20)):
        account = api_no_worker.client.get("/v2/account", headers={"X-API-Key": key}).json()
        assert (account["held"], account["activeJobs"]) == (held, 2)
    # Each accepted job is the caller's own, queued, with its own fair-queue place.
    accepted = [o for o in outcomes if not isinstance(o, ApiError)]
    assert len({job.id for job in accepted}) == 4
    poor_keys = [
        outcome.queue_key
        for outcome, (principal, _submission) in zip(outcomes, batch, strict=True)
        if principal is poor_principal and not isinstance(outcome, ApiError)
    ]
    assert poor_keys[1] - poor_keys[0] == pytest.approx(1.0)
    # The rich account's two were admitted together and still keep their sending order.
    first, second = outcomes[1], outcomes[5]
    assert isinstance(first, Job) and isinstance(second, Job)
    assert first.created_at < second.created_at
    assert second.queue_key - first.queue_key == pytest.approx(1.0)


def test_concurrent_submissions_are_each_answered_and_billed_once(api_no_worker: Api) -> None:
    """Through the API's group commit: 16 overlapping submissions from an account that can pay
    for 5 get exactly 5 acceptances and 11 clean 402s, with every accepted job held once."""
    key = api_no_worker.key("burst", credits=50)
    with ThreadPoolExecutor(16) as pool:
        replies = list(
            pool.map(
                lambda i: api_no_worker.generate(key, body_for(REF, prompt=f"scene {i}")),
                range(16),
            )
        )
    statuses = sorted(reply.status_code for reply in replies)
    assert statuses == [202] * 5 + [402] * 11
    assert {r.json()["code"] for r in replies if r.status_code == 402} == {"insufficient_credits"}
    ids = {r.json()["jobId"] for r in replies if r.status_code == 202}
    assert len(ids) == 5 == count_jobs(api_no_worker)
    account = api_no_worker.client.get("/v2/account", headers={"X-API-Key": key}).json()
    assert (account["held"], account["available"], account["activeJobs"]) == (50, 0, 5)


def test_batching_off_writes_each_submission_on_its_own(tmp_path: Path, database_url: str) -> None:
    with open_api(tmp_path, database_url, run_worker=False, submit_batch_max=1) as api:
        key = api.key("solo", credits=30)
        with ThreadPoolExecutor(6) as pool:
            replies = list(pool.map(lambda i: api.generate(key, body_for(REF)), range(6)))
        assert sorted(r.status_code for r in replies) == [202] * 3 + [402] * 3
        assert api.services.submitter.group.batches == 0
        assert count_jobs(api) == 3


def backdate_key(api: Api, key: str, seconds: float) -> None:
    with api.services.db.write() as conn:
        conn.execute(
            idempotency_keys.update()
            .where(idempotency_keys.c.key == key)
            .values(created_at=time.time() - seconds)
        )


def owner_token(api: Api, key: str) -> str:
    with api.services.db.read() as conn:
        token = conn.execute(
            sa.select(idempotency_keys.c.owner_token).where(idempotency_keys.c.key == key)
        ).scalar()
    assert isinstance(token, str)
    return token


def test_a_slow_first_request_never_yields_two_jobs(
    api_no_worker: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 5: the first request is slow (held up > 60 s, here by an injected wait before
    its transaction). Its key is not taken over while it is alive; when another process
    presumes it dead and takes over, the first can no longer create its job."""
    import threading

    from castframe.jobs import idempotency, submitter

    api = api_no_worker
    key = api.key()
    entered, release = threading.Event(), threading.Event()
    real_store = submitter.store_inline_images
    calls: list[int] = []

    def slow_store(storage: object, submissions: object) -> None:
        calls.append(1)
        if len(calls) == 1:  # only the first request is slow
            entered.set()
            assert release.wait(60)
        real_store(storage, submissions)  # type: ignore[arg-type]

    monkeypatch.setattr(submitter, "store_inline_images", slow_store)
    headers = {"Idempotency-Key": "slow-1"}
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(api.generate, key, body_for(REF), **headers)
        assert entered.wait(30)
        backdate_key(api, "slow-1", 75)  # 75 s later, the first request still runs
        second = api.generate(key, body_for(REF), **headers)
        assert (second.status_code, second.json()["code"]) == (409, "idempotency_key_in_use")
        # Long past any deadline, seen from another API process (where the first request's
        # token is not alive): that process takes the key over and creates the job.
        backdate_key(api, "slow-1", idempotency.STALE_AFTER + 1)
        idempotency.LIVE.discard(owner_token(api, "slow-1"))
        third = api.generate(key, body_for(REF), **headers)
        assert third.status_code == 202, third.text
        release.set()
        late = first.result(60)
    # The first request lost its key meanwhile: it wrote nothing.
    assert (late.status_code, late.json()["code"]) == (409, "idempotency_key_in_use")
    assert count_jobs(api) == 1
    replay = api.generate(key, body_for(REF), **headers)
    assert replay.json()["jobId"] == third.json()["jobId"]
    assert replay.headers["idempotent-replayed"] == "true"


def test_a_live_key_reusing_a_test_keys_idempotency_key_gets_its_own_job(
    api_no_worker: Api,
) -> None:
    """Finding 6: keys are scoped by account and mode."""
    api = api_no_worker
    test_key = api.key("acme", mode="test")
    live_key = api.key("acme", mode="live")
    headers = {"Idempotency-Key": "shared-across-modes"}
    tested = api.generate(test_key, body_for(REF), **headers)
    live = api.generate(live_key, body_for(REF), **headers)
    assert tested.status_code == live.status_code == 202
    assert "idempotent-replayed" not in live.headers
    assert live.json()["jobId"] != tested.json()["jobId"]
    assert api.get_job(live_key, live.json()["jobId"])["mode"] == "live"
    # And the reverse: each mode replays its own job.
    again = api.generate(test_key, body_for(REF), **headers)
    assert again.json()["jobId"] == tested.json()["jobId"]
    assert count_jobs(api) == 2


def test_a_replay_costs_no_token_and_the_rate_limit_comes_before_the_body(
    api_no_worker: Api,
) -> None:
    """Finding 9: a client over its rate is refused before its body is read; its stored
    answer is still replayed."""
    from castframe.api.ratelimit import RateLimiter

    api = api_no_worker
    api.client.app.state.rate_limiter = RateLimiter(0.001, 1)  # type: ignore[attr-defined]
    key = api.key()
    first = api.generate(key, body_for(REF), **{"Idempotency-Key": "once"})
    assert first.status_code == 202
    # Over the rate: a body that is not even JSON is refused with 429, not 400.
    limited = api.client.post(
        "/v2/images/generate",
        content=b"{" * 1000,
        headers={"X-API-Key": key, "Content-Type": "application/json"},
    )
    assert (limited.status_code, limited.json()["code"]) == (429, "rate_limited")
    replay = api.generate(key, body_for(REF), **{"Idempotency-Key": "once"})
    assert replay.status_code == 202 and replay.json() == first.json()


class LaterClock:
    """A stand-in for the ``time`` module whose ``time()`` runs ``ahead`` seconds late."""

    def __init__(self, ahead: float) -> None:
        self.ahead = ahead

    def time(self) -> float:
        return time.time() + self.ahead


def test_a_request_blocked_on_its_locked_account_row_keeps_its_key(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 5 on PostgreSQL, as reported: the first request waits on its account row (held
    by another transaction) for what the record says is 75 s. A retry with the key is told
    the key is in use instead of taking it over; once the lock goes, the first request
    creates the one job and the retry replays it."""
    from castframe.jobs import idempotency
    from tests.conftest import truncate_all
    from tests.support.polling import eventually

    truncate_all(postgres_url)
    with open_api(tmp_path, postgres_url, run_worker=False) as api:
        key = api.key()
        with api.services.db.read() as conn:
            account = accounts.get_account_by_name(conn, "acme")
        assert account is not None
        headers = {"Idempotency-Key": "locked-1"}
        locker = api.services.db.engine.connect()
        transaction = locker.begin()
        locker.execute(
            sa.text("SELECT id FROM accounts WHERE id = :id FOR UPDATE"), {"id": account["id"]}
        )

        def waiting_on_the_lock() -> bool:
            with api.services.db.read() as conn:
                found = conn.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND datname = current_database()"
                    )
                ).scalar()
            return bool(found)

        with ThreadPoolExecutor(2) as pool:
            try:
                first = pool.submit(api.generate, key, body_for(REF), **headers)
                eventually(waiting_on_the_lock, "the first request waits on the account row")
                # 75 s later, by the retry's clock (the first request's record is locked by
                # its own transaction, so it is the clock that moves, not the record).
                monkeypatch.setattr(idempotency, "time", LaterClock(75))
                # (A retry that took the key over would wait on the lock too: never 30 s here.)
                retry = pool.submit(api.generate, key, body_for(REF), **headers).result(30)
                monkeypatch.undo()
            finally:
                transaction.rollback()  # the lock goes before the pool waits for its threads
                locker.close()
            done = first.result(60)
        assert (retry.status_code, retry.json()["code"]) == (409, "idempotency_key_in_use")
        assert done.status_code == 202, done.text
        assert count_jobs(api) == 1
        replay = api.generate(key, body_for(REF), **headers)
        assert replay.json()["jobId"] == done.json()["jobId"]
