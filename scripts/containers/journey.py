#!/usr/bin/env python3
"""A client's journey against a running Castframe, for scripts/check_image.sh.

Standard library only, so it runs on any host with Python 3.11, outside the image:

  journey.py receiver --port P --log FILE     a webhook receiver (JSON lines of what came)
  journey.py submit --base URL --key K --ref IMG --hook URL [--count N] [--images N]
                                              upload the reference, submit, print job ids
  journey.py wait-running --base URL --key K ID...   until one of the jobs is PROCESSING
  journey.py settle --base URL --key K --log FILE --credits C ID...
      every job COMPLETED exactly once: one signed `completed` webhook each (Standard
      Webhooks signature checked), every image downloaded and decoded by its magic bytes,
      and the account charged exactly the jobs' credit cost, nothing left held.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import http.server
import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}
PATIENCE = 300.0  # seconds any one wait may take on a slow, shared machine


def call(
    base: str,
    key: str,
    method: str,
    path: str,
    body: Any = None,
    raw: bytes | None = None,
    content_type: str = "application/json",
) -> Any:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(base.rstrip("/") + path, data=data, method=method)
    request.add_header("X-API-Key", key)
    if data is not None:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            payload = response.read()
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"{method} {path}: HTTP {exc.code}: {exc.read()[:500]!r}") from None
    return json.loads(payload) if payload else None


def upload(base: str, key: str, image: Path) -> str:
    boundary = uuid.uuid4().hex
    kind = "image/png" if image.suffix.lower() == ".png" else "image/jpeg"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{image.name}"\r\nContent-Type: {kind}\r\n\r\n'
        ).encode()
        + image.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    answer = call(
        base,
        key,
        "POST",
        "/v2/uploads",
        raw=body,
        content_type=f"multipart/form-data; boundary={boundary}",
    )
    return str(answer["url"])


def cmd_submit(args: argparse.Namespace) -> None:
    reference = upload(args.base, args.key, Path(args.ref))
    for index in range(args.count):
        job = call(
            args.base,
            args.key,
            "POST",
            "/v2/images/generate",
            {
                "prompt": f"a detective in a rainy city street at night, take {index}",
                "model": "ideogram-character",
                "webhookUrl": args.hook,
                "ideogramParams": {
                    "character_reference_image": reference,
                    "rendering_speed": "turbo",
                    "num_images": args.images,
                    "seed": 7 + index,
                },
            },
        )
        assert job["status"] == "QUEUED", job
        print(job["jobId"])


def job_of(base: str, key: str, job_id: str) -> dict[str, Any]:
    return dict(call(base, key, "GET", f"/v2/jobs/{job_id}"))


def cmd_wait_running(args: argparse.Namespace) -> None:
    """Print the first job seen PROCESSING (an engine is on it)."""
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        statuses = {job_id: job_of(args.base, args.key, job_id)["status"] for job_id in args.ids}
        for job_id, status in statuses.items():
            if status == "PROCESSING":
                print(job_id)
                return
        if all(status in TERMINAL for status in statuses.values()):
            raise SystemExit("every job ended before one was seen PROCESSING")
        time.sleep(0.05)
    raise SystemExit("no job started processing")


def cmd_receiver(args: argparse.Namespace) -> None:
    log = Path(args.log)

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            entry = {
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": base64.b64encode(body).decode(),
            }
            with log.open("a") as handle:
                handle.write(json.dumps(entry) + "\n")
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    http.server.ThreadingHTTPServer((args.bind, args.port), Hook).serve_forever()


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Standard Webhooks: base64 HMAC-SHA256 of "id.timestamp.body" under the whsec_ key."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(expected, sig) for sig in headers["webhook-signature"].split())


def cmd_settle(args: argparse.Namespace) -> None:
    deadline = time.monotonic() + PATIENCE
    jobs: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        jobs = {job_id: job_of(args.base, args.key, job_id) for job_id in args.ids}
        if all(job["status"] in TERMINAL for job in jobs.values()):
            break
        time.sleep(0.5)
    for job_id, job in jobs.items():
        if job["status"] != "COMPLETED":
            raise SystemExit(
                f"job {job_id}: {job['status']} {job.get('errorCode')} {job.get('error')}"
            )
        for url in job["result"]["images"]:
            with urllib.request.urlopen(url, timeout=60) as response:
                data = response.read()
            if not (
                data.startswith(b"\x89PNG\r\n\x1a\n")
                or data.startswith(b"\xff\xd8\xff")
                or data[8:12] == b"WEBP"
            ):
                raise SystemExit(f"job {job_id}: {url} is not an image")
    secret = call(args.base, args.key, "GET", "/v2/account/webhook-secret")["secret"]
    completed: dict[str, set[str]] = {job_id: set() for job_id in args.ids}
    while time.monotonic() < deadline:
        completed = {job_id: set() for job_id in args.ids}
        lines = Path(args.log).read_text().splitlines() if Path(args.log).exists() else []
        for line in lines:
            entry = json.loads(line)
            body = base64.b64decode(entry["body"])
            if not verify(secret, entry["headers"], body):
                raise SystemExit(f"a webhook with a bad signature: {entry['headers']}")
            event = json.loads(body)
            if event["jobId"] in completed and event["event"] == "completed":
                completed[event["jobId"]].add(entry["headers"]["webhook-id"])
        if all(completed.values()):
            break
        time.sleep(0.5)
    for job_id, deliveries in completed.items():
        if len(deliveries) != 1:
            raise SystemExit(f"job {job_id}: {len(deliveries)} `completed` webhooks, not 1")
    account = call(args.base, args.key, "GET", "/v2/account")
    cost = sum(int(job["creditCost"]) for job in jobs.values())
    if (account["balance"], account["held"]) != (args.credits - cost, 0):
        raise SystemExit(f"account {account} after jobs costing {cost} of {args.credits}")
    images = sum(len(job["result"]["images"]) for job in jobs.values())
    print(
        f"{len(jobs)} jobs COMPLETED once each: {images} images downloaded, "
        f"{len(jobs)} signed webhooks verified, {cost} credits charged, none held"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    receiver = sub.add_parser("receiver")
    receiver.add_argument("--bind", default="0.0.0.0")
    receiver.add_argument("--port", type=int, required=True)
    receiver.add_argument("--log", required=True)
    for name in ("submit", "wait-running", "settle"):
        command = sub.add_parser(name)
        command.add_argument("--base", required=True)
        command.add_argument("--key", required=True)
        if name == "submit":
            command.add_argument("--ref", required=True)
            command.add_argument("--hook", required=True)
            command.add_argument("--count", type=int, default=1)
            command.add_argument("--images", type=int, default=1)
        else:
            command.add_argument("ids", nargs="+")
        if name == "settle":
            command.add_argument("--log", required=True)
            command.add_argument("--credits", type=int, required=True)
    args = parser.parse_args()
    {
        "receiver": cmd_receiver,
        "submit": cmd_submit,
        "wait-running": cmd_wait_running,
        "settle": cmd_settle,
    }[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
