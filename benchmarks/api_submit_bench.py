"""API CPU per submission: what ``POST /v2/images/generate`` costs the API process alone.

The real ASGI app (``create_app`` with no worker, so only the API path runs) with a test key
(the sandbox engine), called in-process the way uvicorn calls it (no HTTP client in between:
httpx's ASGI transport alone costs several hundred µs a request, which would dilute the
ratio). After a warm-up, ``--jobs`` submissions are made by ``--concurrency`` concurrent
callers (so the submitter's group commit batches them, as under load), and the process's CPU
seconds (``time.process_time``: every thread, the group commits' database client work
included) are divided by their number. ``--threads`` splits them by thread. The body is
queue_bench.py's: ideogram-character naming an uploaded reference (``--body inline``: a tiny
data URI); ``--idempotency`` sends a fresh Idempotency-Key with each. glibc's malloc is set up
as ``castframe serve`` sets it, where the version does (``--allocator default``: left alone).

The database is PostgreSQL by default (a fresh database on CASTFRAME_BENCH_POSTGRES, default
postgresql://postgres@127.0.0.1/test, dropped after), as in queue_bench.py; ``--db sqlite``
uses a file in a temporary directory, but there the group commit's batch size follows the
fsync times, and the CPU per job swings by a third from run to run.

With a baseline (``--baseline-ref REV``, default the merge-base with main; ``--no-baseline``
for none), the same loop runs on that commit's ``src/`` (exported with gpu_duty.py's
``export_baseline``: nothing is registered in .git) in the same run: every measurement is a
fresh subprocess, the versions alternate for ``--rounds`` rounds, and the medians and their
ratio are printed. On a shared machine the rounds still vary by 10-20%: compare medians.

    python benchmarks/api_submit_bench.py --baseline-ref c7ba065
    python benchmarks/api_submit_bench.py --baseline-ref c7ba065 --idempotency --threads
    python benchmarks/api_submit_bench.py --no-baseline --jobs 2000 --profile-dir /tmp/prof

``--profile-dir`` also runs each version once more under cProfile (every thread, start-up and
warm-up included; not counted in the numbers) and writes ``head.prof`` and ``baseline.prof``
(``python -m pstats``; cProfile's times are wall times, waits included).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ADMIN = os.environ.get("CASTFRAME_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
TINY_PNG_URI = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAABAAAAAQCAIAAACQkWg2AAAAGElEQVR4"
    "nGNgGAWjYBSMglEwCkbBKAAABBAAAc8ACqUAAAAASUVORK5CYII="
)
CHILD_ENV = {
    "CASTFRAME_WORKER_ENABLED": "false",
    "CASTFRAME_FACES_ENABLED": "false",
    "CASTFRAME_RATE_LIMIT_BURST": "1000000",
    "CASTFRAME_RATE_LIMIT_PER_SECOND": "1000000",
    "CASTFRAME_MAX_ACTIVE_JOBS": "1000000",
    "CASTFRAME_SECRET_KEY": "bench",
    "CASTFRAME_LOG_FORMAT": "text",
}


def body(index: int, reference: str) -> dict[str, object]:
    return {
        "prompt": f"job {index}",
        "model": "ideogram-character",
        "ideogramParams": {"character_reference_image": reference, "seed": index},
    }


async def call_asgi(app: Any, payload: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    """``POST /v2/images/generate`` straight into the ASGI app, as uvicorn would call it: a
    client's own per-request cost (httpx's is several hundred µs) would dilute the ratio."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 40000),
        "scheme": "http",
        "method": "POST",
        "root_path": "",
        "path": "/v2/images/generate",
        "raw_path": b"/v2/images/generate",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            *((name.lower().encode(), value.encode()) for name, value in headers.items()),
        ],
        "state": {},
    }
    finished = asyncio.Event()
    sent = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": payload, "more_body": False}
        await finished.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                finished.set()

    await app(scope, receive, send)
    return status, b"".join(chunks)


