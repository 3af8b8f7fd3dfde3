"""Live-status benchmark: /healthz latency and server RSS with many SSE streams and waits open.

One real API process (`castframe serve`: embedded worker, sandbox engine, SQLite), in one run:
1. baseline: /healthz latency (p50/p99 over ``--healthz`` requests, one keep-alive connection)
   and the server's RSS, with no listeners;
2. loaded: ``--waits`` ``Prefer: wait`` submissions in flight and ``--streams`` SSE streams
   open (spread over ``--jobs`` jobs queued behind the waits, so they stay open), then the same
   /healthz measurement, the RSS and the server's CPU while it held them; printed with the
   ratios to the baseline.

    python benchmarks/sse_bench.py [--streams 1000] [--waits 300] [--jobs 10] [--healthz 300]

Streams and requests are raw asyncio sockets (an HTTP client per stream would cost the shared
cores more than the server does). The listener bounds are raised for the run through
CASTFRAME_LIVE_LISTENERS(_PER_KEY); the open-files limit is raised to its hard limit (the
server inherits it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from queue_bench import TINY_PNG_URI, Stack, cpu_seconds, percentile


def raise_open_files(needed: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def request_bytes(method: str, path: str, key: str, body: bytes = b"", **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: bench", f"X-API-Key: {key}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Status and body of a Content-Length response."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return status, await reader.readexactly(length)


def job_body(index: int) -> bytes:
    return json.dumps(
        {
            "prompt": f"live status {index}",
            "model": "ideogram-character",
            "ideogramParams": {"character_reference_image": TINY_PNG_URI, "seed": index},
        }
    ).encode()


async def healthz(port: int, count: int) -> list[float]:
    """``count`` sequential /healthz requests on one keep-alive connection, in ms."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n"
    timings = []
    for _ in range(count):
        started = time.perf_counter()
        writer.write(request)
        status, _ = await read_response(reader)
        timings.append((time.perf_counter() - started) * 1000)
        assert status == 200, status
    writer.close()
    return timings


