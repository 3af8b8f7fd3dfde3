"""The database queue: leases, lost workers, attempt limits, fairness, restarts."""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa

from castframe.dispatch.worker import Finished, NotCompleted, Worker
from castframe.jobs import ledger
from castframe.jobs import store as job_store
from castframe.jobs.record import Job
from castframe.services import Services
from castframe.store import states
from castframe.store.tables import jobs
from tests.conftest import Api, body_for
from tests.support.http import LoopbackServer
from tests.support.images import astronaut_png
from tests.support.polling import wait_until


def _submit(api: Api, key: str, ref: str, n: int = 1) -> list[str]:
    ids = []
    for _ in range(n):
        response = api.generate(key, body_for(ref))
        assert response.status_code == 202, response.text
        ids.append(response.json()["jobId"])
    return ids


def test_job_of_a_dead_worker_is_taken_over_after_lease_expiry(
    api_no_worker: Api, http_server: LoopbackServer
) -> None:
    api = api_no_worker
    ref = http_server.serve_bytes("/a.png", astronaut_png())
    key = api.key(credits=100)
    [job_id] = _submit(api, key, ref)
    with api.services.db.write() as conn:
        claimed = job_store.claim(conn, "dead-worker", lease_seconds=0.5)
    assert claimed is not None and claimed.id == job_id
    with api.services.db.write() as conn:  # still leased: nobody else may take it
        assert job_store.claim(conn, "other", lease_seconds=5) is None
    assert api.get_job(key, job_id)["status"] == "PROCESSING"
    time.sleep(0.6)
    api.services.start_worker()
    job = api.wait(key, job_id)
    assert job["status"] == "COMPLETED"
    assert job["creditCost"] == 10
    with api.services.db.read() as conn:
        row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).mappings().one()
        entries = ledger.job_entries(conn, job_id)
    assert row["attempts"] == 2
    assert entries == {"hold": 10, "capture": 10}
    # The dead worker wakes up and tries to finish: its lease is gone, nothing changes.
    with api.services.db.write() as conn:
        stale = Job.from_row(row)
        assert not job_store.complete(conn, stale, "dead-worker", {"images": []}, 1)
        assert not job_store.fail(conn, stale, "dead-worker", "engine_error", "late")
        assert ledger.job_entries(conn, job_id) == {"hold": 10, "capture": 10}


def test_job_that_keeps_killing_workers_fails_as_worker_lost(api_no_worker: Api) -> None:
    api = api_no_worker
    key = api.key(credits=100)
    [job_id] = _submit(api, key, "https://example.com/a.png")
    for attempt in range(3):
        with api.services.db.write() as conn:
            assert job_store.requeue_expired(conn, max_attempts=3) == (1 if attempt else 0)
            claimed = job_store.claim(conn, f"dead-{attempt}", lease_seconds=0.2)
        assert claimed is not None
        time.sleep(0.25)
    with api.services.db.write() as conn:
        assert job_store.requeue_expired(conn, max_attempts=3) == 0  # out of attempts
        assert job_store.claim(conn, "w", lease_seconds=1) is None
        assert job_store.reap_abandoned(conn, max_attempts=3) == 1
    job = api.get_job(key, job_id)
    assert job["status"] == "FAILED"
    assert job["errorCode"] == "worker_lost"
    account = api.client.get("/v2/account", headers={"X-API-Key": key}).json()
    assert (account["held"], account["available"]) == (0, 100)


def test_claims_are_fair_across_accounts(api_no_worker: Api) -> None:
    api = api_no_worker
    busy, quiet = api.key("busy"), api.key("quiet")
    busy_ids = _submit(api, busy, "https://example.com/a.png", 30)
    [quiet_id] = _submit(api, quiet, "https://example.com/a.png")
    claimed = []
    with api.services.db.write() as conn:
        for worker in range(3):
            job = job_store.claim(conn, f"w{worker}", lease_seconds=30)
            assert job is not None
            claimed.append(job.id)
    # Oldest-first would give busy's first three jobs; fairness serves quiet's single job
    # as soon as busy already has a job running.
    assert claimed[0] == busy_ids[0]
    assert quiet_id in claimed[:2]


def test_heartbeat_keeps_long_jobs_leased(api_no_worker: Api, http_server: LoopbackServer) -> None:
    api = api_no_worker
    api.services.settings.lease_seconds = 0.6
    ref = http_server.serve_bytes("/a.png", astronaut_png())
    key = api.key()
    ids = [
        api.generate(key, body_for(ref, rendering_speed="quality", top={"num_images": 4})).json()[
            "jobId"
        ]
    ]
    api.services.start_worker(concurrency=1)
    job = api.wait(key, ids[0])
    assert job["status"] == "COMPLETED"
    with api.services.db.read() as conn:
        attempts = conn.execute(sa.select(jobs.c.attempts).where(jobs.c.id == ids[0])).scalar()
    assert attempts == 1  # the lease never lapsed although the job outlived it


