"""Retention: outputs, inline inputs, uploads, old job rows and webhook logs are deleted on
schedule, on both databases and on S3, with a controlled ``now`` instead of waiting, and two
sweepers at once never delete anything twice."""

from __future__ import annotations

import copy
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from castframe.dispatch.worker import output_key
from castframe.jobs import file_deletions
from castframe.jobs import store as job_store
from castframe.jobs.record import FIELDS, Job
from castframe.jobs.retention import (
    DAY,
    HOUR,
    Policy,
    RetentionSweeper,
    SweepReport,
    deletable_uploads,
    plan_expiry,
    upload_ids_in,
)
from castframe.jobs.uploads import ExpiredUpload, existing_uploads
from castframe.media.storage import Storage, StorageUnavailable
from castframe.store.db import Database
from castframe.store.migrate import upgrade
from castframe.store.tables import jobs, ledger, uploads, webhook_attempts, webhook_deliveries
from tests.conftest import Api, body_for, make_bucket, open_api, s3_storage
from tests.support.http import LoopbackServer, Reply
from tests.support.images import astronaut_png, data_uri
from tests.support.polling import wait_until

# -- helpers ---------------------------------------------------------------------------------


def sweeper(
    api: Api, db: Database | None = None, storage: Storage | None = None
) -> RetentionSweeper:
    services = api.services
    return RetentionSweeper(services.settings, db or services.db, storage or services.storage)


def sweep_all(retention: RetentionSweeper, now: float, passes: int = 50) -> list[SweepReport]:
    """Passes at ``now`` until one finds nothing more due."""
    reports = []
    for _ in range(passes):
        reports.append(retention.sweep(now))
        if not reports[-1].more:
            return reports
    raise AssertionError(f"still more due after {passes} passes")


def row_of(api: Api, job_id: str) -> dict[str, Any] | None:
    with api.services.db.read() as conn:
        row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).mappings().first()
    return dict(row) if row else None


def keys_of(api: Api, job_id: str) -> list[str]:
    row = row_of(api, job_id)
    assert row is not None and row["result"], row
    return [image["key"] for image in row["result"]["images"]]


def upload_row(api: Api, upload_id: str) -> dict[str, Any] | None:
    with api.services.db.read() as conn:
        row = conn.execute(sa.select(uploads).where(uploads.c.id == upload_id)).mappings().first()
    return dict(row) if row else None


def inline_upload_of(api: Api, job: dict[str, Any]) -> dict[str, Any]:
    """The stored inline image of a job submitted with a data: URI reference."""
    reference = job["input"]["ideogramParams"]["character_reference_image"]
    assert reference.startswith("upload://"), reference
    row = upload_row(api, reference.removeprefix("upload://"))
    assert row is not None
    return row


def backdate(api: Api, job_id: str, seconds: float) -> None:
    """Make a finished job look as if it finished ``seconds`` earlier."""
    with api.services.db.write() as conn:
        conn.execute(
            jobs.update()
            .where(jobs.c.id == job_id)
            .values(completed_at=jobs.c.completed_at - seconds)
        )


def clone_finished(api: Api, job_id: str, count: int) -> list[str]:
    """``count`` copies of a completed job, each with output files of its own."""
    original = row_of(api, job_id)
    assert original is not None
    storage = api.services.storage
    rows, ids = [], []
    for _ in range(count):
        new_id = str(uuid.uuid4())
        result = copy.deepcopy(original["result"])
        for index, image in enumerate(result["images"]):
            key = output_key(new_id, original["created_at"], index, image["seed"])
            storage.put(key, storage.get(image["key"]), "image/png")
            image["key"] = key
        rows.append({**original, "id": new_id, "result": result, "webhook_url": None})
        ids.append(new_id)
    with api.services.db.write() as conn:
        conn.execute(jobs.insert(), rows)
    return ids


