"""Queue benchmark: dispatch latency and whole-path throughput, on real processes.

With an engine of fixed, tiny cost (benchmarks/fixed_engine.py), in one run:
1. dispatch latency (created -> claimed, from the jobs table) p50/p99 on SQLite (embedded
   server) and PostgreSQL (API process + worker process woken by LISTEN/NOTIFY), one job at a
   time on an idle queue;
2. jobs per second through the whole path (HTTP submit to two API processes, claim, complete,
   capture) on PostgreSQL with 1, 2 and 4 worker processes, printed with the ratio to 1 worker.

    python benchmarks/queue_bench.py [--jobs 600] [--latency-jobs 100] [--workers 1 2 4]
                                     [--rounds 3] [--concurrency 4] [--apis 2] [--inline]

CASTFRAME_KEY_CACHE_SECONDS, CASTFRAME_SUBMIT_BATCH_MAX and CASTFRAME_COMPLETION_LINGER_MS in the
environment are passed to the processes (unset: the server's defaults, a 5 s key cache on
PostgreSQL, batches of 64, a 2 ms completion linger).

(Named queue_bench.py, not queue.py: a queue.py here would shadow the standard library's
`queue` module for every script in this folder.)

Needs the PostgreSQL server at CASTFRAME_BENCH_POSTGRES (default postgresql://postgres@127.0.0.1/test);
a fresh database is created and dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import sqlalchemy as sa

from castframe.store.db import Database
from castframe.store.tables import jobs, ledger, status_is

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
                "CASTFRAME_ROUTES": "ideogram-character=benchmarks.fixed_engine:FixedCostEngine",
                "CASTFRAME_FACES_ENABLED": "false",
                "CASTFRAME_RATE_LIMIT_BURST": "100000",
                "CASTFRAME_RATE_LIMIT_PER_SECOND": "100000",
                "CASTFRAME_MAX_ACTIVE_JOBS": "100000",
                "CASTFRAME_SECRET_KEY": "bench",
                "CASTFRAME_LOG_FORMAT": "text",
                # This checkout's code, whichever checkout the virtualenv was installed from.
                "PYTHONPATH": os.pathsep.join((str(ROOT / "src"), str(ROOT))),
            }
        )
        for name in (
            "CASTFRAME_KEY_CACHE_SECONDS",
            "CASTFRAME_SUBMIT_BATCH_MAX",
            "CASTFRAME_COMPLETION_LINGER_MS",
        ):
            if name in os.environ:
                self.env[name] = os.environ[name]
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


def body(index: int, reference: str = TINY_PNG_URI) -> dict[str, object]:
    return {
        "prompt": f"job {index}",
        "model": "ideogram-character",
        "ideogramParams": {"character_reference_image": reference, "seed": index},
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


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes so far (Linux /proc; 0 for any that is gone)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def wait_until_idle(pids: list[int], timeout: float = 60.0) -> None:
    """Until these processes have finished starting (imports, connections): their CPU stops
    moving. Otherwise their start-up would be counted as, and compete with, the work."""
    deadline = time.monotonic() + timeout
    before = cpu_seconds(pids)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        after = cpu_seconds(pids)
        if after - before < 0.05 * max(1, len(pids)):
            return
        before = after
    raise SystemExit("processes did not settle")


def postgres_pids() -> list[int]:
    """The local PostgreSQL server's processes (its backends do the database's share)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() in ("postgres", "postmaster"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


class LoadGenerator:
    """Keep-alive HTTP/1.1 POSTs over raw asyncio streams, so the load costs the shared cores
    tens of microseconds per request rather than the milliseconds a full client would take.

    Only what the benchmark needs: fixed headers, a JSON body, ``Content-Length`` responses.
    """

    def __init__(self, bases: list[str], headers: dict[str, str], connections: int) -> None:
        self.targets = [base.removeprefix("http://").split(":") for base in bases]
        self.headers = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self.connections = connections

    def run(self, bodies: list[bytes]) -> list[int]:
        return asyncio.run(self._run(bodies))

    async def _run(self, bodies: list[bytes]) -> list[int]:
        pending = list(reversed(bodies))
        statuses: list[int] = []

        async def connection(index: int) -> None:
            host, port = self.targets[index % len(self.targets)]
            reader, writer = await asyncio.open_connection(host, int(port))
            try:
                while pending:
                    payload = pending.pop()
                    writer.write(
                        (
                            f"POST /v2/images/generate HTTP/1.1\r\nHost: {host}\r\n{self.headers}"
                            f"Content-Type: application/json\r\n"
                            f"Content-Length: {len(payload)}\r\n\r\n"
                        ).encode()
                        + payload
                    )
                    head = await reader.readuntil(b"\r\n\r\n")
                    lines = head.decode("latin-1").split("\r\n")
                    length = next(
                        int(line.split(":", 1)[1])
                        for line in lines
                        if line.lower().startswith("content-length:")
                    )
                    await reader.readexactly(length)
                    statuses.append(int(lines[0].split()[1]))
            finally:
                writer.close()

        await asyncio.gather(*(connection(i) for i in range(self.connections)))
        return statuses


def upload_reference(base: str, key: str) -> str:
    """Upload the reference once; jobs then name it (``upload://...``) like a real client would."""
    png = base64.b64decode(TINY_PNG_URI.split(",", 1)[1])
    reply = httpx.post(
        f"{base}/v2/uploads",
        files={"file": ("ref.png", png, "image/png")},
        headers={"X-API-Key": key},
    )
    reply.raise_for_status()
    return str(reply.json()["reference"])


def throughput(
    url: str,
    workers: int,
    count: int,
    root: Path,
    inline: bool,
    concurrency: int,
    api_processes: int,
    warmup: int = 0,
) -> float:
    stack = Stack(url, root / f"t{workers}{'i' if inline else ''}")
    stack.run("migrate")
    reset(url)
    try:
        key = stack.run("keys", "create", "--account", "bench", "--credits", "10000000").split()[-1]
        apis = [stack.server("--no-worker") for _ in range(api_processes)]
        for _ in range(workers):
            stack.spawn("worker", "--concurrency", str(concurrency))
        reference = TINY_PNG_URI if inline else upload_reference(apis[0], key)
        bodies = [json.dumps(body(index, reference)).encode() for index in range(count + warmup)]
        load = LoadGenerator(apis, {"X-API-Key": key}, connections=32)
        api_pids = [proc.pid for proc in stack.procs[:api_processes]]
        worker_pids = [proc.pid for proc in stack.procs[api_processes:]]
        wait_until_idle(api_pids + worker_pids)
        db = Database(url)
        if warmup:
            # Steady state, not start-up: the pools' connections opened (and their server
            # processes' caches filled), lazy imports done, statements prepared.
            if load.run(bodies[count:]).count(202) != warmup:
                raise SystemExit("warm-up submissions failed")
            wait_for_completed(db, warmup)
            wait_until_idle(api_pids + worker_pids)
        bodies = bodies[:count]
        pg_pids = postgres_pids()
        cpu_before = [cpu_seconds(api_pids), cpu_seconds(worker_pids), cpu_seconds(pg_pids)]
        load_before = time.process_time()
        started = time.perf_counter()
        statuses = load.run(bodies)
        submitted = time.perf_counter() - started
        if statuses.count(202) != count:
            raise SystemExit(f"submissions failed: {sorted(set(statuses))}")
        wait_for_completed(db, warmup + count)
        elapsed = time.perf_counter() - started
        cpu_after = [cpu_seconds(api_pids), cpu_seconds(worker_pids), cpu_seconds(postgres_pids())]
        load_cpu = time.process_time() - load_before
        with db.read() as conn:
            captured = conn.execute(
                sa.select(sa.func.count()).select_from(ledger).where(ledger.c.kind == "capture")
            ).scalar()
        db.dispose()
        if captured != warmup + count:
            raise SystemExit(f"{captured} captures for {warmup + count} jobs")
        print(
            f"    (all {count} submitted after {submitted:.1f}s "
            f"= {count / submitted:.0f}/s, all done and captured after {elapsed:.1f}s)"
        )
        shares = [after - before for after, before in zip(cpu_after, cpu_before, strict=True)]
        print(
            "    CPU per job: "
            + ", ".join(
                f"{name} {seconds / count * 1000:.2f} ms"
                for name, seconds in zip(
                    ("API", "workers", "PostgreSQL", "load generator (incl. polling)"),
                    [*shares, load_cpu],
                    strict=True,
                )
            )
        )
        return count / elapsed
    finally:
        stack.stop()


def wait_for_completed(db: Database, count: int) -> None:
    """Until no job is queued or running (all were submitted before), then check that
    ``count`` completed. Polled through the queue's partial indexes, so each look costs the
    database next to nothing; counting the COMPLETED rows on every poll would read every
    finished job a hundred times a second and compete with the system under test."""
    pending = sa.select(
        sa.exists().where(
            sa.or_(
                status_is(jobs.c.status, "QUEUED"),
                status_is(jobs.c.status, "PROCESSING"),
            )
        )
    )
    while True:
        with db.read() as conn:
            if not conn.execute(pending).scalar():
                break
        time.sleep(0.01)
    with db.read() as conn:
        done = conn.execute(
            sa.select(sa.func.count()).select_from(jobs).where(jobs.c.status == "COMPLETED")
        ).scalar()
    if done != count:
        raise SystemExit(f"{done} jobs completed of {count}")


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
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument(
        "--concurrency", type=int, default=4, help="slots per worker process (default 4)"
    )
    parser.add_argument("--apis", type=int, default=2, help="API processes (default 2)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=300,
        help="jobs run through each deployment before the measured ones, so the numbers are "
        "steady state rather than start-up: connection pools filled, lazy imports done "
        "(default 300; 0 measures from cold)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="throughput runs per worker count; the median is reported (default 3: this "
        "machine's throughput varies by a third from run to run)",
    )
    parser.add_argument(
        "--inline", action="store_true", help="also run with the reference inline in every job"
    )
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
            )[: 2 if args.latency_jobs else 0]:
                stack = Stack(url, root / label)
                try:
                    key = stack.run(
                        "keys", "create", "--account", "lat", "--credits", "1000000"
                    ).split()[-1]
                    base = stack.server("--no-worker") if separate else stack.server()
                    if separate:
                        stack.spawn("worker", "--concurrency", "1")
                    wait_until_idle([proc.pid for proc in stack.procs])
                    values = dispatch_latency(stack, base, key, args.latency_jobs, url)
                finally:
                    stack.stop()
                print(
                    f"  {label:9} p50 {statistics.median(values):7.1f} ms   "
                    f"p99 {percentile(values, 0.99):7.1f} ms"
                )
            print(
                f"\nthroughput on postgres, {args.jobs} jobs, HTTP submit -> claim -> "
                f"complete -> capture ({args.apis} API processes, {args.concurrency} slots per worker)"
            )
            base_rate = None
            for workers in args.workers:
                rates = [
                    throughput(
                        pg_url,
                        workers,
                        args.jobs,
                        root,
                        False,
                        args.concurrency,
                        args.apis,
                        args.warmup,
                    )
                    for _round in range(args.rounds)
                ]
                rate = statistics.median(rates)
                base_rate = base_rate or rate
                print(
                    f"  {workers} worker process(es): {rate:7.1f} jobs/s median of "
                    f"{', '.join(f'{r:.0f}' for r in rates)}   "
                    f"(x{rate / base_rate:.2f} of {args.workers[0]} worker(s))"
                )
            if args.inline:
                rate = throughput(
                    pg_url,
                    args.workers[-1],
                    args.jobs,
                    root,
                    True,
                    args.concurrency,
                    args.apis,
                    args.warmup,
                )
                print(
                    f"  {args.workers[-1]} worker process(es), reference inline as a data URI "
                    f"in every job: {rate:7.1f} jobs/s"
                )
        finally:
            with psycopg.connect(ADMIN, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