def test_drain_gives_running_jobs_back(api_no_worker: Api, http_server: LoopbackServer) -> None:
    api = api_no_worker
    ref = http_server.serve_bytes("/a.png", astronaut_png())
    key = api.key()
    [job_id] = [
        api.generate(key, body_for(ref, rendering_speed="quality", top={"num_images": 4})).json()[
            "jobId"
        ]
    ]
    worker = api.services.start_worker(concurrency=1)
    wait_until(lambda: api.get_job(key, job_id)["status"] == "PROCESSING", 10)
    worker.stop(grace=0.0)
    job = api.get_job(key, job_id)
    assert job["status"] in ("QUEUED", "COMPLETED")
    api.services.start_worker(concurrency=1)
    assert api.wait(key, job_id)["status"] == "COMPLETED"


def test_a_cancel_asked_after_the_engine_finished_wins_over_completion(
    api_no_worker: Api,
) -> None:
    api = api_no_worker
    key = api.key(credits=100)
    [job_id] = _submit(api, key, "https://example.com/a.png")
    with api.services.db.write() as conn:
        job = job_store.claim(conn, "w", lease_seconds=30)
    assert job is not None
    api.client.post(f"/v2/jobs/{job_id}/cancel", headers={"X-API-Key": key})
    with api.services.db.write() as conn:
        assert not job_store.complete(conn, job, "w", {"images": []}, 1)
        assert job_store.cancel_requested(conn, job_id)
        assert job_store.fail(conn, job, "w", "cancelled", "cancelled", states.STOP_CANCELLED)
    final = api.get_job(key, job_id)
    assert final["status"] == "CANCELLED"
    assert final["creditCost"] == 0


def test_claim_many_takes_a_fair_batch_once(api_no_worker: Api) -> None:
    api = api_no_worker
    busy, quiet = api.key("busy"), api.key("quiet")
    busy_ids = _submit(api, busy, "https://example.com/a.png", 4)
    [quiet_id] = _submit(api, quiet, "https://example.com/a.png")
    with api.services.db.write() as conn:
        first = job_store.claim_many(conn, "w1", lease_seconds=30, limit=3)
    # Fair-queue order: busy's first job, then quiet's single job before busy's backlog.
    assert [job.id for job in first] == [busy_ids[0], quiet_id, busy_ids[1]]
    assert {(job.status, job.lease_owner, job.attempts) for job in first} == {
        ("PROCESSING", "w1", 1)
    }
    with api.services.db.write() as conn:
        second = job_store.claim_many(conn, "w2", lease_seconds=30, limit=10)
        assert job_store.claim_many(conn, "w3", lease_seconds=30, limit=10) == []
    assert [job.id for job in second] == busy_ids[2:]


def test_a_claim_gives_an_account_holding_nothing_the_first_turn(api_no_worker: Api) -> None:
    """The worker's fair share: busy's jobs are all keyed before quiet's, but busy already
    holds one of the worker's slots, so quiet's job is taken (and run) first."""
    api = api_no_worker
    busy, quiet = api.key("busy"), api.key("quiet")
    busy_ids = _submit(api, busy, "https://example.com/a.png", 4)
    [quiet_id] = _submit(api, quiet, "https://example.com/a.png")
    with api.services.db.write() as conn:
        conn.execute(jobs.update().where(jobs.c.id == quiet_id).values(queue_key=time.time() + 60))
        [first] = job_store.claim_many(conn, "w", lease_seconds=30, limit=1)
        assert first.id == busy_ids[0]  # nothing held: plain key order
        batch = job_store.claim_many(
            conn, "w", lease_seconds=30, limit=3, held={first.account_id: 1}
        )
    assert [job.id for job in batch] == [quiet_id, busy_ids[1], busy_ids[2]]
    assert {(job.status, job.lease_owner) for job in batch} == {("PROCESSING", "w")}


def test_concurrent_batch_claims_never_share_a_job(api_no_worker: Api) -> None:
    """Four claimers at once (SKIP LOCKED on PostgreSQL, the write lock on SQLite)."""
    api = api_no_worker
    key = api.key()
    ids = _submit(api, key, "https://example.com/a.png", 24)
    start = threading.Barrier(4)

    def claimer(name: str) -> list[str]:
        taken: list[str] = []
        start.wait()
        while True:
            with api.services.db.write() as conn:
                batch = job_store.claim_many(conn, name, lease_seconds=30, limit=4)
            if not batch:
                return taken
            taken.extend(job.id for job in batch)

    with ThreadPoolExecutor(4) as pool:
        shares = list(pool.map(claimer, ["a", "b", "c", "d"]))
    claimed = [job_id for share in shares for job_id in share]
    assert sorted(claimed) == sorted(ids)  # every job exactly once


