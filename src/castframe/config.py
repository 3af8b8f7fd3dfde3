"""Settings, read from the environment (prefix ``CASTFRAME_``) with embedded defaults.

Every default is chosen so that a fresh clone runs on one laptop with nothing configured:
SQLite and local files under ``.castframe/``, an in-process worker, the sandbox engine.
"""

from __future__ import annotations

import os
import secrets
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

ENV_PREFIX = "CASTFRAME_"
FILE_SUFFIX = "_FILE"


class ConfigFileError(ValueError):
    """A ``CASTFRAME_<NAME>_FILE`` setting that cannot be used (unreadable, or set twice)."""


class _FileSecretsSource(PydanticBaseSettingsSource):
    """``CASTFRAME_<NAME>_FILE=/path``: the setting's value is that file's contents.

    The convention of container secrets (Docker and Podman secrets, Kubernetes secret
    volumes): a key need never sit in the environment, where ``inspect`` and child processes
    see it. It works for every setting (the Ideogram and BFL keys, the signing key, database
    and S3 credentials). The file's surrounding whitespace (its trailing newline) is dropped.
    Setting both ``CASTFRAME_<NAME>`` and ``CASTFRAME_<NAME>_FILE`` is an error, never a guess.
    """

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        # Unused: __call__ reads every field at once.
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        environ = {name.upper(): value for name, value in os.environ.items()}
        values: dict[str, Any] = {}
        for field_name in self.settings_cls.model_fields:
            env_name = f"{ENV_PREFIX}{field_name.upper()}"
            file_var = env_name + FILE_SUFFIX
            path = environ.get(file_var)
            if not path:
                continue
            if environ.get(env_name):
                raise ConfigFileError(f"set {env_name} or {file_var}, not both")
            try:
                values[field_name] = Path(path).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                raise ConfigFileError(f"{file_var}: cannot read {path}: {reason}") from None
        return values


def comma_list(value: str) -> list[str]:
    """A comma-separated setting's entries, stripped, empty ones dropped (``"a, ,b"`` ->
    ``["a", "b"]``): how every list-valued ``CASTFRAME_*`` variable is read."""
    return [entry.strip() for entry in value.split(",") if entry.strip()]


