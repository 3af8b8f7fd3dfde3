"""The process's long-lived parts, built once from Settings and shared by API and worker."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from castframe.config import Settings
from castframe.dispatch.inputs import InputLoader
from castframe.dispatch.worker import Worker
from castframe.engines.router import (
    EngineRegistry,
    Routing,
    validate_engine_settings,
)
from castframe.jobs import fleet
from castframe.jobs.fleet import LiveModels
from castframe.jobs.keycache import KeyCache
from castframe.jobs.record import Job
from castframe.jobs.retention import Policy as RetentionPolicy
from castframe.jobs.submitter import Submitter
from castframe.jobs.views import job_view
from castframe.jobs.watch import JobWatcher
from castframe.media.signing import EXPIRED_PREFIX, signed_url
from castframe.media.storage import Storage, make_storage
from castframe.store.db import Database
from castframe.store.migrate import upgrade
from castframe.store.notify import (
    JOB_CHANGES_CHANNEL,
    JOBS_CHANNEL,
    KEYS_CHANNEL,
    WEBHOOKS_CHANNEL,
    NoticeAnnouncer,
    Notifier,
    PostgresListener,
)
from castframe.webhooks.sender import WebhookSender

log = logging.getLogger("castframe")


@dataclass
class Services:
    settings: Settings
    db: Database
    storage: Storage
    engines: EngineRegistry
    job_notifier: Notifier = field(default_factory=Notifier)
    webhook_notifier: Notifier = field(default_factory=Notifier)
    worker: Worker | None = None
    sender: WebhookSender | None = None
    listener: PostgresListener | None = None
    submitter: Submitter = field(init=False)
    key_cache: KeyCache = field(init=False)
    inputs: InputLoader = field(init=False)
    routing: Routing = field(init=False)
    """Image sources read outside jobs (saved characters); uploads cached decoded."""
    watcher: JobWatcher = field(init=False)
    """Live status: the one reader of watched jobs (event streams, ``Prefer: wait``)."""
    announcer: NoticeAnnouncer | None = field(init=False, default=None)
    """On PostgreSQL: this process's committed job changes, NOTIFYed to the others."""

    live: LiveModels = field(init=False)
    """Which models live workers serve, read at most every few seconds (jobs/fleet.py)."""

    def __post_init__(self) -> None:
        self.live = LiveModels()
        self.submitter = Submitter(self.db, self.storage, self.settings)
        self.inputs = InputLoader(self.db, self.storage, self.settings)
        self.routing = Routing(self.settings)
        self.key_cache = KeyCache(self.settings.resolved_key_cache_seconds)
        self.watcher = JobWatcher(
            self.db,
            self.view,
            per_key=self.settings.live_listeners_per_key,
            total=self.settings.live_listeners,
            reread_seconds=self.settings.live_reread_seconds,
        )
        # This process's committed job changes reach its own listeners directly, and (on
        # PostgreSQL) other processes' through one coalesced NOTIFY (store/notify.py).
        self.db.wakeups.subscribe_ids(JOB_CHANGES_CHANNEL, self.watcher.notice)
        if self.db.is_postgres:
            self.announcer = NoticeAnnouncer(self.db.url, JOB_CHANGES_CHANNEL)
            self.db.wakeups.subscribe_ids(JOB_CHANGES_CHANNEL, self.announcer.add)

    @classmethod
    def build(cls, settings: Settings, migrate: bool = True) -> Services:
        validate_engine_settings(settings)
        db = Database(settings.resolved_database_url)
        if migrate:
            upgrade(db.engine)
        storage = make_storage(settings)
        if settings.allow_private_urls:
            log.warning(
                "CASTFRAME_ALLOW_PRIVATE_URLS is set: outbound fetches and webhooks may "
                "reach private and loopback addresses. Use only for development/tests."
            )
        return cls(settings=settings, db=db, storage=storage, engines=EngineRegistry(settings))

    def start_listener(
        self, jobs: bool, webhooks: bool, keys: bool = False, live: bool = False
    ) -> None:
        """On PostgreSQL, act on other processes' NOTIFYs: wake this process's worker or
        sender, drop its cached key lookups, tell its live-status reader (``live``: API
        processes) which jobs changed."""
        if not self.db.is_postgres or not (jobs or webhooks or keys or live):
            return
        routes: dict[str, Callable[[], None]] = {}
        if jobs:
            routes[JOBS_CHANNEL] = self.job_notifier.notify
        if webhooks:
            routes[WEBHOOKS_CHANNEL] = self.webhook_notifier.notify
        if keys:
            routes[KEYS_CHANNEL] = self.key_cache.clear
        payload_routes: dict[str, Callable[[str, int], None]] = {}
        if live:
            payload_routes[JOB_CHANGES_CHANNEL] = self._job_changes_elsewhere
        self.listener = PostgresListener(self.db.url, routes, payload_routes)
        self.listener.start()

    def _job_changes_elsewhere(self, payload: str, sender_pid: int) -> None:
        """A job-changes NOTIFY; this process's own (sent by its announcer) are skipped: its
        listeners heard of those at commit."""
        if self.announcer is None or sender_pid != self.announcer.pid:
            self.watcher.notice_payload(payload)

    def url_for(self, key: str) -> str:
        return self.storage.url(key, self.settings.output_url_ttl)

    def view(self, job: Job) -> dict[str, Any]:
        """The job as clients see it, its links signed now: the one place that picks the
        links (storage's own, or, once retention expired the job, this server's 410 ones),
        for the API, the live streams and webhooks alike."""
        expired = RetentionPolicy.from_settings(self.settings).outputs_expired(job, time.time())
        return job_view(job, self.url_for, self.expired_url_for, expired)

    def expired_url_for(self, key: str) -> str:
        """This server's own signed link to a file retention deleted, whatever the storage:
        ``/v2/files`` answers it ``410 output_expired`` (jobs/views.py: ``job_view``)."""
        settings = self.settings
        return signed_url(
            settings.resolved_public_url,
            settings.signing_key,
            EXPIRED_PREFIX + key,
            settings.output_url_ttl,
        )

    def live_models(self) -> frozenset[str] | None:
        """The models some live worker serves now (None: a live worker serves every one)."""
        with self.db.read() as conn:
            return fleet.live_models(conn, self.settings.lease_seconds)

    def cached_live_models(self) -> frozenset[str] | None:
        """``live_models`` as read at most a few seconds ago (the API's reads)."""
        return self.live.value(self.live_models)

    def models_without_worker(self) -> list[str]:
        """The served models (GET /v2/models) that no live worker serves: their jobs wait."""
        return fleet.unserved(list(self.routing.served()), self.cached_live_models())

    def has_worker(self, model: str) -> bool:
        """Whether a live worker serves ``model`` (cached for a few seconds: submission)."""
        return self.live.serves(model, self.live_models)

    def start_worker(
        self,
        concurrency: int | None = None,
        devices: list[str] | None = None,
        models: list[str] | None = None,
    ) -> Worker:
        """``models``: the only models it serves (default ``CASTFRAME_WORKER_MODELS``)."""
        devices = devices or self.settings.worker_device_list
        if "diffusers" in Routing(self.settings).served().values():
            # Load the weights once per device, before the first job.
            for registry in [self.engines.for_device(name) for name in devices] or [self.engines]:
                registry.get("diffusers")
        self.worker = Worker(
            self.settings,
            self.db,
            self.storage,
            self.engines,
            self.job_notifier,
            concurrency,
            devices,
            models,
        )
        self.worker.start()
        return self.worker

    def start_sender(self) -> WebhookSender:
        self.sender = WebhookSender(self.settings, self.db, self.view, self.webhook_notifier)
        self.sender.start()
        return self.sender

    def stop(self, grace: float = 30.0) -> None:
        if self.worker:
            self.worker.stop(grace)
        if self.sender:
            self.sender.stop()
        if self.listener:
            self.listener.stop()
        self.watcher.stop()
        if self.announcer:
            self.announcer.stop()  # after the worker: its last changes are announced
        self.db.dispose()


def weights_table() -> dict[str, tuple[str, str]]:
    """The diffusers engine's weights keys -> (official hub repository, licence), for
    ``castframe weights list``."""
    from castframe.engines.open_weights.weights import WEIGHTS

    return {key: (item.hub_id, item.licence) for key, item in WEIGHTS.items()}


def download_weights(key: str, repo: str | None = None, to: Path | None = None) -> Path:
    """``castframe weights download``: fetch a model's weights once, on the operator's
    machine (engines/open_weights/weights.py: ``download``)."""
    from castframe.engines.open_weights.weights import download

    return download(key, repo, to)
