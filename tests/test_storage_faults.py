"""Storage faults (issue #18, finding 5): a full or failing disk or bucket is a 507 or 503,
or a retried job, never a 500; nothing is charged and nothing is left half-written.

Faults are injected for real at the OS boundary: the storage module's ``os`` is replaced by
``FaultyOs``, which passes every call through to the real ``os`` except the one chosen to
fail (a write that fails after writing half its bytes, as a filling disk does; a failing
rename, fsync or stat). S3 faults come from real HTTP: a port nothing listens on (a stopped
server) and a loopback server answering S3 error documents. A full SQLite database is made
by ``PRAGMA max_page_count``, which gives SQLite's own SQLITE_FULL.
"""

from __future__ import annotations

import errno
import os
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from castframe.jobs import ledger
from castframe.media import storage as storage_module
from castframe.media.s3 import S3Storage
from castframe.media.storage import (
    LocalStorage,
    StorageError,
    StorageFull,
    StorageUnavailable,
    put_all,
)
from castframe.store.db import is_database_full
from castframe.store.tables import characters, idempotency_keys, jobs, uploads
from castframe.store.tables import ledger as ledger_entries
from tests.conftest import Api, body_for, make_bucket, open_api, s3_storage
from tests.support.http import LoopbackServer, Reply
from tests.support.images import astronaut, astronaut_png, data_uri, png_bytes


