"""Request-scoped dependencies: the shared services and the authenticated caller."""

from __future__ import annotations

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from castframe.errors import ApiError
from castframe.jobs.accounts import Principal, resolve_key
from castframe.services import Services


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def api_key_from(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key.strip()
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


async def authenticate(request: Request) -> Principal:
    """Resolve the key (401 missing/unknown/revoked, 403 deactivated) and set rate headers.

    A cached lookup (jobs/keycache.py) is answered on the event loop; only a miss goes to a
    thread for its database read.
    """
    raw = api_key_from(request)
    if not raw:
        raise ApiError("missing_api_key", "API key is required")
    services = get_services(request)
    principal = services.key_cache.get(raw)
    if principal is None:
        principal = await run_in_threadpool(_look_up, services, raw)
    request.state.principal = principal
    limiter = request.app.state.rate_limiter
    decision = limiter.check(
        principal.key_id, take=False, rate=principal.rate_per_second, burst=principal.rate_burst
    )
    request.state.rate_headers = decision.headers()
    return principal


def _look_up(services: Services, raw: str) -> Principal:
    generation = services.key_cache.generation()
    with services.db.read() as conn:
        status, principal = resolve_key(conn, raw)
    if status == "inactive":
        raise ApiError("api_key_inactive", "API key is inactive")
    if principal is None:
        raise ApiError("invalid_api_key", "Invalid API key")
    services.key_cache.put(raw, principal, generation)
    return principal
