"""Attack benchmark (issue 24, part A): /healthz latency while one account runs hostile receivers.

One real API process (`castframe serve`: embedded worker, fixed-cost engine, SQLite) and a
loopback trickler (``200 OK``, then one header byte every 0.5 s). In one run:
1. baseline: /healthz p50/p99 over ``--healthz`` sequential requests, and the server's RSS;
2. under attack, from account A: ``--characters`` concurrent `POST /v2/characters` whose image
   trickles, ``--jobs`` jobs whose reference trickles, ``--webhooks`` jobs whose webhook
   trickles; then the same /healthz measurement, and account B's job end to end (submit,
   COMPLETED, its webhook delivered to a fast receiver).

    python benchmarks/attack_bench.py [--characters 45] [--jobs 4] [--webhooks 12] [--healthz 300]

Done means (issue 24): /healthz p99 under 100 ms under attack, B's job and webhook complete.
"""

from __future__ import annotations

import argparse
import socketserver
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from queue_bench import TINY_PNG_URI, Stack, percentile
from sse_bench import rss_mb


class Hostile(ThreadingHTTPServer):
    daemon_threads = True
    stopping = threading.Event()
    hooks = 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        return None

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        if self.path.startswith("/fast"):
            Hostile.hooks += 1
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.do_GET()

    def do_GET(self) -> None:
        """200, then one header byte every 0.5 s until the client hangs up."""
        self.close_connection = True
        try:
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            while not Hostile.stopping.wait(0.5):
                self.wfile.write(b"a")
        except OSError:
            return


def healthz(base: str, count: int) -> list[float]:
    times = []
    with httpx.Client(base_url=base, timeout=60) as client:
        for _ in range(count):
            started = time.perf_counter()
            assert client.get("/healthz").status_code == 200
            times.append((time.perf_counter() - started) * 1000)
    return times


def job(reference: str, webhook: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "prompt": "a portrait",
        "model": "ideogram-character",
        "ideogramParams": {"character_reference_image": reference, "rendering_speed": "turbo"},
    }
    if webhook:
        body["webhookUrl"] = webhook
    return body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--characters", type=int, default=45)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--webhooks", type=int, default=12)
    parser.add_argument("--healthz", type=int, default=300)
    args = parser.parse_args()
    socketserver.TCPServer.allow_reuse_address = True
    hostile = Hostile(("127.0.0.1", 0), Handler)
    threading.Thread(target=hostile.serve_forever, daemon=True).start()
    trickle = f"http://127.0.0.1:{hostile.server_address[1]}"
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(f"sqlite:///{Path(tmp) / 'bench.db'}", Path(tmp) / "data")
        stack.env["CASTFRAME_ALLOW_PRIVATE_URLS"] = "1"
        try:
            base = stack.server()
            pid = stack.procs[-1].pid
            a = (
                stack.run("keys", "create", "--account", "a", "--credits", "100000")
                .strip()
                .splitlines()[-1]
            )
            b = (
                stack.run("keys", "create", "--account", "b", "--credits", "100000")
                .strip()
                .splitlines()[-1]
            )
            quiet = healthz(base, args.healthz)
            rss_before = rss_mb(pid)
            with httpx.Client(base_url=base, timeout=120) as client:
                for index in range(args.jobs):
                    client.post(
                        "/v2/images/generate",
                        json=job(f"{trickle}/ref{index}.png"),
                        headers={"X-API-Key": a},
                    )
                for _ in range(args.webhooks):
                    client.post(
                        "/v2/images/generate",
                        json=job(TINY_PNG_URI, f"{trickle}/hook"),
                        headers={"X-API-Key": a},
                    )
            pool = ThreadPoolExecutor(args.characters)
            for index in range(args.characters):
                pool.submit(
                    httpx.post,
                    f"{base}/v2/characters",
                    json={"name": "x", "image": f"{trickle}/face{index}.png"},
                    headers={"X-API-Key": a},
                    timeout=120,
                )
            time.sleep(2.0)  # the attack is under way
            loud = healthz(base, args.healthz)
            started = time.perf_counter()
            with httpx.Client(base_url=base, timeout=120) as client:
                accepted = client.post(
                    "/v2/images/generate",
                    json=job(TINY_PNG_URI, f"{trickle}/fast"),
                    headers={"X-API-Key": b},
                )
                assert accepted.status_code == 202, accepted.text
                job_id = accepted.json()["jobId"]
                finished = None
                while True:
                    seen = client.get(f"/v2/jobs/{job_id}", headers={"X-API-Key": b}).json()
                    if finished is None and seen["status"] in ("COMPLETED", "FAILED"):
                        finished = time.perf_counter() - started
                    if finished is not None and Hostile.hooks:
                        break
                    time.sleep(0.05)
            other = time.perf_counter() - started
            rss_after = rss_mb(pid)
            print(
                f"/healthz quiet:  p50 {percentile(quiet, 0.5):.1f} ms, "
                f"p99 {percentile(quiet, 0.99):.1f} ms; RSS {rss_before:.0f} MB"
            )
            print(
                f"/healthz attack: p50 {percentile(loud, 0.5):.1f} ms, "
                f"p99 {percentile(loud, 0.99):.1f} ms; RSS {rss_after:.0f} MB"
            )
            print(
                f"account B's job {seen['status']} in {finished:.2f} s, its webhook delivered "
                f"in {other:.2f} s"
            )
            Hostile.stopping.set()
            pool.shutdown(wait=True, cancel_futures=True)
        finally:
            Hostile.stopping.set()
            for proc in stack.procs:
                proc.kill()
            hostile.shutdown()
    sys.exit(0)


if __name__ == "__main__":
    main()
