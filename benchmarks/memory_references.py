"""Memory benchmark: the RSS of a real server process before and after N large references.

One real API process (`castframe serve`: embedded worker, sandbox engine, SQLite), and a
loopback HTTP server that serves ``--count`` different ``--side`` x ``--side`` JPEG
photographs (about 0.75 MB each over the wire at 6000x6000). Each is submitted as a job's
character reference and, alternately, uploaded (POST /v2/uploads) and named by its
``upload://`` reference, so both the fetch path and the decoded-upload cache are exercised.
Printed: the server's RSS before, after all jobs finished, and its peak (VmHWM), against the
documented ceiling (docs/operations.md, "Memory ceiling"); exit status 1 when the settled
RSS is above the retained ceiling.

    python benchmarks/memory_references.py [--count 20] [--side 6000]

Before #24 the decoded uploads and the sandbox's cut-outs were cached by entry count: 20
such references took a server from 109 MB to 10.7 GB and it stayed there.
"""

from __future__ import annotations

import argparse
import http.server
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from queue_bench import Stack, free_port

MB = 1024 * 1024
CACHES_MB = 256 + 96 + 2
"""CASTFRAME_INPUT_CACHE_BYTES (256 MiB) + the cut-out cache (96 MiB) + descriptors (~2)."""
SLACK_MB = 300
"""Allocator fragmentation and the interpreter's own growth over a run (measured)."""


def proc_kb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def photograph(side: int, seed: int) -> bytes:
    """A real photograph (scikit-image's astronaut) scaled to ``side``, tinted per seed."""
    import cv2
    from skimage import data

    pixels = cv2.resize(data.astronaut(), (side, side), interpolation=cv2.INTER_CUBIC)
    pixels = np.clip(pixels.astype(np.int16) + (seed * 7) % 40 - 20, 0, 255).astype(np.uint8)
    ok, encoded = cv2.imencode(".jpg", pixels[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 60])
    assert ok
    return bytes(encoded)


def serve(files: dict[str, bytes]) -> tuple[str, http.server.ThreadingHTTPServer]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return

    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{port}", server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--side", type=int, default=6000)
    args = parser.parse_args()
    files = {f"/ref-{i}.jpg": photograph(args.side, i) for i in range(args.count)}
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sizes = sorted(len(v) for v in files.values())
    print(
        f"{args.count} references of {args.side}x{args.side}, {sizes[0] / MB:.2f}-"
        f"{sizes[-1] / MB:.2f} MB each over the wire"
    )
    origin, http_server = serve(files)
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(f"sqlite:///{tmp}/castframe.db", Path(tmp) / "data")
        stack.env.pop("CASTFRAME_ROUTES", None)  # the real sandbox engine
        stack.env["CASTFRAME_ALLOW_PRIVATE_URLS"] = "true"
        stack.env["CASTFRAME_UPLOAD_RATE_BURST"] = "1000"
        stack.env["CASTFRAME_WORKER_CONCURRENCY"] = "2"
        try:
            stack.run("migrate")
            key = stack.run("keys", "create", "--account", "bench", "--credits", "1000000")
            key = key.split()[-1]
            base = stack.server()
            pid = stack.procs[-1].pid
            headers = {"X-API-Key": key}
            with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
                for _ in range(3):  # warm: imports, first decode, first job
                    client.get("/healthz")
                time.sleep(1.0)
                before = proc_kb(pid, "VmRSS")
                job_ids = []
                for index, (path, raw) in enumerate(files.items()):
                    reference = origin + path
                    if index % 2:
                        uploaded = client.post(
                            "/v2/uploads", files={"file": ("r.jpg", raw, "image/jpeg")}
                        )
                        uploaded.raise_for_status()
                        reference = uploaded.json()["reference"]
                    response = client.post(
                        "/v2/images/generate",
                        json={
                            "prompt": f"portrait {index}",
                            "model": "ideogram-character",
                            "ideogramParams": {
                                "character_reference_image": reference,
                                "rendering_speed": "turbo",
                                "seed": index,
                            },
                        },
                    )
                    response.raise_for_status()
                    job_ids.append(response.json()["jobId"])
                deadline = time.time() + 1800
                statuses: dict[str, str] = {}
                while time.time() < deadline:
                    statuses = {i: client.get(f"/v2/jobs/{i}").json()["status"] for i in job_ids}
                    if all(s in ("COMPLETED", "FAILED") for s in statuses.values()):
                        break
                    time.sleep(1.0)
                time.sleep(2.0)
                after = proc_kb(pid, "VmRSS")
                peak = proc_kb(pid, "VmHWM")
        finally:
            stack.stop()
            http_server.shutdown()
    done = sum(s == "COMPLETED" for s in statuses.values())
    ceiling = before + CACHES_MB + SLACK_MB
    print(f"jobs completed: {done}/{len(job_ids)}")
    print(f"server RSS before: {before:.0f} MB, after: {after:.0f} MB, peak: {peak:.0f} MB")
    print(f"retained ceiling (before + caches {CACHES_MB} + slack {SLACK_MB}): {ceiling:.0f} MB")
    return 0 if after <= ceiling and done == len(job_ids) else 1


if __name__ == "__main__":
    sys.exit(main())
