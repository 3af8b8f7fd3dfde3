"""Workers that serve the models they hold (issue 25): claims filtered by model, the live
workers' registry and what the API makes of it, and model affinity with its bound."""

from __future__ import annotations

import itertools
import random
import time
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from castframe.dispatch.affinity import Affinity
from castframe.dispatch.worker import Worker
from castframe.engines.router import EngineRegistry
from castframe.jobs import fleet
from castframe.jobs import store as job_store
from castframe.jobs.fleet import LiveModels
from castframe.store import states
from castframe.store.tables import jobs
from tests.conftest import Api, open_api
from tests.support.model_engines import HostEngine
from tests.support.polling import eventually

A, B, C = "ideogram-v3-turbo", "ideogram-v3-balanced", "ideogram-v3-quality"
HOST = "tests.support.model_engines:HostEngine"
ROUTES = ",".join(f"{model}={HOST}" for model in (A, B, C))


def submit(api: Api, key: str, models: list[str]) -> list[str]:
    ids = []
    for index, model in enumerate(models):
        response = api.generate(key, {"model": model, "prompt": f"a red lighthouse {index}"})
        assert response.status_code == 202, response.text
        ids.append(response.json()["jobId"])
    return ids


def statuses(api: Api) -> Counter[tuple[str, str]]:
    with api.services.db.read() as conn:
        rows = conn.execute(sa.select(jobs.c.model, jobs.c.status)).all()
    return Counter((str(model), str(status)) for model, status in rows)


def test_a_worker_serving_one_model_never_claims_anothers(api_no_worker: Api) -> None:
    api = api_no_worker
    submit(api, api.key(), [B, A, B, A, B])
    with api.services.db.write() as conn:
        first = job_store.claim_many(conn, "w-a", 30, 10, models=[A])
        again = job_store.claim_many(conn, "w-a", 30, 10, models=[A])
    assert [job.model for job in first] == [A, A]
    assert again == []
    assert statuses(api)[(B, states.QUEUED)] == 3
    with api.services.db.write() as conn:
        rest = job_store.claim_many(conn, "w-bc", 30, 10, models=[B, C])
    assert [job.model for job in rest] == [B, B, B]
    assert [job.queue_key for job in rest] == sorted(job.queue_key for job in rest)


def test_claims_prefer_a_lanes_models_then_fill_in_queue_order(api_no_worker: Api) -> None:
    api = api_no_worker
    submit(api, api.key(), [B, A, B, A])
    with api.services.db.write() as conn:
        preferred = job_store.claim_many(conn, "w", 30, 1, prefer=[A])
        head = job_store.claim_many(conn, "w", 30, 1)
        filled = job_store.claim_many(conn, "w", 30, 5, prefer=[A])
        # A preference outside the models served is ignored, not a way around the filter.
        outside = job_store.claim_many(conn, "w", 30, 5, models=[C], prefer=[A])
    assert [job.model for job in preferred] == [A]  # though a B job is older
    assert [job.model for job in head] == [B]  # no preference: the head of the queue
    assert sorted(job.model for job in filled) == sorted([A, B])
    assert outside == []


def test_affinity_keeps_a_model_at_most_for_the_bound() -> None:
    now = [100.0]
    affinity = Affinity(10.0, clock=lambda: now[0])
    assert affinity.preferred([]) == []  # nothing taken yet: queue order
    assert affinity.took(A) is True
    assert affinity.preferred([C]) == sorted([A, C])
    now[0] += 9.9
    assert affinity.preferred([]) == [A]
    now[0] += 0.2  # past the bound: queue order, so the head (any model) is claimed next
    assert affinity.preferred([A]) == []
    assert affinity.took(A) is False  # more of the same model does not restart the period
    assert affinity.preferred([A]) == []
    assert affinity.took(B) is True  # a switch starts a new period
    assert affinity.preferred([B]) == [B]
    assert Affinity(0.0).preferred([A]) == []  # 0: plain queue order


def run_one_lane(tmp_path: Path, url: str, mix: list[str], bound: float) -> list[str]:
    """The loads a one-lane worker made draining ``mix`` (submitted before it starts)."""
    HostEngine.reset()
    with open_api(
        tmp_path, url, run_worker=False, routes=ROUTES, worker_affinity_seconds=bound
    ) as api:
        ids = submit(api, api.key(), mix)
        api.services.start_worker(devices=["host:0"])
        for job_id in ids:
            assert api.wait(api.key(), job_id)["status"] == "COMPLETED"
    return list(HostEngine.loads)


def test_a_lane_switches_models_rarely_with_affinity(tmp_path: Path, sqlite_url: str) -> None:
    mix = [A, B, C] * 6
    random.Random(7).shuffle(mix)
    plain = run_one_lane(tmp_path / "plain", sqlite_url, mix, bound=0.0)
    assert len(plain) == 1 + sum(1 for x, y in itertools.pairwise(mix) if x != y)
    loads = run_one_lane(tmp_path / "affinity", f"sqlite:///{tmp_path}/a.db", mix, bound=3600)
    # Each model once, plus at most one early switch: the first claim takes two jobs in queue
    # order before any model is loaded.
    assert len(loads) <= 4 < len(plain)
    assert set(loads) == {A, B, C}


