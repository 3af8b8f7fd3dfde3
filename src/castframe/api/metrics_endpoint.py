"""``GET /metrics``: Prometheus text, for operators only.

Metrics name routes, engines and queue depths: nothing a stranger on the internet should read.
So the endpoint answers loopback clients (a scraper on the same host, or a same-host reverse
proxy that sets ``X-Forwarded-For``, which uvicorn reads from 127.0.0.1) and, when
``CASTFRAME_METRICS_TOKEN`` is set, any client that sends it as a Bearer token. The setting is
read at each request, so a test or an operator's reload sees the current value.
"""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from castframe.api.deps import get_services
from castframe.api.queue_metrics import QueueCollector
from castframe.errors import ApiError
from castframe.metrics import REGISTRY

router = APIRouter()


def is_loopback(host: str | None) -> bool:
    """Whether a client address is this machine's (IPv4-mapped IPv6 included)."""
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def check_metrics_access(request: Request, token: str) -> None:
    """Raise 403 metrics_forbidden unless the client may read the metrics."""
    if token:
        sent = request.headers.get("authorization", "")
        scheme, _, value = sent.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), token.encode()
        ):
            return
        if not is_loopback(request.client.host if request.client else None):
            raise ApiError(
                "metrics_forbidden",
                "GET /metrics needs `Authorization: Bearer <CASTFRAME_METRICS_TOKEN>`.",
            )
        return
    if not is_loopback(request.client.host if request.client else None):
        raise ApiError(
            "metrics_forbidden",
            "GET /metrics answers loopback clients only; set CASTFRAME_METRICS_TOKEN and send "
            "`Authorization: Bearer <token>` to scrape it from elsewhere.",
        )


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    services = get_services(request)
    check_metrics_access(request, services.settings.metrics_token)
    queue = CollectorRegistry()
    queue.register(QueueCollector(services.db))
    return Response(
        generate_latest(REGISTRY) + generate_latest(queue), media_type=CONTENT_TYPE_LATEST
    )
