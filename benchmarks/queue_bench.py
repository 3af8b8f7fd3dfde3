"""Queue benchmark: dispatch latency and whole-path throughput, on real processes.

With an engine of fixed, tiny cost (benchmarks/fixed_engine.py), in one run:
1. dispatch latency (created -> claimed, from the jobs table) p50/p99 on SQLite (embedded
   server) and PostgreSQL (API process + worker process woken by LISTEN/NOTIFY), one job at a
   time on an idle queue;
2. jobs per second through the whole path (HTTP submit to two API processes, claim, complete,
   capture) on PostgreSQL with 1, 2 and 4 worker processes, printed with the ratio to 1 worker.

    python benchmarks/queue_bench.py [--jobs 600] [--latency-jobs 100]

(Named queue_bench.py, not queue.py: a queue.py here would shadow the standard library's
`queue` module for every script in this folder.)

Needs the PostgreSQL server at CASTFRAME_BENCH_POSTGRES (default postgresql://postgres@127.0.0.1/test);
a fresh database is created and dropped.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import sqlalchemy as sa

from castframe.store.db import Database
from castframe.store.tables import jobs

ROOT = Path(__file__).resolve().parent.parent
ADMIN = os.environ.get("CASTFRAME_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
TINY_PNG_URI = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAABAAAAAQCAIAAACQkWg2AAAAGElEQVR4"
    "nGNgGAWjYBSMglEwCkbBKAAABBAAAc8ACqUAAAAASUVORK5CYII="
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Stack:
    """Processes of one deployment; killed on exit."""

    def __init__(self, database_url: str, data_dir: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CASTFRAME_")}
        self.env.update(
            {
                "CASTFRAME_DATABASE_URL": database_url,
                "CASTFRAME_DATA_DIR": str(data_dir),
                "CASTFRAME_ENGINE_IDEOGRAM_CHARACTER": "benchmarks.fixed_engine:FixedCostEngine",
                "CASTFRAME_FACES_ENABLED": "false",
                "CASTFRAME_RATE_LIMIT_BURST": "100000",
                "CASTFRAME_RATE_LIMIT_PER_SECOND": "100000",
                "CASTFRAME_MAX_ACTIVE_JOBS": "100000",
                "CASTFRAME_SECRET_KEY": "bench",
                "CASTFRAME_LOG_FORMAT": "text",
                "PYTHONPATH": str(ROOT),
            }
        )
        self.procs: list[subprocess.Popen[bytes]] = []

    def run(self, *args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "castframe.cli", *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def spawn(self, *args: str) -> None:
        self.procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "castframe.cli", *args],
                env=self.env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

    def server(self, *extra: str) -> str:
        port = free_port()
        self.spawn("serve", "--port", str(port), *extra)
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    return base
            except httpx.HTTPError:
                time.sleep(0.1)
        raise SystemExit("server did not start")

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGKILL)
            proc.wait()


def body(index: int) -> dict[str, object]:
    return {
        "prompt": f"job {index}",
        "model": "ideogram-character",
        "ideogramParams": {"character_reference_image": TINY_PNG_URI, "seed": index},
    }


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def dispatch_latency(stack: Stack, base: str, key: str, count: int, url: str) -> list[float]:
    headers = {"X-API-Key": key}
    with httpx.Client(timeout=30) as client:
        ids = []
        for index in range(count):
            job_id = client.post(
                f"{base}/v2/images/generate", json=body(index), headers=headers
            ).json()["jobId"]
            ids.append(job_id)
            while client.get(f"{base}/v2/jobs/{job_id}", headers=headers).json()["status"] in (
                "QUEUED",
                "PROCESSING",
            ):
                time.sleep(0.005)
    db = Database(url)
    with db.read() as conn:
        rows = conn.execute(
            sa.select(jobs.c.created_at, jobs.c.started_at).where(jobs.c.id.in_(ids))
        ).all()
    db.dispose()
    return [(started - created) * 1000 for created, started in rows]


def throughput(url: str, workers: int, count: int, root: Path) -> float:
    reset(url)
    stack = Stack(url, root / f"t{workers}")
    try:
        key = stack.run("keys", "create", "--account", "bench", "--credits", "10000000").split()[-1]
        apis = [stack.server("--no-worker"), stack.server("--no-worker")]
        for _ in range(workers):
            stack.spawn("worker", "--concurrency", "4")
        time.sleep(2.0)
        headers = {"X-API-Key": key}
        started = time.perf_counter()

        def submit(index: int) -> None:
            with httpx.Client(timeout=60) as client:
                client.post(
                    f"{apis[index % 2]}/v2/images/generate", json=body(index), headers=headers
                ).raise_for_status()

        with ThreadPoolExecutor(32) as pool:
            list(pool.map(submit, range(count)))
        submitted = time.perf_counter() - started
        db = Database(url)
        while True:
            with db.read() as conn:
                done = conn.execute(
                    sa.select(sa.func.count()).select_from(jobs).where(jobs.c.status == "COMPLETED")
                ).scalar()
            if done == count:
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        db.dispose()
        print(f"    (all {count} submitted after {submitted:.1f}s, all done after {elapsed:.1f}s)")
        return count / elapsed
    finally:
        stack.stop()


def reset(url: str) -> None:
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(
            "TRUNCATE webhook_attempts, webhook_deliveries, ledger, characters, jobs, "
            "idempotency_keys, uploads, api_keys, accounts CASCADE"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=600)
    parser.add_argument("--latency-jobs", type=int, default=100)
    args = parser.parse_args()
    name = f"castframe_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    pg_url = ADMIN.rsplit("/", 1)[0] + "/" + name
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        try:
            print(f"dispatch latency, created -> claimed, {args.latency_jobs} jobs one at a time")
            for label, url, separate in (
                ("sqlite", f"sqlite:///{root}/bench.db", False),
                ("postgres", pg_url, True),
            ):
                stack = Stack(url, root / label)
                try:
                    key = stack.run(
                        "keys", "create", "--account", "lat", "--credits", "1000000"
                    ).split()[-1]
                    base = stack.server("--no-worker") if separate else stack.server()
                    if separate:
                        stack.spawn("worker", "--concurrency", "1")
                        time.sleep(2.0)
                    values = dispatch_latency(stack, base, key, args.latency_jobs, url)
                finally:
                    stack.stop()
                print(
                    f"  {label:9} p50 {statistics.median(values):7.1f} ms   "
                    f"p99 {percentile(values, 0.99):7.1f} ms"
                )
            print(
                f"\nthroughput on postgres, {args.jobs} jobs, HTTP submit -> claim -> "
                "complete -> capture (2 API processes)"
            )
            base_rate = None
            for workers in (1, 2, 4):
                rate = throughput(pg_url, workers, args.jobs, root)
                base_rate = base_rate or rate
                print(
                    f"  {workers} worker process(es): {rate:7.1f} jobs/s   "
                    f"(x{rate / base_rate:.2f} of 1 worker)"
                )
        finally:
            with psycopg.connect(ADMIN, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