def test_one_completion_batch_completes_charges_and_refuses_each_job_on_its_own(
    api_no_worker: Api,
) -> None:
    """``complete_many`` (the worker's group commit): a job cancelled meanwhile and a job whose
    lease was lost are neither completed nor charged; their neighbours are, once each."""
    api = api_no_worker
    key = api.key(credits=100)
    ids = _submit(api, key, "https://example.com/a.png", 3)
    services = api.services
    worker = unstarted_worker(services)  # only its completion path is used
    with api.services.db.write() as conn:
        claimed = {job.id: job for job in job_store.claim_many(conn, worker.worker_id, 30, 3)}
    fine, canceled, lost = (claimed[job_id] for job_id in ids)
    assert api.client.post(f"/v2/jobs/{canceled.id}/cancel", headers={"X-API-Key": key})
    with api.services.db.write() as conn:  # lost: its lease went to another worker
        conn.execute(sa.update(jobs).where(jobs.c.id == lost.id).values(lease_owner="other"))
    outcomes = worker._complete_batch(
        [Finished(job, {"images": []}, 1) for job in (fine, canceled, lost)]
    )
    assert [o.status if isinstance(o, Job) else o for o in outcomes] == [
        "COMPLETED",
        NotCompleted.CANCELLED,
        NotCompleted.LEASE_LOST,
    ]
    with api.services.db.read() as conn:
        assert ledger.job_entries(conn, fine.id) == {"hold": 10, "capture": 10}
        assert ledger.job_entries(conn, canceled.id) == {"hold": 10}
        assert ledger.job_entries(conn, lost.id) == {"hold": 10}
        statuses = dict(conn.execute(sa.select(jobs.c.id, jobs.c.status)).all())
    assert [statuses[job_id] for job_id in ids] == ["COMPLETED", "PROCESSING", "PROCESSING"]
    account = api.client.get("/v2/account", headers={"X-API-Key": key}).json()
    assert (account["balance"], account["held"], account["activeJobs"]) == (90, 20, 2)


def test_completing_a_job_claims_the_next_for_its_slot(api_no_worker: Api) -> None:
    """Under load a slot's job costs one worker transaction: completing it also claims the
    job that slot runs next, which the slot then finds ready without another claim."""
    api = api_no_worker
    key = api.key(credits=100)
    first_id, second_id = _submit(api, key, "https://example.com/a.png", 2)
    services = api.services
    worker = unstarted_worker(services, concurrency=1)
    first = worker._next_job()
    assert first is not None and first.id == first_id
    [done] = worker._complete_batch([Finished(first, {"images": []}, 1)])
    assert isinstance(done, Job) and done.status == "COMPLETED"
    assert [job.id for job in worker._ready] == [second_id]
    with services.db.read() as conn:
        row = conn.execute(
            sa.select(jobs.c.status, jobs.c.lease_owner).where(jobs.c.id == second_id)
        ).one()
    assert tuple(row) == ("PROCESSING", worker.worker_id)
    second = worker._next_job()
    assert second is not None and second.id == second_id
    assert worker._ready == deque() and set(worker._running) == {first_id, second_id}


def test_a_busy_worker_still_takes_over_a_dead_workers_job(api_no_worker: Api) -> None:
    """Under load a worker claims only while completing; that path must also put expired
    leases back in the queue, or a dead worker's jobs would wait for the load to drop."""
    api = api_no_worker
    key = api.key(credits=100)
    orphan_id, busy_id = _submit(api, key, "https://example.com/a.png", 2)
    with api.services.db.write() as conn:
        orphan = job_store.claim(conn, "dead-worker", lease_seconds=0.2)
    assert orphan is not None and orphan.id == orphan_id
    worker = unstarted_worker(api.services, concurrency=1)
    busy = worker._next_job()
    assert busy is not None and busy.id == busy_id
    time.sleep(0.3)  # the dead worker's lease expires
    worker._last_reap = 0.0  # maintenance is due
    [done] = worker._complete_batch([Finished(busy, {"images": []}, 1)])
    assert isinstance(done, Job) and done.status == "COMPLETED"
    # The same transaction requeued the orphan and claimed it for the freed slot.
    assert [job.id for job in worker._ready] == [orphan_id]
    with api.services.db.read() as conn:
        row = conn.execute(
            sa.select(jobs.c.lease_owner, jobs.c.attempts).where(jobs.c.id == orphan_id)
        ).one()
    assert tuple(row) == (worker.worker_id, 2)


def unstarted_worker(services: Services, concurrency: int | None = None) -> Worker:
    """A worker whose methods the test calls itself: no threads claim behind its back."""
    return Worker(
        services.settings,
        services.db,
        services.storage,
        services.engines,
        services.job_notifier,
        concurrency,
    )
