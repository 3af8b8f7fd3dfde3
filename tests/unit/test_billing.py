"""Pricing, the ledger's arithmetic, and a property test of whole billing histories."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from castframe.catalog.ideogram_character import IDEOGRAM_CHARACTER
from castframe.config import Settings
from castframe.engines.router import Routing
from castframe.errors import ApiError
from castframe.jobs import accounts, admission, ledger, queries, submission, validation
from castframe.jobs import store as job_store
from castframe.jobs.accounts import Principal
from castframe.jobs.ledger import Balance, balance_from_entries, split_charge
from castframe.jobs.record import Job
from castframe.media.storage import LocalStorage
from castframe.store.db import Database
from castframe.store.migrate import upgrade
from castframe.store.tables import jobs


@pytest.mark.parametrize(
    ("speed", "count", "price"),
    [
        ("turbo", 1, 10),
        ("default", 1, 15),
        ("quality", 1, 20),
        ("turbo", 4, 40),
        ("quality", 3, 60),
    ],
)
def test_default_prices(speed: str, count: int, price: int) -> None:
    params = {"rendering_speed": speed, "num_images": count}
    assert IDEOGRAM_CHARACTER.price(params, Settings().prices) == price


def test_prices_are_configurable() -> None:
    custom = Settings(prices={"ideogram-character": {"turbo": 1, "default": 2, "quality": 3}})
    params = {"rendering_speed": "quality", "num_images": 2}
    assert IDEOGRAM_CHARACTER.price(params, custom.prices) == 6
    flat = Settings(prices={"ideogram-character": 4})
    assert IDEOGRAM_CHARACTER.price(params, flat.prices) == 8


def test_balance_arithmetic() -> None:
    entries = [
        ("topup", 100),
        ("hold", 30),
        ("capture", 20),
        ("release", 10),
        ("hold", 15),
        ("adjustment", -5),
    ]
    assert balance_from_entries(entries) == Balance(balance=75, held=15)
    assert Balance(75, 15).available == 60


@pytest.mark.parametrize(
    ("price", "requested", "delivered", "expected"),
    [
        (40, 4, 4, (40, 0)),
        (40, 4, 3, (30, 10)),
        (40, 4, 0, (0, 40)),
        (45, 3, 2, (30, 15)),
        (10, 1, 5, (10, 0)),
    ],
)
def test_partial_delivery_charges_only_delivered_images(
    price: int, requested: int, delivered: int, expected: tuple[int, int]
) -> None:
    assert split_charge(price, requested, delivered) == expected


ACTIVE_LIMIT = 4


class World:
    """One account on a fresh SQLite database, driven through the real domain functions."""

    def __init__(self, root: Path) -> None:
        self.settings = Settings(
            data_dir=root,
            database_url=f"sqlite:///{root / 'b.db'}",
            max_active_jobs=ACTIVE_LIMIT,
            secret_key="k",
        )
        self.db = Database(self.settings.resolved_database_url)
        upgrade(self.db.engine)
        self.storage = LocalStorage(root / "files", "http://x", b"k")
        with self.db.write() as conn:
            account = accounts.create_account(conn, "prop")
            raw, _key = accounts.create_key(conn, account["id"])
            _status, principal = accounts.resolve_key(conn, raw)
        assert principal is not None
        self.principal: Principal = principal
        self.topups = 0
        self.jobs: list[str] = []

    def topup(self, amount: int) -> None:
        with self.db.write() as conn:
            ledger.add_entry(conn, self.principal.account_id, "topup", amount)
        self.topups += amount

    def _submission(self, speed: str, count: int) -> validation.Submission:
        body = {
            "prompt": "p",
            "model": "ideogram-character",
            "num_images": count,
            "ideogramParams": {
                "character_reference_image": "https://example.com/a.png",
                "rendering_speed": speed,
            },
        }
        return validation.prepare(body, self.principal, self.settings, Routing(self.settings))

    def submit(self, speed: str, count: int) -> None:
        pending = self._submission(speed, count)
        try:
            with self.db.write() as conn:
                job = submission.insert(conn, self.principal, pending, self.settings)
                self.jobs.append(job.id)
        except ApiError as error:
            assert error.code in ("insufficient_credits", "too_many_active_jobs")

    def submit_batch(self, jobs: list[tuple[str, int]]) -> None:
        """Several submissions in one transaction, as the API's group commit writes them."""
        pending = [(self.principal, self._submission(speed, count)) for speed, count in jobs]
        with self.db.write() as conn:
            outcomes = submission.insert_many(conn, pending, self.settings)
        for outcome in outcomes:
            if isinstance(outcome, ApiError):
                assert outcome.code in ("insufficient_credits", "too_many_active_jobs")
            else:
                self.jobs.append(outcome.id)

    def _claim(self, index: int, worker: str) -> Job | None:
        if not self.jobs:
            return None
        job_id = self.jobs[index % len(self.jobs)]
        with self.db.write() as conn:
            conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.status == "QUEUED")
                .values(run_after=0)
            )
            row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).mappings().one()
            if row["status"] != "QUEUED":
                return None
            conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id)
                .values(status="PROCESSING", lease_owner=worker, lease_expires_at=10**12)
            )
            return Job.from_row(row).replace(status="PROCESSING", lease_owner=worker)

    def complete(self, index: int, delivered: int) -> None:
        job = self._claim(index, "w")
        if job:
            with self.db.write() as conn:
                job_store.complete(conn, job, "w", {"images": []}, delivered)

    def fail(self, index: int) -> None:
        job = self._claim(index, "w")
        if job:
            with self.db.write() as conn:
                job_store.fail(conn, job, "w", "engine_error", "boom")

    def cancel(self, index: int) -> None:
        if self.jobs:
            try:
                with self.db.write() as conn:
                    queries.cancel_job(conn, self.principal, self.jobs[index % len(self.jobs)])
            except ApiError as error:
                assert error.code == "job_not_cancelable"

    def crash_and_retry(self, index: int) -> None:
        """w1 stalls past its lease, w2 takes the job over; both try to finish it."""
        job = self._claim(index, "w1")
        if job:
            with self.db.write() as conn:
                # What a claim does to an expired lease: the job is now w2's.
                conn.execute(jobs.update().where(jobs.c.id == job.id).values(lease_owner="w2"))
            with self.db.write() as conn:
                assert not job_store.complete(conn, job, "w1", {"images": []}, 1)
            with self.db.write() as conn:
                taken_over = job.replace(lease_owner="w2")
                assert job_store.complete(conn, taken_over, "w2", {"images": []}, 1)
            with self.db.write() as conn:  # the stalled w1 wakes up again, and fails this time
                assert not job_store.fail(conn, job, "w1", "engine_error", "late")

    def check(self) -> None:
        with self.db.read() as conn:
            balance = ledger.account_balance(conn, self.principal.account_id)
            from_entries = ledger.ledger_balance(conn, self.principal.account_id)
            slots = admission.active_jobs(conn, self.principal.account_id)
            unfinished = conn.execute(
                sa.select(sa.func.count()).where(jobs.c.status.in_(("QUEUED", "PROCESSING")))
            ).scalar()
            captures = int(
                conn.execute(
                    sa.select(sa.func.coalesce(sa.func.sum(ledger.ledger.c.amount), 0)).where(
                        ledger.ledger.c.kind == "capture"
                    )
                ).scalar()
            )
            per_job = conn.execute(
                sa.select(ledger.ledger.c.job_id, sa.func.count())
                .where(ledger.ledger.c.kind == "capture")
                .group_by(ledger.ledger.c.job_id)
            ).all()
            open_holds = conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(jobs.c.price), 0)).where(
                    jobs.c.status.in_(("QUEUED", "PROCESSING"))
                )
            ).scalar()
        assert balance == from_entries  # the account row's totals never drift from the ledger
        assert slots == unfinished <= ACTIVE_LIMIT
        assert balance.balance == self.topups - captures
        assert balance.balance >= 0
        assert balance.available >= 0
        assert balance.held == open_holds
        assert all(count == 1 for _job, count in per_job)