class FaultyOs:
    """The storage module's ``os``, with one operation failing with ``error``.

    ``op`` is "write" (writes half of the data, then fails), "replace", "fsync" or "stat";
    only files whose path contains ``under`` are affected, the first ``skip`` matching calls
    pass, and then ``times`` calls fail (None: all of them) while ``active`` is true.
    """

    def __init__(
        self,
        error: int,
        op: str = "write",
        under: str = "",
        skip: int = 0,
        times: int | None = None,
    ) -> None:
        self.error, self.op, self.under, self.skip, self.times = error, op, under, skip, times
        self.active = True
        self.seen = 0
        self.injected = 0
        self._paths: dict[int, str] = {}
        """The path of each descriptor opened through here (a write knows only its fd)."""
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def _fail(self, op: str, path: object) -> bool:
        if op != self.op or self.under not in str(path) or not self.active:
            return False
        with self._lock:
            self.seen += 1
            if self.seen <= self.skip or (self.times is not None and self.injected >= self.times):
                return False
            self.injected += 1
            return True

    def _error(self, path: object) -> OSError:
        return OSError(self.error, os.strerror(self.error), str(path))

    def open(self, path: Any, flags: int, mode: int = 0o777, **kwargs: Any) -> int:
        fd = os.open(path, flags, mode, **kwargs)
        self._paths[fd] = str(path)
        return fd

    def write(self, fd: int, data: Any) -> int:
        path = self._paths.get(fd, "")
        if self._fail("write", path):
            os.write(fd, bytes(data[: len(data) // 2]))  # a real partial file
            raise self._error(path)
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        path = self._paths.get(fd, "")
        if self._fail("fsync", path):
            raise self._error(path)
        os.fsync(fd)

    def close(self, fd: int) -> None:
        self._paths.pop(fd, None)
        os.close(fd)

    def replace(self, src: Any, dst: Any) -> None:
        if self._fail("replace", dst):
            raise self._error(dst)
        os.replace(src, dst)

    def stat(self, path: Any, **kwargs: Any) -> os.stat_result:
        if self._fail("stat", path):
            raise self._error(path)
        return os.stat(path, **kwargs)


def inject(monkeypatch: pytest.MonkeyPatch, faulty: FaultyOs) -> FaultyOs:
    monkeypatch.setattr(storage_module, "os", faulty)
    return faulty


def files_under(root: Path) -> list[str]:
    """Every file below ``root`` (temp files included), relative to it."""
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def local(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "files", "http://x", b"k")


# -- the storage layer: LocalStorage ----------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (errno.ENOSPC, StorageFull),
        (errno.EDQUOT, StorageFull),
        (errno.EFBIG, StorageFull),
        (errno.EIO, StorageUnavailable),
        (errno.EACCES, StorageUnavailable),
        (errno.EROFS, StorageUnavailable),
    ],
)
def test_a_failing_write_is_a_storage_error_and_leaves_no_file(
    local: LocalStorage, monkeypatch: pytest.MonkeyPatch, error: int, kind: type[StorageError]
) -> None:
    local.put("outputs/d/keep.png", b"kept", "image/png")
    faulty = inject(monkeypatch, FaultyOs(error, "write"))
    with pytest.raises(kind) as caught:
        local.put("outputs/d/a-0-1.png", b"x" * 10_000, "image/png")
    assert faulty.injected == 1
    message = str(caught.value)
    assert errno.errorcode[error] in message
    assert str(local.root) not in message and ".tmp-" not in message and "a-0-1" not in message
    assert files_under(local.root) == ["outputs/d/keep.png"]  # the half-written temp is gone


@pytest.mark.parametrize("op", ["replace", "fsync"])
def test_a_failing_rename_or_sync_leaves_no_file_either(
    local: LocalStorage, monkeypatch: pytest.MonkeyPatch, op: str
) -> None:
    inject(monkeypatch, FaultyOs(errno.EIO, op, under="/files/outputs/"))
    with pytest.raises(StorageUnavailable, match="EIO"):
        local.put("outputs/d/a-0-1.png", b"png", "image/png")
    assert files_under(local.root) == []


def test_a_failing_folder_sync_after_the_rename_removes_the_file(
    local: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second fsync is the folder's, after the rename: the file went in, but the caller
    is told the write failed, so it must not stay."""
    inject(monkeypatch, FaultyOs(errno.EIO, "fsync", under="/files/outputs/", skip=1))
    with pytest.raises(StorageUnavailable):
        local.put("outputs/d/a-0-1.png", b"png", "image/png")
    assert files_under(local.root) == []


def test_failing_reads_deletes_and_lookups_are_storage_errors(
    local: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(FileNotFoundError):  # missing stays what readers of uploads expect
        local.get("uploads/a/none.png")
    assert local.exists("uploads/a/none.png") is False
    assert local.stat("uploads/a/none.png") is None
    local.delete("uploads/a/none.png")  # not there: no error
    (local.root / "uploads" / "a" / "dir.png").mkdir(parents=True)  # a real EISDIR
    with pytest.raises(StorageUnavailable, match="EISDIR"):
        local.get("uploads/a/dir.png")
    with pytest.raises(StorageUnavailable):
        local.delete("uploads/a/dir.png")
    local.put("uploads/a/x.png", b"png", "image/png")
    inject(monkeypatch, FaultyOs(errno.EIO, "stat"))
    with pytest.raises(StorageUnavailable, match="EIO"):
        local.stat("uploads/a/x.png")


def test_put_all_stores_everything_or_nothing(
    local: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    inject(monkeypatch, FaultyOs(errno.ENOSPC, "write", skip=1))  # the second file fails
    files = [(f"outputs/d/j-{n}-7.png", b"png" * 100, "image/png") for n in range(3)]
    with pytest.raises(StorageFull):
        put_all(local, files)
    assert files_under(local.root) == []


# -- the storage layer: S3 --------------------------------------------------------------------


def closed_port() -> int:
    """A loopback port nothing listens on: a stopped S3 server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def s3(endpoint: str, bucket: str = "castframe-b", read_timeout: float = 60.0) -> S3Storage:
    return S3Storage(
        f"s3://{bucket}/pre",
        endpoint_url=endpoint,
        region="us-east-1",
        access_key_id="test",
        secret_access_key="test-secret-key",
        max_attempts=1,
        read_timeout=read_timeout,
    )


def test_s3_missing_keys_behave_as_before(s3_server: str) -> None:
    store = s3(s3_server, make_bucket(s3_server))
    store.put("outputs/d/a.png", b"png", "image/png")
    assert store.get("outputs/d/a.png") == b"png" and store.exists("outputs/d/a.png")
    with pytest.raises(FileNotFoundError):
        store.get("outputs/d/none.png")
    assert store.exists("outputs/d/none.png") is False
    store.delete("outputs/d/none.png")
    store.delete("outputs/d/a.png")
    assert store.exists("outputs/d/a.png") is False


def test_a_stopped_s3_server_is_unavailable_and_says_nothing_about_itself() -> None:
    port = closed_port()
    store = s3(f"http://127.0.0.1:{port}")
    for call in (
        lambda: store.put("outputs/d/a.png", b"png", "image/png"),
        lambda: store.get("outputs/d/a.png"),
        lambda: store.exists("outputs/d/a.png"),
        lambda: store.delete("outputs/d/a.png"),
    ):
        with pytest.raises(StorageUnavailable) as caught:
            call()
        message = str(caught.value)
        assert "EndpointConnectionError" in message
        for secret in (str(port), "castframe-b", "outputs", "test-secret-key"):
            assert secret not in message


def s3_error_reply(status: int, code: str) -> Reply:
    body = f"<Error><Code>{code}</Code><Message>no</Message></Error>".encode()
    return Reply(status, body, {"Content-Type": "application/xml"})


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (507, "XMinioStorageFull", StorageFull),
        (400, "EntityTooLarge", StorageFull),
        (503, "SlowDown", StorageUnavailable),
        (500, "InternalError", StorageUnavailable),
        (403, "AccessDenied", StorageUnavailable),
    ],
)
def test_s3_error_answers_map_to_full_or_unavailable(
    http_server: LoopbackServer, status: int, code: str, kind: type[StorageError]
) -> None:
    store = s3(http_server.url(""))
    http_server.routes["/castframe-b/pre/outputs/d/a.png"] = lambda _r: s3_error_reply(status, code)
    with pytest.raises(kind) as caught:
        store.put("outputs/d/a.png", b"png", "image/png")
    assert f"S3 {status} {code}" in str(caught.value)
    assert "castframe-b" not in str(caught.value)


