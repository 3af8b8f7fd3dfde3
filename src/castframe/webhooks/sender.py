"""Delivers due webhook rows: claim with a lease, POST through the safe fetcher, record, retry.

A dispatcher thread claims due deliveries and hands each to a small thread pool, so one slow
or dead receiver never delays other receivers, and never touches job workers. The bounds:

- an attempt has one wall-clock deadline, ``CASTFRAME_WEBHOOK_TIMEOUT`` (15 s), from connect
  to the status line and headers (media/deadline.py cuts a receiver that trickles them); the
  body is never read: a 2xx status line is a delivery, whatever the body then does;
- at most one attempt per delivery is in flight: before it connects, the sender renews the
  delivery's lease to outlive that deadline (``DELIVERY_LEASE_MARGIN`` more), and sends
  nothing if the lease has moved on; every attempt made is logged;
- one account has at most ``CASTFRAME_WEBHOOK_ACCOUNT_CONCURRENCY`` deliveries in flight, so
  its backlog or slow receivers leave the other slots to other accounts;
- an address that is not allowed (``url_not_allowed``: a private address, resolved at
  delivery) is final: it is not retried for a day.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from castframe.config import Settings
from castframe.jobs import store as job_store
from castframe.jobs.accounts import get_account, webhook_secrets
from castframe.jobs.record import Job
from castframe.media.fetch import FetchError, FetchPolicy, fetch
from castframe.metrics import WEBHOOK_ATTEMPTS
from castframe.store.db import Database, is_transient
from castframe.store.notify import WEBHOOKS_CHANNEL, Notifier
from castframe.webhooks.payloads import event_payload
from castframe.webhooks.signing import signature_headers

log = logging.getLogger("castframe.webhooks")


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None
    latency_ms: float
    retry_after: float | None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def next_delay(
    schedule: list[float], attempts: int, retry_after: float | None, rng: random.Random
) -> float | None:
    """Seconds until the next try after ``attempts`` failed tries, or None to give up."""
    if attempts > len(schedule):
        return None
    delay = schedule[attempts - 1] * rng.uniform(0.9, 1.1)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


def parse_retry_after(value: str | None) -> float | None:
    if value and value.strip().isdigit():
        return min(float(value.strip()), 24 * 3600.0)
    return None


class WebhookSender:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        view: Callable[[Job], dict[str, Any]],
        notifier: Notifier,
    ) -> None:
        self.settings = settings
        self.db = db
        self.view = view
        self.notifier = notifier
        db.wakeups.subscribe(WEBHOOKS_CHANNEL, notifier.notify)
        self._stopping = threading.Event()
        self._pool = ThreadPoolExecutor(settings.webhook_concurrency, "castframe-webhook")
        self._slots = threading.Semaphore(settings.webhook_concurrency)
        self._thread: threading.Thread | None = None
        self._rng = random.Random()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="castframe-webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self.notifier.notify()
        if self._thread:
            self._thread.join(5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _loop(self) -> None:
        outage = False
        while not self._stopping.is_set():
            try:
                claimed = self._dispatch_due()
                outage = False
            except Exception as exc:
                if not is_transient(exc):
                    log.exception("claiming webhook deliveries failed")
                elif not outage:  # one line per outage, not one per poll
                    log.warning("cannot claim webhook deliveries: the database is unavailable")
                outage = is_transient(exc)
                claimed = 0
            if not claimed:
                self.notifier.wait(min(self.settings.poll_interval, 1.0))

    def _dispatch_due(self) -> int:
        claimed = 0
        while not self._stopping.is_set() and self._slots.acquire(timeout=0.5):
            with self.db.write() as conn:
                delivery = job_store.claim_due_delivery(
                    conn, time.time(), self.settings.webhook_account_concurrency
                )
            if delivery is None:
                self._slots.release()
                break
            claimed += 1
            self._pool.submit(self._deliver_and_release, delivery)
        return claimed

    def _deliver_and_release(self, delivery: dict[str, Any]) -> None:
        try:
            self.deliver(delivery)
        except Exception:
            log.exception("webhook %s: delivery crashed", delivery["id"])
        finally:
            self._slots.release()
            # A slot is free, and its account may be under its cap again: claim at once
            # rather than at the next poll.
            self.notifier.notify()

    def render(self, delivery: dict[str, Any]) -> tuple[bytes, dict[str, str]] | None:
        with self.db.read() as conn:
            job = job_store.find_job(conn, delivery["job_id"])
            account = get_account(conn, delivery["account_id"])
        if job is None or account is None:
            return None
        view = self.view(job)
        payload = event_payload(delivery["event"], view, json.loads(delivery["payload"] or "{}"))
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = signature_headers(
            body,
            delivery["id"],
            delivery["event"],
            webhook_secrets(account, job.mode),
            job.webhook_key_hash,
        )
        return body, headers

    def deliver(self, delivery: dict[str, Any]) -> Outcome:
        rendered = self.db.retry(
            lambda: self.render(delivery), f"rendering webhook {delivery['id']}", self._stopping
        )
        if rendered is None:
            outcome = Outcome(None, "job or account no longer exists", 0.0, None)
            self._record(delivery, outcome, give_up=True)
            return outcome
        body, headers = rendered
        deadline = self.settings.webhook_timeout
        leased = self.db.retry_write(
            lambda conn: job_store.renew_delivery_lease(
                conn, delivery, time.time() + deadline + job_store.DELIVERY_LEASE_MARGIN
            ),
            f"leasing webhook {delivery['id']}",
            self._stopping,
        )
        if leased is None:  # taken over while it was rendered: the other sender sends it
            log.info("webhook %s: lease moved on before sending; not sent", delivery["id"])
            return Outcome(None, "lease moved on", 0.0, None)
        policy = FetchPolicy.from_settings(
            self.settings,
            read_timeout=deadline,
            connect_timeout=min(5.0, deadline),
            total_timeout=deadline,
            read_body=False,
            follow_redirects=False,
        )
        started = time.monotonic()
        give_up = False
        try:
            response = fetch(leased["url"], policy, method="POST", headers=headers, content=body)
            outcome = Outcome(
                response.status_code,
                None,
                (time.monotonic() - started) * 1000,
                parse_retry_after(response.headers.get("retry-after")),
            )
            give_up = response.status_code == 410
        except FetchError as exc:
            outcome = Outcome(None, exc.message, (time.monotonic() - started) * 1000, None)
            give_up = exc.code == "url_not_allowed"
        self._record(leased, outcome, give_up=give_up)
        return outcome

    def _record(self, delivery: dict[str, Any], outcome: Outcome, give_up: bool) -> None:
        now = time.time()
        attempts = int(delivery["attempts"]) + 1
        if outcome.ok:
            status, next_at = "delivered", now
        elif give_up or not delivery["final"]:
            status, next_at = "failed", now
        else:
            delay = next_delay(
                self.settings.retry_schedule, attempts, outcome.retry_after, self._rng
            )
            status, next_at = ("failed", now) if delay is None else ("failing", now + delay)
        outcome_label = {"delivered": "sent", "failing": "retry"}.get(status, "failed")
        WEBHOOK_ATTEMPTS.labels(delivery["event"], outcome_label).inc()
        if status == "failed" and delivery["final"]:
            log.error(
                "webhook %s for job %s gave up after %d attempts (last: %s)",
                delivery["id"],
                delivery["job_id"],
                attempts,
                outcome.status_code or outcome.error,
            )
        attempt = {
            "attempted_at": now,
            "status_code": outcome.status_code,
            "latency_ms": round(outcome.latency_ms, 2),
            "error": outcome.error,
        }
        # Retried across a database blink: an attempt that is not recorded would be made again
        # once its lease ran out (receivers dedupe by webhook-id, but should rarely have to).
        recorded = self.db.retry_write(
            lambda conn: job_store.record_attempt(conn, delivery, attempt, status, next_at),
            f"recording webhook {delivery['id']}",
            self._stopping,
        )
        if not recorded:  # recorded by the run whose acknowledgement was lost, or taken over
            log.info("webhook %s: attempt not recorded again (lease moved on)", delivery["id"])
        if status == "failing":
            self.notifier.notify()