operation = st.one_of(
    st.tuples(st.just("topup"), st.integers(1, 80)),
    st.tuples(
        st.just("submit"), st.sampled_from(["turbo", "default", "quality"]), st.integers(1, 4)
    ),
    st.tuples(
        st.just("submit_batch"),
        st.lists(
            st.tuples(st.sampled_from(["turbo", "default", "quality"]), st.integers(1, 4)),
            min_size=1,
            max_size=6,
        ),
    ),
    st.tuples(st.just("complete"), st.integers(0, 50), st.integers(0, 4)),
    st.tuples(st.just("fail"), st.integers(0, 50)),
    st.tuples(st.just("cancel"), st.integers(0, 50)),
    st.tuples(st.just("crash_and_retry"), st.integers(0, 50)),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operation, min_size=1, max_size=25))
def test_any_history_keeps_the_books_balanced(operations: list[tuple[object, ...]]) -> None:
    with tempfile.TemporaryDirectory() as root:
        world = World(Path(root))
        for name, *args in operations:
            getattr(world, str(name))(*args)
            world.check()
        world.db.dispose()


def test_admitting_a_group_at_once_is_admitting_it_one_by_one(database_url: str) -> None:
    """``admission.admit_all`` gives the same fair-queue keys and totals as ``admit`` called
    once per submission, and admits nothing at all when the group does not fit whole."""
    db = Database(database_url)
    upgrade(db.engine)
    now = 1_000.0
    prices = [10, 0, 30, 10]
    with db.write() as conn:
        one = accounts.create_account(conn, "one-by-one", credits=100)["id"]
        whole = accounts.create_account(conn, "at-once", credits=100)["id"]
        for account in (one, whole):  # a clock ahead of now: keys follow it, not now
            admission.admit(conn, account, 0, 10, now)
        singles = [admission.admit(conn, one, price, 10, now + 0.5) for price in prices]
        group = admission.admit_all(conn, whole, prices, 10, now + 0.5)
        assert group == pytest.approx(singles)
        assert group == sorted(group) and group[1] - group[0] == pytest.approx(1.0)
        assert ledger.account_balance(conn, whole) == ledger.account_balance(conn, one)
        assert admission.active_jobs(conn, whole) == admission.active_jobs(conn, one) == 5
        # Over the active-job limit (5 + 2 > 6) or the credits (50 left, 70 asked): nothing.
        before = (ledger.account_balance(conn, whole), admission.active_jobs(conn, whole))
        assert admission.admit_all(conn, whole, [1, 1], 6, now) is None
        assert admission.admit_all(conn, whole, [40, 30], 10, now) is None
        assert (ledger.account_balance(conn, whole), admission.active_jobs(conn, whole)) == before
    db.dispose()