def test_an_s3_server_that_does_not_answer_in_time_is_unavailable(
    http_server: LoopbackServer,
) -> None:
    store = s3(http_server.url(""), read_timeout=0.2)
    http_server.routes["/castframe-b/pre/outputs/d/a.png"] = lambda _r: Reply(200, delay=1.0)
    with pytest.raises(StorageUnavailable, match="ReadTimeoutError"):
        store.put("outputs/d/a.png", b"png", "image/png")


# -- the API ----------------------------------------------------------------------------------


def small_png() -> bytes:
    return png_bytes(astronaut()[::8, ::8].copy())


def upload(api: Api, key: str, image: bytes) -> Any:
    return api.client.post(
        "/v2/uploads", files={"file": ("a.png", image, "image/png")}, headers={"X-API-Key": key}
    )


def count(api: Api, table: sa.Table) -> int:
    with api.services.db.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def balance(api: Api, key: str) -> tuple[int, int]:
    account = api.client.get("/v2/account", headers={"X-API-Key": key}).json()
    return account["balance"], account["held"]


def storage_root(api: Api) -> Path:
    storage = api.services.storage
    assert isinstance(storage, LocalStorage)
    return storage.root


def test_upload_to_a_full_disk_is_507_and_to_a_failing_one_503(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_api(tmp_path, sqlite_url, run_worker=False) as api:
        key = api.key()
        faulty = inject(monkeypatch, FaultyOs(errno.ENOSPC, "write", under="/files/uploads/"))
        full = upload(api, key, small_png())
        assert full.status_code == 507, full.text
        body = full.json()
        assert set(body) == {"error", "code", "details"}
        assert body["code"] == "storage_full" and body["details"] == {}
        assert "ENOSPC" in body["error"] and str(tmp_path) not in body["error"]
        faulty.error = errno.EIO
        failing = upload(api, key, small_png())
        assert failing.status_code == 503, failing.text
        assert failing.json()["code"] == "storage_unavailable"
        assert failing.headers["Retry-After"] == "5"
        assert files_under(storage_root(api)) == []
        assert count(api, uploads) == 0
        faulty.active = False
        assert upload(api, key, small_png()).status_code == 201


GROWTH_PAGES = 6


def cap_sqlite(api: Api) -> None:
    """From now on the SQLite file may grow by a few pages only: then SQLite's own SQLITE_FULL,
    as on a full disk. (A few, so that the first writes fit whatever free space the schema's
    pages happen to have.)"""
    engine = api.services.db.engine

    @event.listens_for(engine, "connect")
    def _cap(dbapi_connection: Any, _record: Any) -> None:
        pages = dbapi_connection.execute("PRAGMA page_count").fetchone()[0]
        dbapi_connection.execute(f"PRAGMA max_page_count = {pages + GROWTH_PAGES}")

    engine.dispose()


def test_a_full_sqlite_database_is_507_and_takes_the_uploaded_file_with_it(
    tmp_path: Path, sqlite_url: str
) -> None:
    with open_api(tmp_path, sqlite_url, run_worker=False) as api:
        key = api.key()
        cap_sqlite(api)
        answers = []
        for _ in range(200):  # bounded: a page holds a few dozen upload rows
            answers.append(upload(api, key, small_png()))
            if answers[-1].status_code != 201:
                break
        refused = answers[-1]
        assert refused.status_code == 507, refused.text
        assert refused.json()["code"] == "storage_full"
        stored = len(answers) - 1
        assert stored == count(api, uploads) > 0
        assert len(files_under(storage_root(api) / "uploads")) == stored  # not one more


def test_a_full_sqlite_database_refuses_a_submission_with_507(
    tmp_path: Path, sqlite_url: str
) -> None:
    """Submissions until the file is full: the refused one holds nothing, leaves no job,
    upload, file or idempotency record, and its key can be used again."""
    with open_api(tmp_path, sqlite_url, run_worker=False) as api:
        key = api.key()
        balance_before, _ = balance(api, key)
        cap_sqlite(api)
        body = body_for(data_uri(small_png()), prompt="p " * 999, negative_prompt="n " * 999)
        answers = []
        for n in range(200):  # bounded: each job row is about 8 KiB
            answers.append(api.generate(key, body, **{"Idempotency-Key": f"full-{n}"}))
            if answers[-1].status_code != 202:
                break
        refused = answers[-1]
        assert refused.status_code == 507, refused.text
        assert refused.json()["code"] == "storage_full"
        accepted = len(answers) - 1
        assert accepted == count(api, jobs) == count(api, uploads) > 0
        assert len(files_under(storage_root(api) / "uploads")) == accepted
        assert count(api, idempotency_keys) == accepted  # the refused key did not stick
        with api.services.db.read() as conn:
            prices = conn.execute(sa.select(sa.func.sum(jobs.c.price))).scalar_one()
        assert balance(api, key) == (balance_before, prices)


def test_postgres_disk_full_is_recognised() -> None:
    """PostgreSQL's disk_full cannot be produced here; its SQLSTATE is what is matched."""
    import psycopg

    error = sa.exc.OperationalError("INSERT", {}, psycopg.errors.DiskFull("no space"))
    assert is_database_full(error)
    assert not is_database_full(sa.exc.OperationalError("INSERT", {}, Exception("refused")))


def test_submission_whose_inline_image_cannot_be_stored_is_507_and_leaves_nothing(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_api(tmp_path, database_url, run_worker=False) as api:
        key = api.key()
        before = balance(api, key)
        faulty = inject(
            monkeypatch, FaultyOs(errno.ENOSPC, "write", under="/files/uploads/", skip=1)
        )
        # Two inline images: the first is stored, the second fails and the first is removed.
        body = body_for(data_uri(astronaut_png()), image=data_uri(small_png()))
        body["ideogramParams"]["mask"] = data_uri(small_png())
        response = api.generate(key, body, **{"Idempotency-Key": "k-1"})
        assert response.status_code == 507, response.text
        assert response.json()["code"] == "storage_full"
        assert faulty.injected == 1
        assert files_under(storage_root(api)) == []
        assert count(api, jobs) == 0 and count(api, uploads) == 0
        assert balance(api, key) == before
        assert count(api, ledger_entries) == 1  # the account's top-up, no hold
        faulty.active = False  # the retry with the same key goes through: it did not stick
        retried = api.generate(key, body, **{"Idempotency-Key": "k-1"})
        assert retried.status_code == 202, retried.text


def test_saved_character_whose_image_cannot_be_stored_is_507(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_api(tmp_path, sqlite_url, run_worker=False, faces_enabled=False) as api:
        key = api.key()
        inject(monkeypatch, FaultyOs(errno.ENOSPC, "write", under="/files/uploads/"))
        response = api.client.post(
            "/v2/characters",
            json={"name": "Eileen", "image": data_uri(astronaut_png())},
            headers={"X-API-Key": key},
        )
        assert response.status_code == 507, response.text
        assert response.json()["code"] == "storage_full"
        assert count(api, characters) == 0 and count(api, uploads) == 0
        assert files_under(storage_root(api)) == []


def test_files_of_unreadable_storage_are_503(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_api(tmp_path, sqlite_url, run_worker=False) as api:
        key = api.key()
        created = upload(api, key, small_png())
        assert created.status_code == 201, created.text
        url = created.json()["url"].removeprefix("http://testserver")
        assert api.client.get(url).status_code == 200
        inject(monkeypatch, FaultyOs(errno.EIO, "stat", under="/files/uploads/"))
        response = api.client.get(url)
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "storage_unavailable"
        assert response.headers["Retry-After"] == "5"


def test_s3_that_stops_answering_is_503_for_uploads_and_files(
    tmp_path: Path, sqlite_url: str, s3_server: str
) -> None:
    bucket = make_bucket(s3_server)
    with open_api(tmp_path, sqlite_url, run_worker=False, **s3_storage(s3_server, bucket)) as api:
        key = api.key()
        created = upload(api, key, small_png())
        assert created.status_code == 201, created.text
        storage = api.services.storage
        assert isinstance(storage, S3Storage)
        storage.client = s3(f"http://127.0.0.1:{closed_port()}").client  # the server is gone
        refused = upload(api, key, small_png())
        assert refused.status_code == 503, refused.text
        assert refused.json()["code"] == "storage_unavailable"
        assert bucket not in refused.text
        url = created.json()["url"].removeprefix("http://testserver")
        read = api.client.get(url, follow_redirects=False)
        assert read.status_code == 503, read.text
        assert count(api, uploads) == 1


# -- jobs -------------------------------------------------------------------------------------


def job_ledger(api: Api, job_id: str) -> dict[str, int]:
    with api.services.db.read() as conn:
        return ledger.job_entries(conn, job_id)


def test_job_whose_outputs_fail_once_is_retried_and_charged_once(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_api(tmp_path, database_url, retry_base_seconds=0.05) as api:
        key = api.key()
        before = balance(api, key)
        faulty = inject(
            monkeypatch, FaultyOs(errno.ENOSPC, "write", under="/files/outputs/", times=1)
        )
        job = api.submit_and_wait(key, body_for(data_uri(astronaut_png()), num_images=2))
        assert job["status"] == "COMPLETED", job
        assert faulty.injected == 1
        entries = job_ledger(api, job["id"])
        assert set(entries) == {"hold", "capture"} and entries["capture"] > 0
        assert balance(api, key) == (before[0] - entries["capture"], 0)
        outputs = files_under(storage_root(api) / "outputs")
        assert len(outputs) == 2 and not any(".tmp-" in name for name in outputs)


def test_job_whose_outputs_never_store_fails_storage_failed_uncharged_and_clean(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_api(tmp_path, database_url, retry_base_seconds=0.05, max_attempts=3) as api:
        key = api.key()
        before = balance(api, key)
        # Image 0 of the first attempt is stored, image 1 fails; every later write fails.
        faulty = inject(
            monkeypatch, FaultyOs(errno.ENOSPC, "write", under="/files/outputs/", skip=1)
        )
        job = api.submit_and_wait(key, body_for(data_uri(astronaut_png()), num_images=2))
        assert job["status"] == "FAILED", job
        assert job["errorCode"] == "storage_failed"
        assert "ENOSPC" in job["error"] and "/" not in job["error"] and ".tmp" not in job["error"]
        assert faulty.injected == 3  # one failed store per attempt
        assert set(job_ledger(api, job["id"])) == {"hold", "release"}
        assert balance(api, key) == before
        assert files_under(storage_root(api) / "outputs") == []  # image 0 removed, no temp


def test_in_a_batch_only_the_submission_whose_image_fails_is_refused(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Submissions written together (the submitter's group commit): the second one's image
    cannot be stored; it alone gets the StorageError, the first and third are written."""
    from castframe.jobs.accounts import resolve_key
    from castframe.jobs.record import Job
    from castframe.jobs.submitter import _Pending
    from castframe.jobs.validation import prepare

    with open_api(tmp_path, database_url, run_worker=False) as api:
        key = api.key()
        services = api.services
        with services.db.read() as conn:
            _hash, principal = resolve_key(conn, key)
        assert principal is not None
        pending = [
            _Pending(
                principal,
                prepare(
                    body_for(data_uri(small_png())), principal, services.settings, services.routing
                ),
                None,
            )
            for _ in range(3)
        ]
        inject(
            monkeypatch, FaultyOs(errno.ENOSPC, "write", under="/files/uploads/", skip=1, times=1)
        )
        outcomes = services.submitter.group.write(pending)
        assert services.submitter.group.batches == 1
        assert isinstance(outcomes[0], Job) and isinstance(outcomes[2], Job)
        assert isinstance(outcomes[1], StorageFull)
        assert count(api, jobs) == count(api, uploads) == 2
        assert len(files_under(storage_root(api))) == 2


def test_job_whose_input_cannot_be_read_is_retried_as_storage_failed(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upload the worker cannot read because the volume fails is not "upload_not_found":
    it is a storage failure, retried, and given up as storage_failed."""
    with open_api(tmp_path, sqlite_url, retry_base_seconds=0.05, max_attempts=2) as api:
        key = api.key()
        created = upload(api, key, small_png())
        assert created.status_code == 201, created.text
        storage = storage_root(api)
        (only,) = files_under(storage / "uploads")
        path = storage / "uploads" / only
        path.unlink()
        path.mkdir()  # the file is there but cannot be read: a real EISDIR from read_bytes
        job = api.submit_and_wait(key, body_for(created.json()["reference"]))
        assert job["status"] == "FAILED", job
        assert job["errorCode"] == "storage_failed"
        assert "EISDIR" in job["error"] and str(tmp_path) not in job["error"]