def upload(api: Api, key: str) -> dict[str, Any]:
    response = api.client.post(
        "/v2/uploads",
        headers={"X-API-Key": key},
        files={"file": ("me.png", astronaut_png(), "image/png")},
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def upload_files(row: dict[str, Any]) -> list[str]:
    """An upload's file and its reference-descriptor sidecar: both go with the upload."""
    return [row["storage_key"], row["storage_key"] + ".face.json"]


def pending_deletions(api: Api) -> int:
    with api.services.db.read() as conn:
        return file_deletions.pending(conn)


class CountingStorage:
    """The real storage, counting deletes per key (thread-safe), optionally failing them."""

    def __init__(
        self, inner: Storage, fail: bool = False, failure: type[Exception] = OSError
    ) -> None:
        self.inner = inner
        self.fail = fail
        self.failure = failure
        self.deleted: Counter[str] = Counter()
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self.inner.put(key, data, content_type)

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def url(self, key: str, ttl: int) -> str:
        return self.inner.url(key, ttl)

    def delete(self, key: str) -> None:
        if self.fail:
            raise self.failure("storage is down")
        self.inner.delete(key)
        with self._lock:
            self.deleted[key] += 1


# -- planning ----------------------------------------------------------------------------------


def test_cutoffs_follow_the_settings() -> None:
    now = 1_000_000_000.0
    kept = Policy(output_seconds=0, job_seconds=0, delivery_seconds=0, batch=10).cutoffs(now)
    assert (kept.outputs_before, kept.jobs_before, kept.deliveries_before) == (None, None, None)
    assert kept.uploads_before == now
    usual = Policy(24 * HOUR, 0, 30 * DAY, 10).cutoffs(now)
    assert (usual.outputs_before, usual.jobs_before) == (now - 24 * HOUR, None)
    assert usual.deliveries_before == now - 30 * DAY
    # A job row goes only once expired: with outputs kept forever, they expire with the row.
    rows_only = Policy(0, 30 * DAY, 0, 10).cutoffs(now)
    assert rows_only.outputs_before == rows_only.jobs_before == now - 30 * DAY
    # Outputs kept longer than rows would be orphaned: they go with the row too.
    longer = Policy(90 * DAY, 30 * DAY, 0, 10).cutoffs(now)
    assert longer.outputs_before == now - 30 * DAY


def test_upload_references_are_found_anywhere_in_params() -> None:
    params = {
        "character_reference_image": "upload://a",
        "style_reference_images": ["https://x/y.png", "upload://b", {"nested": ["upload://c"]}],
        "prompt": "a portrait",
        "seed": 3,
    }
    assert upload_ids_in([params, None, {"image": "upload://d"}]) == {"a", "b", "c", "d"}
    candidates = [ExpiredUpload(name, f"uploads/{name}") for name in "abcde"]
    assert [u.id for u in deletable_uploads(candidates, {"b", "d"}, 2)] == ["a", "c"]


def test_a_job_expires_only_its_own_accounts_inputs() -> None:
    mine = Job.from_row(
        {
            **{name: None for name in FIELDS},
            "id": "j1",
            "account_id": "acct",
            "mode": "live",
            "params": {"character_reference_image": "upload://u1", "prompt": "upload://u9"},
            "result": {"images": [{"key": "outputs/2026-01-01/j1-0-1.png"}]},
        }
    )
    plan = plan_expiry([mine])
    assert plan.job_ids == ["j1"] and plan.output_keys == ["outputs/2026-01-01/j1-0-1.png"]
    assert plan.input_uploads == {("acct", "live"): {"u1", "u9"}}
    assert plan_expiry([mine], delete_output_files=False).output_keys == []


def test_the_sweep_reads_the_head_of_its_index(database_url: str) -> None:
    db = Database(database_url)
    upgrade(db.engine)
    with db.engine.begin() as conn:
        if db.is_postgres:
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")  # an empty table otherwise
        for expired in (False, True):
            query = (
                sa.select(jobs.c.id)
                .where(*job_store._finished_before(time.time(), expired))
                .order_by(jobs.c.expired, jobs.c.completed_at)
                .limit(5)
            )
            sql = str(query.compile(db.engine, compile_kwargs={"literal_binds": True}))
            prefix = "EXPLAIN " if db.is_postgres else "EXPLAIN QUERY PLAN "
            plan = " ".join(str(row[-1]) for row in conn.exec_driver_sql(prefix + sql))
            assert "ix_jobs_finished" in plan, plan
    db.dispose()


# -- outputs -----------------------------------------------------------------------------------


def test_outputs_past_retention_are_deleted_and_the_job_reads_expired(
    tmp_path: Path, database_url: str
) -> None:
    with open_api(tmp_path, database_url) as api:
        key = api.key()
        old = api.submit_and_wait(key, body_for(data_uri(astronaut_png()), num_images=2))
        young = api.submit_and_wait(key, body_for(data_uri(astronaut_png())))
        assert old["status"] == young["status"] == "COMPLETED"
        old_keys, young_keys = keys_of(api, old["id"]), keys_of(api, young["id"])
        old_input, young_input = inline_upload_of(api, old), inline_upload_of(api, young)
        storage = api.services.storage
        assert all(storage.exists(k) for k in [*old_keys, old_input["storage_key"]])
        backdate(api, old["id"], 2 * DAY)

        reports = sweep_all(sweeper(api), time.time())

        assert sum(r.expired_jobs for r in reports) == 1
        assert not any(r.failed_steps or r.failed_files for r in reports)
        # The old job's outputs and its stored inline image are gone, files and row.
        assert not any(storage.exists(k) for k in [*old_keys, old_input["storage_key"]])
        assert upload_row(api, old_input["id"]) is None
        assert pending_deletions(api) == 0
        # Apiframe's shape stays: expired, the URL list kept, each URL a 410.
        expired = api.get_job(key, old["id"])
        assert (expired["status"], expired["expired"]) == ("COMPLETED", True)
        assert len(expired["result"]["images"]) == 2
        for url in expired["result"]["images"]:
            assert isinstance(url, str)
            answer = api.client.get(url)
            assert answer.status_code == 410, answer.text
            assert answer.json()["code"] == "output_expired"
        # The younger job is untouched.
        kept = api.get_job(key, young["id"])
        assert kept["expired"] is False
        assert all(storage.exists(k) for k in [*young_keys, young_input["storage_key"]])
        assert api.client.get(kept["result"]["images"][0]).status_code == 200
        listing = api.client.get("/v2/jobs", headers={"X-API-Key": key}).json()["jobs"]
        assert {j["id"]: j["expired"] for j in listing} == {old["id"]: True, young["id"]: False}
        # A second pass has nothing left to do.
        assert not sweeper(api).sweep(time.time()).did_something


def test_zero_output_retention_keeps_files_forever(tmp_path: Path, sqlite_url: str) -> None:
    with open_api(tmp_path, sqlite_url, output_retention_hours=0) as api:
        key = api.key()
        job = api.submit_and_wait(key, body_for(data_uri(astronaut_png())))
        keys = keys_of(api, job["id"])

        report = sweeper(api).sweep(time.time() + 3650 * DAY)

        assert report.expired_jobs == 0
        assert all(api.services.storage.exists(k) for k in keys)
        assert api.get_job(key, job["id"])["expired"] is False
        assert upload_row(api, inline_upload_of(api, job)["id"]) is not None


def test_a_pass_is_bounded_and_the_next_takes_the_rest(tmp_path: Path, database_url: str) -> None:
    with open_api(tmp_path, database_url, retention_batch=2) as api:
        key = api.key()
        first = api.submit_and_wait(key, body_for(data_uri(astronaut_png())))
        ids = [first["id"], *clone_finished(api, first["id"], 2)]
        every_key = [k for job_id in ids for k in keys_of(api, job_id)]
        later = time.time() + 2 * DAY
        retention = sweeper(api)

        one = retention.sweep(later)
        assert (one.expired_jobs, one.more) == (2, True)
        assert one.deleted_files == 2  # of the three outputs and one input queued
        two = retention.sweep(later)
        assert two.expired_jobs == 1
        rest = sweep_all(retention, later)

        assert not rest[-1].more
        assert all(row_of(api, job_id)["expired"] for job_id in ids)  # type: ignore[index]
        assert not any(api.services.storage.exists(k) for k in every_key)
        assert pending_deletions(api) == 0


def test_outputs_on_s3_are_deleted_and_answer_410(
    tmp_path: Path, sqlite_url: str, s3_server: str
) -> None:
    bucket = make_bucket(s3_server)
    with open_api(tmp_path, sqlite_url, **s3_storage(s3_server, bucket)) as api:
        key = api.key()
        old = api.submit_and_wait(key, body_for(data_uri(astronaut_png())))
        young = api.submit_and_wait(key, body_for(data_uri(astronaut_png())))
        old_keys = keys_of(api, old["id"])
        old_input = inline_upload_of(api, old)["storage_key"]
        storage = api.services.storage
        assert all(storage.exists(k) for k in [*old_keys, old_input])
        backdate(api, old["id"], 2 * DAY)

        sweep_all(sweeper(api), time.time())

        assert not any(storage.exists(k) for k in [*old_keys, old_input])
        expired = api.get_job(key, old["id"])
        assert expired["expired"] is True
        # Not the bucket's presigned URL (its 404 says nothing): the API's own, a 410.
        [url] = expired["result"]["images"]
        assert url.startswith("http://testserver/v2/files/expired/outputs/")
        answer = api.client.get(url, follow_redirects=False)
        assert (answer.status_code, answer.json()["code"]) == (410, "output_expired")
        # The younger job keeps its presigned URL and its object.
        [young_url] = api.get_job(key, young["id"])["result"]["images"]
        assert young_url.startswith(f"{s3_server}/{bucket}/castframe/outputs/")
        assert all(storage.exists(k) for k in keys_of(api, young["id"]))


def test_the_worker_sweeps_on_its_own(tmp_path: Path, sqlite_url: str) -> None:
    """``castframe serve``'s embedded worker runs the passes on its maintenance thread."""
    with open_api(
        tmp_path, sqlite_url, output_retention_hours=1 / 3600, retention_sweep_seconds=0.2
    ) as api:
        assert api.services.worker is not None
        key = api.key()
        job = api.submit_and_wait(key, body_for(data_uri(astronaut_png())))
        keys = keys_of(api, job["id"])

        expired = wait_until(lambda: (j := api.get_job(key, job["id"]))["expired"] and j, 30)

        assert api.client.get(expired["result"]["images"][0]).status_code == 410
        wait_until(lambda: not any(api.services.storage.exists(k) for k in keys), 30)


# -- failures and concurrency ------------------------------------------------------------------


def test_failed_storage_deletes_are_retried_by_a_later_pass(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_api(tmp_path, database_url) as api:
        key = api.key()
        job = api.submit_and_wait(key, body_for(data_uri(astronaut_png())))
        keys = [*keys_of(api, job["id"]), *upload_files(inline_upload_of(api, job))]
        broken = CountingStorage(api.services.storage, fail=True)
        later = time.time() + 2 * DAY

        report = sweeper(api, storage=broken).sweep(later)

        # The decision is recorded (the job reads expired), the files wait in the queue.
        assert report.expired_jobs == 1 and report.failed_files == len(keys)
        assert api.get_job(key, job["id"])["expired"] is True
        assert all(api.services.storage.exists(k) for k in keys[:-1])  # a sidecar may be absent
        assert pending_deletions(api) == len(keys)
        # Leased: the same moment does not hammer the storage again.
        assert sweeper(api, storage=broken).sweep(later).failed_files == 0

        # Storage is back, but the sweeper dies between deleting and forgetting the keys.
        healthy = CountingStorage(api.services.storage)
        retry_at = later + file_deletions.LEASE_SECONDS + 1

        def crash(_conn: sa.Connection, _keys: Any) -> None:
            raise RuntimeError("killed between the delete and the forget")

        with monkeypatch.context() as patch:
            patch.setattr(file_deletions, "forget", crash)
            crashed = sweeper(api, storage=healthy).sweep(retry_at)
        assert crashed.failed_steps == ["files"]
        assert not any(api.services.storage.exists(k) for k in keys)
        assert pending_deletions(api) == len(keys)

        # A later pass deletes again (a missing file is no error) and empties the queue.
        final = sweeper(api, storage=healthy).sweep(retry_at + file_deletions.LEASE_SECONDS + 1)
        assert (final.deleted_files, final.failed_files, final.failed_steps) == (len(keys), 0, [])
        assert pending_deletions(api) == 0


def test_two_sweepers_at_once_share_the_work_and_delete_each_file_once(
    tmp_path: Path, database_url: str
) -> None:
    with open_api(tmp_path, database_url, retention_batch=3) as api:
        key = api.key()
        first = api.submit_and_wait(key, body_for(data_uri(astronaut_png())))
        ids = [first["id"], *clone_finished(api, first["id"], 23)]
        expected = {k for job_id in ids for k in keys_of(api, job_id)}
        expected.update(upload_files(inline_upload_of(api, first)))  # the clones share it
        counting = CountingStorage(api.services.storage)
        later = time.time() + 2 * DAY
        databases = [Database(database_url), Database(database_url)]  # as two processes
        sweepers = [sweeper(api, db, counting) for db in databases]
        start = threading.Barrier(2)
        reports: list[list[SweepReport]] = [[], []]
        errors: list[BaseException] = []

        def run(index: int) -> None:
            try:
                start.wait(10)
                for _ in range(100):
                    report = sweepers[index].sweep(later)
                    reports[index].append(report)
                    if not report.did_something:
                        return
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(index,)) for index in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        for db in databases:
            db.dispose()

        assert errors == []
        every = [report for mine in reports for report in mine]
        assert not any(r.failed_steps or r.failed_files for r in every)
        assert sum(r.expired_jobs for r in every) == len(ids)
        assert sum(r.deleted_uploads for r in every) == 1
        assert set(counting.deleted) == expected
        assert set(counting.deleted.values()) == {1}  # no file deleted twice
        assert all(row_of(api, job_id)["expired"] for job_id in ids)  # type: ignore[index]
        assert not any(api.services.storage.exists(k) for k in expected)
        assert pending_deletions(api) == 0


# -- uploads -----------------------------------------------------------------------------------


def test_expired_uploads_go_unless_a_queued_job_needs_them(
    tmp_path: Path, database_url: str
) -> None:
    with open_api(tmp_path, database_url, run_worker=False) as api:
        key = api.key()
        needed, unused = upload(api, key), upload(api, key)
        files = {u["id"]: upload_row(api, u["id"])["storage_key"] for u in (needed, unused)}  # type: ignore[index]
        queued = api.generate(key, body_for(needed["reference"]))
        assert queued.status_code == 202, queued.text
        job_id = queued.json()["jobId"]
        storage = api.services.storage
        past_expiry = time.time() + 25 * HOUR

        first = sweeper(api).sweep(past_expiry)

        assert first.deleted_uploads == 1
        assert upload_row(api, unused["id"]) is None and not storage.exists(files[unused["id"]])
        assert upload_row(api, needed["id"]) is not None and storage.exists(files[needed["id"]])
        refused = api.generate(key, body_for(unused["reference"]))
        assert (refused.status_code, refused.json()["code"]) == (400, "upload_not_found")

        # Once the job has finished, nothing needs the upload any more.
        cancelled = api.client.post(f"/v2/jobs/{job_id}/cancel", headers={"X-API-Key": key})
        assert cancelled.json()["status"] == "CANCELLED"
        second = sweeper(api).sweep(past_expiry)

        assert second.deleted_uploads == 1
        assert upload_row(api, needed["id"]) is None and not storage.exists(files[needed["id"]])


def test_a_submission_holding_an_upload_is_skipped_not_waited_for(
    tmp_path: Path, postgres_url: str
) -> None:
    """PostgreSQL: a submission's check of its uploads holds them until it commits; the
    sweeper skips them (SKIP LOCKED) instead of deleting an upload a new job is about to use."""
    from tests.conftest import truncate_all

    truncate_all(postgres_url)
    with open_api(tmp_path, postgres_url, run_worker=False) as api:
        key = api.key()
        held = upload(api, key)
        account = api.client.get("/v2/account", headers={"X-API-Key": key}).json()["id"]
        reports: list[SweepReport] = []
        with api.services.db.write() as conn:
            assert existing_uploads(conn, {((account, "live"), held["id"])})
            # On a thread, so that a sweeper that waited for the lock fails the test (the
            # join gives up) instead of hanging it.
            other = threading.Thread(
                target=lambda: reports.append(sweeper(api).sweep(time.time() + 25 * HOUR))
            )
            other.start()
            other.join(60)
            assert [report.deleted_uploads for report in reports] == [0]
        assert upload_row(api, held["id"]) is not None
        assert sweeper(api).sweep(time.time() + 25 * HOUR).deleted_uploads == 1


# -- job rows and webhook logs -----------------------------------------------------------------


def deliveries_of(api: Api, job_id: str) -> list[dict[str, Any]]:
    with api.services.db.read() as conn:
        rows = conn.execute(
            sa.select(webhook_deliveries).where(webhook_deliveries.c.job_id == job_id)
        ).mappings()
        return [dict(row) for row in rows]


def attempts_of(api: Api, delivery_ids: list[str]) -> int:
    with api.services.db.read() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count())
                .select_from(webhook_attempts)
                .where(webhook_attempts.c.delivery_id.in_(delivery_ids))
            ).scalar()
            or 0
        )


