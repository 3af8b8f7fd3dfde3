"""``create_app(settings)``: the FastAPI application; its lifespan runs the embedded worker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from castframe import __version__
from castframe.api import (
    account,
    catalog,
    characters,
    files,
    generate,
    health,
    jobs,
    metrics_endpoint,
    uploads,
)
from castframe.api.docs_ui import install_docs
from castframe.api.errors import install_error_handlers
from castframe.api.middleware import RequestContextMiddleware
from castframe.api.openapi import use_apiframe_errors
from castframe.api.ratelimit import RateLimiter
from castframe.config import Settings
from castframe.services import Services

WEB_DIR = Path(__file__).parent / "web"

DESCRIPTION = """
Castframe speaks Apiframe's v2 image API: submit with `POST /v2/images/generate` and an
`X-API-Key`, get a `jobId`, then poll `GET /v2/jobs/{id}` or receive a signed webhook.
Every error is Apiframe's `{"error": "<message>"}`, with Castframe's stable `code` and
`details` (messages by field path) beside it. See docs/apiframe-compatibility.md.
"""


def create_app(
    settings: Settings | None = None,
    services: Services | None = None,
    run_worker: bool | None = None,
) -> FastAPI:
    settings = settings or (services.settings if services else Settings())
    with_worker = settings.worker_enabled if run_worker is None else run_worker

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        built = services or Services.build(settings)
        app.state.services = built
        if with_worker:
            built.start_worker()
        built.start_sender()
        built.start_listener(jobs=with_worker, webhooks=True, keys=True, live=True)
        try:
            yield
        finally:
            built.stop(grace=10.0)

    app = FastAPI(
        title="Castframe",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served from local files below: the CDN's are unreachable offline
        redoc_url=None,
    )
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst)
    install_error_handlers(app)
    use_apiframe_errors(app)
    for module in (generate, jobs, catalog, uploads, characters, account, files, health):
        app.include_router(module.router)
    app.include_router(metrics_endpoint.router)
    install_docs(app, "Castframe")

    app.add_middleware(RequestContextMiddleware)
    if settings.cors_origin_list:
        # Off by default: API keys do not belong in public pages (docs/operations.md#cors).
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=[
                "X-API-Key",
                "Authorization",
                "Content-Type",
                "Idempotency-Key",
                "Prefer",
            ],
            expose_headers=[
                "Idempotent-Replayed",
                "Retry-After",
                "X-Request-Id",
                "Location",
                "Preference-Applied",
            ],
            max_age=600,
        )

    app.mount("/web", StaticFiles(directory=WEB_DIR), name="web")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        """The playground: a static page that talks to this API with the user's key."""
        return FileResponse(WEB_DIR / "index.html", media_type="text/html")

    return app


def begin_shutdown(app: FastAPI) -> None:
    """The server got SIGTERM: answer the requests that wait on live status now (a
    ``Prefer: wait`` submission gets 202 with its job, an event stream ends) rather than
    being cut when the graceful-shutdown timeout runs out. Called on the event loop."""
    services: Services | None = getattr(app.state, "services", None)
    if services is not None:
        services.watcher.drain()
