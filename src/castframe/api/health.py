"""Liveness and readiness."""

from __future__ import annotations

import contextlib
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request

from castframe.api.deps import get_services
from castframe.errors import ApiError

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
def healthz(request: Request) -> dict[str, Any]:
    """Liveness: always 200 while the process answers. ``modelsWithoutWorker`` lists the
    served models no live worker serves (their jobs wait in the queue: jobs/fleet.py); it is
    left out when the database cannot say, which is /readyz's concern, not liveness'."""
    body: dict[str, Any] = {"status": "ok"}
    with contextlib.suppress(Exception):
        body["modelsWithoutWorker"] = get_services(request).models_without_worker()
    return body


@router.get("/readyz", summary="The process can serve: its database answers")
def readyz(request: Request) -> dict[str, Any]:
    services = get_services(request)
    try:
        with services.db.read() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        raise ApiError("not_ready", f"database unreachable: {type(exc).__name__}") from exc
    worker = services.worker
    return {
        "status": "ok",
        "worker": {"running": worker is not None, "busy": worker.busy if worker else 0},
    }