def ledger_of(api: Api, job_id: str) -> set[str]:
    with api.services.db.read() as conn:
        return set(
            conn.execute(sa.select(ledger.c.kind).where(ledger.c.job_id == job_id)).scalars()
        )


def delivered_jobs(api: Api, key: str, server: LoopbackServer, count: int) -> list[str]:
    server.routes["/hook"] = lambda _r: Reply(200, b"ok")
    body = body_for(data_uri(astronaut_png()), top={"webhookUrl": server.url("/hook")})
    ids = [api.generate(key, body).json()["jobId"] for _ in range(count)]
    for job_id in ids:
        wait_until(lambda: api.get_job(key, job_id)["webhookStatus"] == "delivered", 60)  # noqa: B023
    return ids


def set_delivery(api: Api, delivery_id: str, **values: Any) -> None:
    with api.services.db.write() as conn:
        conn.execute(
            webhook_deliveries.update()
            .where(webhook_deliveries.c.id == delivery_id)
            .values(**values)
        )


def test_old_job_rows_go_with_their_webhooks_and_the_ledger_stays(
    tmp_path: Path, database_url: str, http_server: LoopbackServer
) -> None:
    with open_api(tmp_path, database_url, job_retention_days=30) as api:
        key = api.key()
        gone, retrying = delivered_jobs(api, key, http_server, 2)
        gone_deliveries = [d["id"] for d in deliveries_of(api, gone)]
        assert gone_deliveries and attempts_of(api, gone_deliveries) >= 1
        assert ledger_of(api, gone) == {"hold", "capture"}
        [still] = deliveries_of(api, retrying)
        set_delivery(api, still["id"], status="failing")  # its webhook is still being retried
        later = time.time() + 31 * DAY

        reports = sweep_all(sweeper(api), later)

        assert sum(r.deleted_jobs for r in reports) == 1
        assert row_of(api, gone) is None
        missing = api.client.get(f"/v2/jobs/{gone}", headers={"X-API-Key": key})
        assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
        assert deliveries_of(api, gone) == [] and attempts_of(api, gone_deliveries) == 0
        assert ledger_of(api, gone) == {"hold", "capture"}  # the account's history stays
        balance = api.client.get("/v2/account", headers={"X-API-Key": key})
        assert balance.status_code == 200
        # Kept while its webhook is retried (expired already), deleted once it is done.
        assert row_of(api, retrying) is not None
        assert api.get_job(key, retrying)["expired"] is True
        set_delivery(api, still["id"], status="failed")
        assert sweeper(api).sweep(later).deleted_jobs == 1
        assert row_of(api, retrying) is None