class Settings(BaseSettings):
    """All runtime configuration. The README's configuration table mirrors these fields."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then ``CASTFRAME_<NAME>_FILE`` files, then the environment (a file
        wins over an empty variable; a file beside a non-empty variable is an error)."""
        return (
            init_settings,
            _FileSecretsSource(settings_cls),
            env_settings,
            dotenv_settings,
            file_secret_settings,
        )

    data_dir: Path = Field(
        default=Path(".castframe"), description="Local state: SQLite database, files, secrets."
    )
    database_url: str = Field(
        default="", description="SQLAlchemy URL (`postgresql://...`); empty = SQLite in data_dir."
    )
    public_url: str = Field(
        default="", description="Base URL put in signed file links; empty = http://HOST:PORT."
    )
    host: str = Field(default="127.0.0.1", description="Address `castframe serve` binds.")
    port: int = Field(default=8000, description="Port `castframe serve` listens on.")
    secret_key: str = Field(
        default="", description="HMAC key for signed URLs; empty = generated once in data_dir."
    )

    worker_enabled: bool = Field(default=True, description="Run a worker inside `serve`.")
    worker_concurrency: int = Field(default=2, ge=1, le=64, description="Jobs run in parallel.")
    worker_devices: str = Field(
        default="",
        description="Comma-separated devices (cuda:0,cuda:1): one pipeline and engine instance "
        "per device, one engine call at a time on each; empty: worker_concurrency pipelines "
        "sharing one engine.",
    )
    worker_models: str = Field(
        default="",
        description="Comma-separated model ids this worker serves (`castframe worker "
        "--models`): it claims only their jobs. Empty: every model.",
    )
    worker_affinity_seconds: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="How long a lane keeps claiming jobs of the model it has loaded, after "
        "switching to it, before it claims in queue order again (switching models if the "
        "queue's head is another's): the starvation bound of model affinity. 0: queue order.",
    )
    unserved_models: Literal["queue", "reject"] = Field(
        default="queue",
        description="A submission for a model no live worker serves: `queue` (it waits for "
        "one) or `reject` (503 model_unavailable).",
    )
    postprocess_queue: int = Field(
        default=2,
        ge=1,
        le=16,
        description="Finished jobs that may wait for post-processing (scoring, encoding, "
        "storage) per pipeline before its engine waits (about 4.5 MiB per 1024x1024 image).",
    )
    completion_linger_ms: float = Field(
        default=2.0,
        ge=0,
        le=1000,
        description="How long a finished job waits for the worker's other busy slots to finish "
        "too, so that they complete in one transaction (0: complete each at once).",
    )
    lease_seconds: float = Field(
        default=30.0, gt=0, description="A job whose worker is silent this long is taken over."
    )
    poll_interval: float = Field(default=1.0, gt=0, description="Safety-net poll of the queue (s).")
    max_attempts: int = Field(
        default=3, ge=1, description="Claims of one job (crashes, retries) before it fails."
    )
    retry_base_seconds: float = Field(
        default=2.0, ge=0, description="First backoff of a retryable engine error (doubles)."
    )

    allow_private_urls: bool = Field(
        default=False, description="Let fetches and webhooks reach private IPs (dev/tests only)."
    )
    trusted_hosts: str = Field(
        default="", description="Comma-separated host names exempt from the private-IP rule."
    )
    fetch_timeout: float = Field(
        default=20.0, gt=0, description="Read timeout of image fetches (each socket read)."
    )
    fetch_deadline: float = Field(
        default=60.0,
        gt=0,
        description="Wall-clock limit of one image fetch (references, style images, saved "
        "characters, engine downloads): connect, status line, headers and body, redirects "
        "included, enforced outside the socket's read timeout.",
    )
    character_concurrency: int = Field(
        default=4,
        ge=1,
        description="Saved-character creations (fetch, decode, face check) one API process "
        "runs at once, outside the request thread pool; as many again may wait for a slot, "
        "beyond that 503 `characters_busy`.",
    )
    max_image_bytes: int = Field(
        default=20 * 1024 * 1024, gt=0, description="Largest input image, in bytes."
    )
    max_image_pixels: int = Field(
        default=40_000_000, gt=0, description="Largest input image, in pixels (bomb guard)."
    )
    input_cache_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=0,
        description="Bytes of decoded uploads each process keeps in memory (references reused "
        "by saved characters and SDK uploads skip the read and decode); 0 turns it off.",
    )
    reference_max_side: int = Field(
        default=2048,
        ge=256,
        description="Character and style references are downscaled to this longer side after "
        "decoding, before they are cached or handed to an engine (which works at a smaller "
        "size anyway). Edit images and masks are kept at full size.",
    )
    max_body_bytes: int = Field(
        default=30 * 1024 * 1024, gt=0, description="Largest JSON request body, in bytes."
    )
    body_read_timeout: float = Field(
        default=30.0,
        gt=0,
        description="Seconds a request body (JSON or upload) may take to arrive in full; then "
        "400 `body_timeout` and the connection is closed.",
    )

    output_url_ttl: int = Field(default=3600, gt=0, description="Seconds a signed URL lives.")
    upload_retention_hours: float = Field(
        default=24.0,
        gt=0,
        description="How long an upload's URL works (its `expiresAt`) for new submissions; "
        "after it the retention sweeper deletes its file and row, once no queued or running "
        "job uses it.",
    )
    output_retention_hours: float = Field(
        default=24.0,
        ge=0,
        description="Hours a finished job's files (outputs and inline inputs) are kept, as "
        "Apiframe does; then they are deleted and the job reads `expired: true` (0: keep "
        "forever).",
    )
    output_retention_delete_files: bool = Field(
        default=True,
        description="Let the sweeper delete expired jobs' output files; false: only mark the "
        "jobs expired, leaving the files to a storage lifecycle rule on `outputs/`.",
    )
    job_retention_days: float = Field(
        default=0.0,
        ge=0,
        description="Days a finished job's row (and its webhook deliveries) is kept; then it "
        "is deleted, its ledger entries kept (0: keep forever).",
    )
    webhook_attempt_retention_days: float = Field(
        default=30.0,
        ge=0,
        description="Days a finished webhook delivery and its attempt log are kept (0: keep "
        "forever).",
    )
    retention_sweep_seconds: float = Field(
        default=300.0,
        gt=0,
        description="Seconds between the retention sweeper's passes in each worker.",
    )
    retention_batch: int = Field(
        default=500,
        ge=1,
        description="Most items of each kind (jobs, uploads, deliveries, files) one sweeper "
        "pass handles; a full pass is followed by another one second later.",
    )
    storage_url: str = Field(
        default="", description="`s3://bucket/prefix` for S3-compatible storage; empty = data_dir."
    )
    s3_endpoint_url: str = Field(default="", description="S3 endpoint (MinIO, R2...); empty = AWS.")
    s3_region: str = Field(default="us-east-1", description="S3 region.")
    s3_access_key_id: str = Field(default="", description="S3 key id; empty = boto3's chain.")
    s3_secret_access_key: str = Field(default="", description="S3 secret; empty = boto3's chain.")

    rate_limit_per_second: float = Field(
        default=10.0, gt=0, description="Submissions per second per key (token refill)."
    )
    rate_limit_burst: int = Field(default=20, ge=1, description="Token bucket size per key.")
    upload_rate_per_second: float = Field(
        default=2.0,
        gt=0,
        description="Uploads (POST /v2/uploads) per second per account (token refill); "
        "beyond the burst, 429 rate_limited.",
    )
    upload_rate_burst: int = Field(default=20, ge=1, description="Upload bucket size per account.")
    character_rate_per_second: float = Field(
        default=0.5,
        gt=0,
        description="Saved-character creations (POST /v2/characters) per second per account "
        "(token refill); beyond the burst, 429 rate_limited.",
    )
    character_rate_burst: int = Field(
        default=5, ge=1, description="Saved-character creation bucket size per account."
    )
    upload_quota_bytes: int = Field(
        default=2 * 1024 * 1024 * 1024,
        ge=0,
        description="Bytes of stored uploads (multipart uploads, saved characters' images, "
        "inline images of unfinished jobs) an account may hold, both modes together; a new "
        "upload or character beyond it is 507 storage_quota_exceeded. 0: no quota.",
    )
    key_cache_seconds: float | None = Field(
        default=None,
        ge=0,
        description="Reuse an API-key lookup for this long in each API process (0 = never). "
        "Unset: 5 on PostgreSQL, where a key change clears every process's cache at once; 0 "
        "on SQLite, where a change made by another process (the CLI) would only show after it.",
    )
    max_active_jobs: int = Field(
        default=50, ge=1, description="Unfinished jobs an account may have at once."
    )
    submit_batch_max: int = Field(
        default=64,
        ge=1,
        description="Most concurrent submissions one API process writes in one transaction "
        "(group commit: nothing waits for a batch to fill); 1 writes each in its own.",
    )
    live_listeners_per_key: int = Field(
        default=100,
        ge=1,
        description="Live-status listeners (`GET /v2/jobs/{id}/events` streams, `Prefer: wait` "
        "submissions) one API key may hold in each API process: twice the default active-job "
        "limit. Beyond it: 429 too_many_listeners.",
    )
    live_listeners: int = Field(
        default=2000,
        ge=1,
        description="Live-status listeners one API process holds in all (each is an open "
        "connection: raise `ulimit -n` to match). Beyond it: 503 listeners_exhausted; a "
        "`Prefer: wait` submission is answered 202 as without the header instead.",
    )
    live_reread_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="How often an API process re-reads all its watched jobs in one query: the "
        "safety net for missed wake-ups, and the only source of another process's changes on "
        "SQLite.",
    )
    idempotency_ttl_hours: float = Field(
        default=24.0, gt=0, description="How long an Idempotency-Key is remembered."
    )

    webhook_timeout: float = Field(
        default=15.0,
        gt=0,
        description="Wall-clock limit of one delivery attempt, connect to status line (the "
        "receiver's body is not read); enforced outside the socket's read timeout.",
    )
    webhook_retry_schedule: str = Field(
        default="5,300,1800,7200,18000,36000,50400,72000,86400",
        description="Comma-separated seconds between delivery attempts (Standard Webhooks).",
    )
    webhook_concurrency: int = Field(
        default=8, ge=1, description="Deliveries in flight per process."
    )
    webhook_account_concurrency: int = Field(
        default=2,
        ge=1,
        description="Deliveries of one account in flight at once (all senders together): "
        "one account's backlog or slow receiver never holds the other slots.",
    )
    redeliver_per_minute: float = Field(
        default=10.0,
        gt=0,
        description="Webhook redeliveries (`POST /v2/jobs/{id}/webhooks/redeliver`) per "
        "minute per API key (token refill); the bucket holds as many.",
    )

    prices: dict[str, int | dict[str, int]] = Field(
        default_factory=dict,
        description="Credits per output by model, over the catalog's defaults (JSON): a "
        'number for every tier, or tiers by name, e.g. `{"<model id>": 4, "<other id>": '
        '{"turbo": 12}}`. GET /v2/models shows the prices in force.',
    )
    routes: str = Field(
        default="",
        description="Which engine serves each model for live keys: comma-separated "
        "`pattern=engine`, first match wins (`ideogram-*=ideogram,flux-*=sandbox`); "
        "engines: sandbox, ideogram, bfl, diffusers, tools, or a plug-in `package.module:Factory`. Unmatched "
        "models go to their provider's engine when its key is set, else the sandbox. Test keys "
        "always use the sandbox.",
    )
    diffusers_model: str = Field(
        default="",
        description="Local diffusers pipeline directory for the character model (FLUX.2 "
        "klein or Qwen-Image-Edit-Plus).",
    )
    diffusers_models: dict[str, str] = Field(
        default_factory=dict,
        description="Weights of the open models the `diffusers` engine serves (JSON: model id "
        '-> local directory or downloaded hub id), e.g. `{"<model id>": "/weights/dir", '
        '"<other id>": "Org/Repo"}`; Qwen-Image\'s edit weights go under `<its id>:edit`. '
        "Checked at start; `castframe weights list` names the keys, `castframe weights "
        "download` fetches them.",
    )
    diffusers_flux_2_dev: bool = Field(
        default=False,
        description="Serve FLUX.2 [dev] on `diffusers` (its weights in "
        "CASTFRAME_DIFFUSERS_MODELS). FLUX.2 [dev] is under the FLUX [dev] Non-Commercial "
        "License: turn this on only to run non-commercially or with a commercial licence "
        "from Black Forest Labs.",
    )
    diffusers_device: str = Field(default="auto", description="cuda, cuda:N, cpu or auto.")
    diffusers_compile: bool = Field(
        default=False, description="Regional torch.compile of the transformer's repeated blocks."
    )
    diffusers_first_block_cache: bool = Field(
        default=False, description="First-block cache (skips near-identical steps)."
    )
    diffusers_channels_last: bool = Field(default=False, description="channels_last VAE.")
    diffusers_lora: str = Field(
        default="",
        description="Local LoRA weights fused at start (e.g. Qwen-Image-Lightning): switches "
        "the family to its few-step preset.",
    )
    diffusers_batch_images: bool = Field(
        default=False,
        description="Run a job's images in one batched pipeline call (faster on a GPU; "
        "progress then counts steps of the whole batch).",
    )
    tool_max_output_pixels: int = Field(
        default=64_000_000,
        gt=0,
        description="Largest output of an image tool (upscale, background removal), in pixels: "
        "a request whose output would be larger is a 400 at submission.",
    )
    upscale_weights: Path | None = Field(
        default=None,
        description="A Real-ESRGAN x4plus PyTorch checkpoint (`RealESRGAN_x4plus.pth`) for the "
        "upscale models, run on `CASTFRAME_UPSCALE_DEVICE` (needs torch); unset: the bundled "
        "ncnn model on the CPU.",
    )
    upscale_device: str = Field(
        default="auto", description="cuda, cuda:N, cpu or auto, for `CASTFRAME_UPSCALE_WEIGHTS`."
    )
    bg_remove_851_weights: Path | None = Field(
        default=None,
        description="transparent-background's InSPyReNet checkpoint (`ckpt_base.pth` or "
        "`ckpt_fast.pth`) for 851 Labs' remover; unset: the bundled U2-Net-P runs.",
    )
    bg_remove_bria_weights: Path | None = Field(
        default=None, description="RMBG-2.0 as an ONNX file, for Bria's remover."
    )
    bg_remove_bria_enabled: bool = Field(
        default=False,
        description="Serve Bria's remover from the RMBG-2.0 weights above: RMBG-2.0 is "
        "licensed CC BY-NC 4.0 (non-commercial without Bria's agreement), so it is off unless "
        "the operator turns it on.",
    )
    ideogram_api_key: str = Field(default="", description="Ideogram API key (enables `ideogram`).")
    ideogram_base_url: str = Field(
        default="https://api.ideogram.ai", description="Ideogram API base URL."
    )
    ideogram_concurrency: int = Field(
        default=8, ge=1, description="Upstream Ideogram calls in flight per process."
    )
    ideogram_timeout: float = Field(
        default=120.0,
        gt=0,
        description="Wall-clock limit of one Ideogram call (connect, upload, response), "
        "enforced outside the socket's read timeout.",
    )
    ideogram_max_retries: int = Field(
        default=3, ge=0, description="Retries of 429/5xx/connection errors before failing."
    )
    ideogram_retry_base: float = Field(
        default=2.0, ge=0, description="First Ideogram retry backoff in seconds (doubles)."
    )
    bfl_api_key: str = Field(
        default="", description="Black Forest Labs API key (enables `bfl`: the FLUX models)."
    )
    bfl_base_url: str = Field(
        default="https://api.bfl.ai",
        description="BFL API base URL (or https://api.eu.bfl.ai, https://api.us.bfl.ai).",
    )
    bfl_concurrency: int = Field(
        default=24, ge=1, description="BFL tasks in flight per process (BFL allows 24 active)."
    )
    bfl_timeout: float = Field(
        default=60.0, gt=0, description="Seconds to wait for one BFL answer."
    )
    bfl_max_retries: int = Field(
        default=3, ge=0, description="Retries of BFL 429/5xx/connection errors before failing."
    )
    bfl_retry_base: float = Field(
        default=2.0, ge=0, description="First BFL retry backoff in seconds (doubles)."
    )
    bfl_poll_interval: float = Field(
        default=1.0, gt=0, description="Seconds between polls of a BFL task."
    )
    bfl_poll_timeout: float = Field(
        default=900.0, gt=0, description="Seconds a BFL task may take before the attempt gives up."
    )
    log_format: str = Field(
        default="auto", description="Logs: json, text, or auto (JSON unless on a terminal)."
    )
    faces_enabled: bool = Field(
        default=True, description="Score character consistency when the `faces` extra is installed."
    )
    face_processes: int | None = Field(
        default=None,
        ge=0,
        le=64,
        description="Worker processes that score faces beside the worker (dlib holds the GIL: "
        "docs/faces.md); unset: CPUs - 1, between 2 and 4; 0: in the worker's own process.",
    )
    dev_credits: int = Field(
        default=100_000, ge=0, description="Credits of the `make run` development account."
    )
    # -- exposure to browsers and networks (issue 29) -----------------------------------------
    cors_origins: str = Field(
        default="",
        description="Comma-separated browser origins (`https://app.example.com`, or `*`) "
        "allowed to call the API from their pages (CORS); empty = none. API keys do not belong "
        "in public web pages: allow an origin only for your own tools or a page whose users "
        "bring their own key.",
    )
    metrics_token: str = Field(
        default="",
        description="Bearer token that `GET /metrics` requires; empty = /metrics answers "
        "loopback clients only (403 metrics_forbidden to others).",
    )

    @property
    def cors_origin_list(self) -> list[str]:
        """``cors_origins`` as a list (empty: CORS is off)."""
        return [origin.rstrip("/") for origin in comma_list(self.cors_origins)]

    @property
    def worker_model_list(self) -> list[str] | None:
        """``worker_models`` as a list (None: every model)."""
        return comma_list(self.worker_models) or None

    @property
    def worker_device_list(self) -> list[str]:
        """``worker_devices`` as a list (empty: no devices named)."""
        return comma_list(self.worker_devices)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'castframe.db').resolve()}"

    @property
    def resolved_key_cache_seconds(self) -> float:
        if self.key_cache_seconds is not None:
            return self.key_cache_seconds
        return 5.0 if self.resolved_database_url.startswith("postgres") else 0.0

    @property
    def resolved_public_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @cached_property
    def signing_key(self) -> bytes:
        """The HMAC key for output URLs; generated once and kept in the data dir if not set."""
        if self.secret_key:
            return self.secret_key.encode()
        path = self.data_dir / "secret_key"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            candidate = secrets.token_hex(32)
            try:
                with path.open("x") as handle:
                    handle.write(candidate)
            except FileExistsError:
                pass
        return path.read_text().strip().encode()

    @property
    def retry_schedule(self) -> list[float]:
        return [float(part) for part in comma_list(self.webhook_retry_schedule)]

    @property
    def trusted_host_set(self) -> frozenset[str]:
        return frozenset(host.lower() for host in comma_list(self.trusted_hosts))

    @property
    def outputs_dir(self) -> Path:
        return self.data_dir / "files"


COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # (component, the setting names or name prefixes that belong to it), in the order the
    # README's configuration table shows them. Every setting belongs to exactly one
    # (tests/unit/test_config.py).
    ("Server", ("data_dir", "database_url", "public_url", "host", "port", "secret_key",
                "log_format", "dev_credits", "cors_", "metrics_")),
    ("Storage", ("storage_url", "s3_")),
    ("Limits and fair use", ("max_", "body_read_timeout", "rate_limit_", "key_cache_seconds",
                             "submit_batch_max", "idempotency_", "live_", "upload_", "character_",
                             "storage_quota", "redeliver_", "input_cache_bytes",
                             "reference_max_side")),
    ("Fetching images", ("allow_private_urls", "trusted_hosts", "fetch_", "outbound_")),
    ("Retention", ("output_url_ttl", "upload_retention_hours", "output_retention_",
                   "job_retention_days", "webhook_attempt_retention_days", "retention_")),
    ("Worker", ("worker_", "postprocess_queue", "completion_linger_ms", "lease_seconds",
                "poll_interval", "max_attempts", "retry_base_seconds")),
    ("Webhooks", ("webhook_",)),
    ("Models: routes and prices", ("routes", "prices", "unserved_models")),
    ("Engine: ideogram", ("ideogram_",)),
    ("Engine: bfl", ("bfl_",)),
    ("Engine: diffusers", ("diffusers_",)),
    ("Engine: image tools", ("tool_max_output_pixels", "tools_", "bg_", "upscale_", "rembg_",
                             "realesrgan_")),
    ("Faces", ("faces_", "face_")),
)  # fmt: skip
"""Settings grouped by the component they configure."""


def component_of(name: str) -> str | None:
    """The component a setting belongs to: its exact name first, else its longest prefix."""
    best: tuple[int, str] | None = None
    for component, names in COMPONENTS:
        for entry in names:
            if name == entry:
                return component
            longer = best is None or len(entry) > best[0]
            if entry.endswith("_") and name.startswith(entry) and longer:
                best = (len(entry), component)
    return best[1] if best else None