async def submit(port: int, key: str, index: int, wait: str | None) -> tuple[int, dict[str, str]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    extra = {"Prefer": wait} if wait else {}
    writer.write(request_bytes("POST", "/v2/images/generate", key, job_body(index), **extra))
    status, body = await read_response(reader)
    writer.close()
    return status, json.loads(body)


class Stream:
    """One SSE stream on a raw socket: open until its job ends or ``close``."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.status = 0
        self.events = 0
        self.task: asyncio.Task[None] | None = None

    async def run(self, port: int, key: str, job_id: str) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(request_bytes("GET", f"/v2/jobs/{job_id}/events", key))
            head = await reader.readuntil(b"\r\n\r\n")
            self.status = int(head.split(b" ", 2)[1])
            if self.status != 200:
                self.opened.set()
                return
            while chunk := await reader.read(65536):
                self.events += chunk.count(b"event: job")
                if self.events:
                    self.opened.set()
                if b"event: end" in chunk:
                    return
        finally:
            self.opened.set()
            writer.close()


async def measure(port: int, pid: int, key: str, args: argparse.Namespace) -> dict[str, float]:
    await healthz(port, 50)  # warm-up
    base = await healthz(port, args.healthz)
    base_rss = rss_mb(pid)

    waits = [
        asyncio.create_task(submit(port, key, index, "wait=60")) for index in range(args.waits)
    ]
    await asyncio.sleep(0.5)
    watched = [(await submit(port, key, 10_000 + n, None))[1]["jobId"] for n in range(args.jobs)]
    jobs_rss = rss_mb(pid)  # the waits' jobs admitted and running, no stream open yet
    streams = [Stream() for _ in range(args.streams)]
    for index, stream in enumerate(streams):
        stream.task = asyncio.create_task(stream.run(port, key, watched[index % len(watched)]))
    opened_at = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(s.opened.wait() for s in streams)), 120)
    opened_in = time.perf_counter() - opened_at
    refused = sum(1 for s in streams if s.status != 200)
    cpu_before, wall_before = cpu_seconds([pid]), time.perf_counter()
    loaded = await healthz(port, args.healthz)
    cpu = (cpu_seconds([pid]) - cpu_before) / (time.perf_counter() - wall_before)
    loaded_rss = rss_mb(pid)
    still_open = sum(1 for s in streams if s.task is not None and not s.task.done())
    done_waits = [w.result() for w in waits if w.done()]
    for stream in streams:
        if stream.task is not None:
            stream.task.cancel()
    for wait in waits:
        wait.cancel()
    await asyncio.gather(*waits, *(s.task for s in streams if s.task), return_exceptions=True)
    return {
        "base_p50": percentile(base, 0.5),
        "base_p99": percentile(base, 0.99),
        "p50": percentile(loaded, 0.5),
        "p99": percentile(loaded, 0.99),
        "base_rss": base_rss,
        "jobs_rss": jobs_rss,
        "rss": loaded_rss,
        "opened_in": opened_in,
        "refused": refused,
        "still_open": still_open,
        "waits_answered": len(done_waits),
        "waits_finished": sum(1 for status, _ in done_waits if status == 200),
        "cpu": cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--waits", type=int, default=300)
    parser.add_argument("--jobs", type=int, default=10, help="jobs the streams watch")
    parser.add_argument("--healthz", type=int, default=300)
    args = parser.parse_args()
    limit = raise_open_files(args.streams + args.waits + 200)
    if limit < args.streams + args.waits + 100:
        sys.exit(f"open-files limit {limit} is too low for {args.streams + args.waits} sockets")
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(f"sqlite:///{tmp}/castframe.db", Path(tmp) / "data")
        stack.env.pop("CASTFRAME_ROUTES")  # the sandbox engine
        bound = str(args.streams + args.waits + 100)
        stack.env.update(
            {"CASTFRAME_LIVE_LISTENERS": bound, "CASTFRAME_LIVE_LISTENERS_PER_KEY": bound}
        )
        stack.run("migrate")
        key = stack.run("keys", "create", "--account", "bench", "--credits", "1000000000")
        key = key.split()[-1]
        try:
            base = stack.server()
            port = int(base.rsplit(":", 1)[1])
            result = asyncio.run(measure(port, stack.procs[-1].pid, key, args))
        finally:
            stack.stop()
    r = result
    print(
        f"live status on sqlite: {args.streams} SSE streams over {args.jobs} jobs + "
        f"{args.waits} Prefer: wait submissions (sandbox engine, embedded worker)"
    )
    print(
        f"  streams open after {r['opened_in']:.1f}s ({r['refused']:.0f} refused); "
        f"{r['still_open']:.0f} still open after the measurement; waits answered "
        f"{r['waits_answered']:.0f} ({r['waits_finished']:.0f} finished)"
    )
    print(
        f"  /healthz, {args.healthz} requests  no listeners: p50 {r['base_p50']:6.2f} ms  "
        f"p99 {r['base_p99']:6.2f} ms"
    )
    print(
        f"  /healthz, {args.healthz} requests  listeners:    p50 {r['p50']:6.2f} ms  "
        f"p99 {r['p99']:6.2f} ms   (x{r['p50'] / r['base_p50']:.2f} p50, "
        f"x{r['p99'] / r['base_p99']:.2f} p99 of no listeners)"
    )
    per_stream = (r["rss"] - r["jobs_rss"]) * 1024 / max(1, args.streams)
    print(
        f"  server RSS  no listeners {r['base_rss']:.0f} MB   waits in flight "
        f"{r['jobs_rss']:.0f} MB   + streams {r['rss']:.0f} MB   (x{r['rss'] / r['base_rss']:.2f}; "
        f"{per_stream:.0f} KB per stream)"
    )
    print(f"  server CPU while measuring: {r['cpu'] * 100:.0f}% of a core (its worker included)")


if __name__ == "__main__":
    main()
