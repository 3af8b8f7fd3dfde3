"""Multi-model duty cycle: one lane, three models that each cost seconds to load, a shuffled
mix of their jobs; model affinity (dispatch/affinity.py) against plain first-come claiming,
measured side by side in one run.

The engine is benchmarks/model_standin.py (a device that holds one model at a time:
``--load-ms`` per load, ``--ms`` per image). Each policy gets a fresh SQLite database and the
same shuffled backlog of ``--jobs`` jobs, submitted over the API (in process) before a worker
with one lane starts; the clock runs from the worker's start to the last completion. Reported:

    duty cycle      = engine time on images / wall time (loads are not useful work)
    switches / 100  = model loads after the first, per 100 jobs
    longest wait    = the most any job waited from the worker's start to its claim

    python benchmarks/multi_model_duty.py                      # 150 jobs, 3 s loads, 500 ms
    python benchmarks/multi_model_duty.py --jobs 60 --load-ms 1000 --ms 200

First-come claiming is ``CASTFRAME_WORKER_AFFINITY_SECONDS=0``; affinity uses ``--bound``.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from fastapi.testclient import TestClient

from benchmarks import model_standin
from castframe.app import create_app
from castframe.config import Settings
from castframe.jobs import accounts
from castframe.services import Services
from castframe.store import states
from castframe.store.tables import jobs

MODELS = ("ideogram-v3-turbo", "ideogram-v3-balanced", "ideogram-v3-quality")
ENGINE = "benchmarks.model_standin:StandInModelEngine"


@dataclass
class Outcome:
    policy: str
    jobs: int
    wall: float
    image_seconds: float
    loads: int
    longest_wait: float

    @property
    def duty(self) -> float:
        return self.image_seconds / self.wall

    @property
    def switches_per_100(self) -> float:
        return 100 * max(0, self.loads - 1) / self.jobs

    def line(self) -> str:
        return (
            f"{self.policy:<22} {self.jobs:>5} jobs  wall {self.wall:7.1f}s  "
            f"duty {100 * self.duty:5.1f}%  loads {self.loads:>3}  "
            f"switches/100 jobs {self.switches_per_100:5.1f}  longest wait {self.longest_wait:6.1f}s"
        )


def run(policy: str, bound: float, mix: list[str]) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="castframe-mmd-") as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            database_url=f"sqlite:///{tmp}/castframe.db",
            routes=",".join(f"{model}={ENGINE}" for model in MODELS),
            worker_affinity_seconds=bound,
            faces_enabled=False,
            face_processes=0,
            lease_seconds=60,
            poll_interval=0.2,
            rate_limit_per_second=10_000.0,
            rate_limit_burst=10_000,
            max_active_jobs=10_000,
        )
        services = Services.build(settings)
        app = create_app(settings, services=services, run_worker=False)
        with TestClient(app) as client:
            with services.db.write() as conn:
                account, _ = accounts.ensure_account(conn, "bench", 10**9)
                key, _ = accounts.create_key(conn, account["id"], "live")
            for index, model in enumerate(mix):
                body = {"model": model, "prompt": f"a lighthouse at dusk, take {index}"}
                response = client.post("/v2/images/generate", json=body, headers={"X-API-Key": key})
                assert response.status_code == 202, response.text
            model_standin.reset_counters()
            started = time.time()
            worker = services.start_worker(devices=["standin:0"])
            try:
                rows = _wait_done(services, len(mix))
            finally:
                worker.stop(5)
        counters = dict(model_standin.COUNTERS)
    failed = [row for row in rows if row.status != states.COMPLETED]
    assert not failed, f"{len(failed)} jobs did not complete: {failed[0].error_message}"
    return Outcome(
        policy=policy,
        jobs=len(mix),
        wall=max(float(row.completed_at) for row in rows) - started,
        image_seconds=counters["image_seconds"],
        loads=int(counters["loads"]),
        longest_wait=max(float(row.started_at) - started for row in rows),
    )


def _wait_done(services: Services, count: int) -> list[sa.Row[tuple[str, float, float, str]]]:
    query = sa.select(jobs.c.status, jobs.c.started_at, jobs.c.completed_at, jobs.c.error_message)
    while True:
        with services.db.read() as conn:
            rows = conn.execute(query).all()
        if len(rows) == count and all(row.status in states.TERMINAL for row in rows):
            return list(rows)
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=150)
    parser.add_argument("--load-ms", type=int, default=3000)
    parser.add_argument("--ms", type=int, default=500)
    parser.add_argument("--bound", type=float, default=30.0, help="affinity seconds")
    parser.add_argument("--seed", type=int, default=25)
    parser.add_argument("--only", choices=["affinity", "first-come"], default=None)
    args = parser.parse_args()
    os.environ["CASTFRAME_MODEL_STANDIN_LOAD_MS"] = str(args.load_ms)
    os.environ["CASTFRAME_MODEL_STANDIN_MS"] = str(args.ms)
    os.environ["CASTFRAME_MODEL_STANDIN_RESIDENT"] = "1"
    mix = [MODELS[index % len(MODELS)] for index in range(args.jobs)]
    random.Random(args.seed).shuffle(mix)
    print(
        f"{args.jobs} jobs of {len(MODELS)} models, shuffled; one lane holding one model; "
        f"load {args.load_ms} ms, {args.ms} ms per image; affinity bound {args.bound:g} s",
        flush=True,
    )
    results = []
    if args.only in (None, "affinity"):
        results.append(run("affinity", args.bound, mix))
        print(results[-1].line(), flush=True)
    if args.only in (None, "first-come"):
        results.append(run("first-come", 0.0, mix))
        print(results[-1].line(), flush=True)
    if len(results) == 2:
        ours, plain = results
        ratio = ours.switches_per_100 / plain.switches_per_100 if plain.switches_per_100 else 0
        print(
            f"switches per 100 jobs: {ratio:.3f} of first-come's; "
            f"duty {100 * ours.duty:.1f}% vs {100 * plain.duty:.1f}%"
        )


if __name__ == "__main__":
    main()