async def submission_loop(args: argparse.Namespace) -> dict[str, Any]:
    """One measurement in this process (the version on ``sys.path``); see the module doc."""
    import httpx

    import castframe
    from castframe.app import create_app
    from castframe.config import Settings
    from castframe.jobs import accounts
    from castframe.services import Services

    settings = Settings()
    services = Services.build(settings)
    with services.db.write() as conn:
        row, _ = accounts.ensure_account(conn, "bench", 10**9)
        raw_key, _ = accounts.create_key(conn, row["id"], "test")
    app = create_app(settings, services=services, run_worker=False)
    headers = {"X-API-Key": raw_key}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            reference = TINY_PNG_URI
            if args.body == "upload":
                png = base64.b64decode(TINY_PNG_URI.split(",", 1)[1])
                reply = await client.post(
                    "/v2/uploads", files={"file": ("ref.png", png, "image/png")}, headers=headers
                )
                reply.raise_for_status()
                reference = str(reply.json()["reference"])

            async def submit_all(count: int) -> None:
                left = iter(range(count))

                async def one_client() -> None:
                    for index in left:
                        extra = {"Idempotency-Key": uuid.uuid4().hex} if args.idempotency else {}
                        payload = json.dumps(body(index, reference)).encode()
                        status, answer = await call_asgi(app, payload, {**headers, **extra})
                        if status != 202:  # not SystemExit: asyncio would not end the loop
                            raise RuntimeError(f"{status}: {answer!r}")

                await asyncio.gather(*(one_client() for _ in range(args.concurrency)))

            await submit_all(args.warmup)
            threads_before = thread_cpu()
            started = time.process_time()
            await submit_all(args.jobs)
            cpu = time.process_time() - started
            threads_after = thread_cpu()
    by_thread: dict[str, float] = {}
    for ident, (name, seconds) in threads_after.items():
        kind = name.rstrip("0123456789_-").removesuffix(" (submit_all)") or name
        spent = seconds - threads_before.get(ident, (name, 0.0))[1]
        by_thread[kind] = by_thread.get(kind, 0.0) + spent / args.jobs
    return {"cpu_per_job": cpu / args.jobs, "threads": by_thread, "castframe": castframe.__file__}