def worker_for(api: Api, models: list[str]) -> Worker:
    services = api.services
    return Worker(
        services.settings,
        services.db,
        services.storage,
        EngineRegistry(services.settings),  # its own engine instances
        services.job_notifier,
        1,
        models=models,
    )


def test_a_mixed_fleet_drains_a_mixed_queue(tmp_path: Path, database_url: str) -> None:
    with open_api(tmp_path, database_url, run_worker=False, routes=ROUTES) as api:
        mix = [A, B, C] * 4
        random.Random(3).shuffle(mix)
        submit(api, api.key(), mix)
        only_a, b_and_c = worker_for(api, [A]), worker_for(api, [C, B])
        only_a.start()
        b_and_c.start()
        try:
            with api.services.db.read() as conn:
                assert fleet.live_models(conn, 5) == {A, B, C}
            eventually(
                lambda: statuses(api) == Counter({(m, states.COMPLETED): 4 for m in (A, B, C)}),
                "every job completed",
            )
        finally:
            only_a.stop(5)
            b_and_c.stop(5)
        (engine_a,) = only_a.engines.built()
        (engine_bc,) = b_and_c.engines.built()
        assert isinstance(engine_a, HostEngine) and isinstance(engine_bc, HostEngine)
        assert sorted(engine_a.ran) == [A] * 4
        assert sorted(engine_bc.ran) == sorted([B, C] * 4)
        with api.services.db.read() as conn:
            assert fleet.live_models(conn, 5) == frozenset()  # both unregistered


def test_a_worker_names_only_catalog_models(api_no_worker: Api) -> None:
    with pytest.raises(ValueError, match="no-such-model"):
        worker_for(api_no_worker, ["no-such-model", A])


def test_unserved_models_are_shown_and_may_be_refused(tmp_path: Path, database_url: str) -> None:
    with open_api(tmp_path, database_url, run_worker=False, unserved_models="reject") as api:
        api.services.live = LiveModels(ttl=0)
        key = api.key()
        refused = api.generate(key, {"model": A, "prompt": "a red lighthouse"})
        assert (refused.status_code, refused.json()["code"]) == (503, "model_unavailable")
        assert refused.headers["Retry-After"] == "30"
        assert statuses(api) == Counter()  # nothing written
        assert A in api.client.get("/healthz").json()["modelsWithoutWorker"]

        with api.services.db.write() as conn:
            fleet.register(conn, "w-a", [A], 1, live_seconds=5)
            # A worker silent for longer than a lease is dead: it serves nothing.
            fleet.register(conn, "w-dead", [B], 1, live_seconds=5, now=time.time() - 60)
        assert api.generate(key, {"model": A, "prompt": "a red lighthouse"}).status_code == 202
        refused = api.generate(key, {"model": B, "prompt": "a red lighthouse"})
        assert refused.json()["code"] == "model_unavailable"
        listed = {m["id"]: m["hasWorker"] for m in api.client.get("/v2/models").json()["models"]}
        assert listed[A] is True and listed[B] is False
        assert api.client.get(f"/v2/models/{B}").json()["hasWorker"] is False
        without = api.client.get("/healthz").json()["modelsWithoutWorker"]
        assert A not in without and B in without

        with api.services.db.write() as conn:
            fleet.register(conn, "w-all", None, 1, live_seconds=5)
        assert api.client.get("/healthz").json()["modelsWithoutWorker"] == []
        assert api.generate(key, {"model": B, "prompt": "a red lighthouse"}).status_code == 202


def test_by_default_a_job_nobody_serves_waits_in_the_queue(api_no_worker: Api) -> None:
    api = api_no_worker
    (job_id,) = submit(api, api.key(), [C])
    worker = worker_for(api, [A])
    assert worker._claim(4) == []
    assert api.get_job(api.key(), job_id)["status"] == "QUEUED"


def test_health_and_catalog_answer_when_the_workers_cannot_be_read(
    api_no_worker: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Liveness and the catalog do not depend on the database: without it ``/healthz`` leaves
    ``modelsWithoutWorker`` out and the catalog shows every model as served."""
    api = api_no_worker
    api.services.live = LiveModels(ttl=0)

    def unreachable() -> frozenset[str] | None:
        raise sa.exc.OperationalError("SELECT", {}, Exception("connection refused"))

    monkeypatch.setattr(api.services, "live_models", unreachable)
    health = api.client.get("/healthz")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    models = api.client.get("/v2/models").json()["models"]
    assert models and all(model["hasWorker"] is True for model in models)


def test_the_worker_command_refuses_models_outside_the_catalog() -> None:
    from typer.testing import CliRunner

    from castframe.cli import app

    result = CliRunner().invoke(app, ["worker", "--models", f"{A},no-such-model"])
    assert result.exit_code == 2
    assert "no-such-model" in result.output
    empty = CliRunner().invoke(app, ["worker", "--models", " , "])
    assert empty.exit_code == 2 and "at least one model" in empty.output