def test_finished_webhook_deliveries_are_deleted_after_their_retention(
    tmp_path: Path, database_url: str, http_server: LoopbackServer
) -> None:
    with open_api(tmp_path, database_url) as api:  # webhook attempt retention: 30 days
        key = api.key()
        [job_id] = delivered_jobs(api, key, http_server, 1)
        [old] = deliveries_of(api, job_id)
        again = api.client.post(f"/v2/jobs/{job_id}/webhooks/redeliver", headers={"X-API-Key": key})
        assert again.status_code == 202
        http_server.wait_for("/hook", 2)
        wait_until(
            lambda: len([d for d in deliveries_of(api, job_id) if d["status"] == "delivered"]) == 2,
            30,
        )
        recent = next(d for d in deliveries_of(api, job_id) if d["id"] != old["id"])
        retrying_id = "msg_retrying"
        with api.services.db.write() as conn:
            conn.execute(
                webhook_deliveries.insert().values(
                    {**old, "id": retrying_id, "status": "failing", "attempts": 1}
                )
            )
        month = 31 * DAY
        set_delivery(api, old["id"], next_attempt_at=old["next_attempt_at"] - month)
        set_delivery(api, retrying_id, next_attempt_at=old["next_attempt_at"] - month)

        report = sweeper(api).sweep(time.time())

        assert report.deleted_deliveries == 1
        left = {d["id"] for d in deliveries_of(api, job_id)}
        assert left == {recent["id"], retrying_id}
        assert attempts_of(api, [old["id"]]) == 0 and attempts_of(api, [recent["id"]]) == 1
        listed = api.client.get(f"/v2/jobs/{job_id}/webhooks", headers={"X-API-Key": key})
        assert {d["id"] for d in listed.json()["deliveries"]} == left
        assert row_of(api, job_id) is not None  # job rows are kept (no job retention)


def test_file_deletions_stop_at_the_first_unavailable_storage(
    tmp_path: Path, sqlite_url: str
) -> None:
    """A backend that is down fails every delete, each after its own timeouts: the pass stops
    at the first, and leaves the rest queued for a later one."""
    with open_api(tmp_path, sqlite_url) as api:
        key = api.key()
        job = api.submit_and_wait(key, body_for(data_uri(astronaut_png()), num_images=2))
        keys = [*keys_of(api, job["id"]), *upload_files(inline_upload_of(api, job))]
        assert len(keys) == 4
        down = CountingStorage(api.services.storage, fail=True, failure=StorageUnavailable)
        report = sweeper(api, storage=down).sweep(time.time() + 2 * DAY)
        assert (report.expired_jobs, report.failed_files) == (1, 1)
        assert pending_deletions(api) == 4
        assert all(api.services.storage.exists(k) for k in keys[:-1])