def thread_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds of each live thread so far, with its name (Linux: its CPU clock)."""
    found = {}
    for thread in threading.enumerate():
        if thread.ident is None:
            continue
        try:
            clock = time.pthread_getcpuclockid(thread.ident)
            found[thread.ident] = (thread.name, time.clock_gettime(clock))
        except (OSError, AttributeError):  # exited meanwhile, or not Linux
            continue
    return found


class ThreadProfiles:
    """cProfile of every thread (Python 3.11's profiles one thread each: the submitter's
    commits and the thread pool's work would be missing), from start to ``dump``."""

    def __init__(self) -> None:
        self.profiles: list[cProfile.Profile] = []
        threading.setprofile(self._start_in_thread)
        self._start_in_thread()

    def _start_in_thread(self, *_: object) -> None:
        profile = cProfile.Profile()
        self.profiles.append(profile)
        profile.enable()

    def dump(self, path: str) -> None:
        threading.setprofile(None)
        self.profiles[0].disable()
        stats = pstats.Stats(self.profiles[0])
        for profile in self.profiles[1:]:
            profile.create_stats()  # the other threads' profiles are still enabled: snapshot
            stats.add(profile)
        stats.dump_stats(path)


def run_child(args: argparse.Namespace) -> None:
    if args.allocator == "serve":
        try:  # what ``castframe serve`` does first, in the versions that do it
            from castframe.allocator import bound_heap_retention
        except ImportError:
            pass
        else:
            bound_heap_retention()
    profiles = ThreadProfiles() if args.profile else None
    with tempfile.TemporaryDirectory(prefix="castframe-apicpu-") as tmp:
        os.environ.update(CHILD_ENV)
        os.environ["CASTFRAME_DATA_DIR"] = tmp
        database = None
        if args.db == "postgres":
            import psycopg

            database = f"castframe_apicpu_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(ADMIN, autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{database}"')
            url = ADMIN.rsplit("/", 1)[0] + "/" + database
        else:
            url = f"sqlite:///{Path(tmp) / 'castframe.db'}"
        os.environ["CASTFRAME_DATABASE_URL"] = url
        try:
            result = asyncio.run(submission_loop(args))
        finally:
            if database is not None:
                with psycopg.connect(ADMIN, autocommit=True) as admin:
                    admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    if profiles is not None:
        profiles.dump(args.profile)
    print("RESULT " + json.dumps(result), flush=True)


def measure(
    src: Path, args: argparse.Namespace, profile: Path | None
) -> tuple[float, dict[str, float]]:
    """CPU seconds per submission of the code in ``src``, measured in a fresh subprocess, and
    their split by thread (by name: the event loop's, the thread pool's, ...)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASTFRAME_")}
    env["PYTHONPATH"] = os.pathsep.join((str(src), str(ROOT)))
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        f"--jobs={args.jobs}",
        f"--warmup={args.warmup}",
        f"--concurrency={args.concurrency}",
        f"--body={args.body}",
        f"--db={args.db}",
        f"--allocator={args.allocator}",
    ]
    if args.idempotency:
        command.append("--idempotency")
    if profile is not None:
        command.append(f"--profile={profile}")
    done = subprocess.run(
        command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=args.timeout
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"measurement failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    result = json.loads(lines[-1].removeprefix("RESULT "))
    if not str(result["castframe"]).startswith(str(src)):  # an installed copy won
        raise SystemExit(f"measured {result['castframe']}, not {src}")
    return float(result["cpu_per_job"]), result["threads"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=2000, help="measured submissions")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent clients")
    parser.add_argument("--body", choices=["upload", "inline"], default="upload")
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument(
        "--allocator",
        choices=["serve", "default"],
        default="serve",
        help="serve: glibc's malloc set up as `castframe serve` sets it (castframe/allocator.py, "
        "where the version has it); default: left alone",
    )
    parser.add_argument(
        "--idempotency", action="store_true", help="send a fresh Idempotency-Key with each"
    )
    parser.add_argument(
        "--threads", action="store_true", help="also print each measurement's CPU by thread"
    )
    parser.add_argument("--rounds", type=int, default=5, help="measurements per version")
    parser.add_argument("--baseline-ref", default=None, help="default: merge-base with main")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--profile-dir", type=Path, default=None)
    parser.add_argument(
        "--timeout", type=float, default=600, help="seconds a measurement may take (default 600)"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--profile", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args)
        return

    sys.path.insert(0, str(ROOT))
    from benchmarks.gpu_duty import default_baseline, export_baseline

    with tempfile.TemporaryDirectory(prefix="castframe-apicpu-") as tmp:
        versions = {"head": ROOT / "src"}
        if not args.no_baseline:
            ref = args.baseline_ref or default_baseline()
            versions["baseline"] = export_baseline(ref, Path(tmp)).src
        print(
            f"API CPU per submission ({args.jobs} after {args.warmup} warm-up, "
            f"{args.concurrency} concurrent, body {args.body}, {args.db}"
            f"{', Idempotency-Key' if args.idempotency else ''}); "
            + ", ".join(f"{name}: {src}" for name, src in versions.items()),
            flush=True,
        )
        results: dict[str, list[float]] = {name: [] for name in versions}
        for round_ in range(args.rounds):
            for name, src in versions.items():
                cpu, threads = measure(src, args, None)
                results[name].append(cpu)
                line = f"  round {round_ + 1} {name:8s} {cpu * 1e6:7.0f} µs"
                if args.threads:
                    line += "   " + ", ".join(
                        f"{thread} {seconds * 1e6:.0f}"
                        for thread, seconds in sorted(threads.items(), key=lambda kv: -kv[1])
                        if seconds * 1e6 >= 1
                    )
                print(line, flush=True)
        medians = {name: statistics.median(values) for name, values in results.items()}
        line = "  ".join(f"{name} {value * 1e6:.0f} µs" for name, value in medians.items())
        if "baseline" in medians:
            line += f"  ratio head/baseline x{medians['head'] / medians['baseline']:.2f}"
        print(f"median: {line}")
        if args.profile_dir is not None:
            args.profile_dir.mkdir(parents=True, exist_ok=True)
            for name, src in versions.items():
                measure(src, args, args.profile_dir / f"{name}.prof")
            print(f"profiles in {args.profile_dir}")


if __name__ == "__main__":
    main()
