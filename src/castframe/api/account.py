"""Account endpoints: Apiframe's ``/v2/me``, balances, usage, the ledger, webhook secrets."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from castframe.api.deps import authenticate, get_services
from castframe.errors import field_error
from castframe.jobs import admission
from castframe.jobs import ledger as ledger_mod
from castframe.jobs.accounts import (
    Principal,
    account_email,
    get_account,
    rotate_webhook_secret,
    secret_state,
)
from castframe.jobs.usage import usage_rows
from castframe.jobs.views import iso

router = APIRouter(tags=["account"])


def _parse_time(value: str | None, name: str) -> float | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise field_error(
            "invalid_request", name, f"{name} must be an ISO-8601 date or time"
        ) from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


@router.get("/v2/me", summary="The caller, its team (credits) and key, in Apiframe's shape")
def me(request: Request, principal: Principal = Depends(authenticate)) -> dict[str, Any]:
    """Each Castframe account is one user (its owner) and one team, so both carry the
    account's id; ``credits`` are the available ones (balance less what running jobs hold)."""
    services = get_services(request)
    with services.db.read() as conn:
        balance = ledger_mod.balance_in_mode(conn, principal.account_id, principal.mode)
        account_row = get_account(conn, principal.account_id)
    assert account_row is not None
    return {
        "user": {"id": principal.account_id, "email": account_email(account_row), "role": "OWNER"},
        "team": {
            "id": principal.account_id,
            "name": principal.account_name,
            "credits": max(0, balance.available),
            "plan": "self-hosted",
            "customerId": None,
            "maxConcurrentJobs": principal.max_active_jobs or services.settings.max_active_jobs,
        },
        "apiKey": {
            "id": principal.key_id,
            "name": principal.key_name,
            "prefix": principal.key_prefix,
            "mode": principal.mode,
        },
    }


@router.get("/v2/account", summary="Balance, held and available credits")
def account(request: Request, principal: Principal = Depends(authenticate)) -> dict[str, Any]:
    services = get_services(request)
    with services.db.read() as conn:
        balance = ledger_mod.balance_in_mode(conn, principal.account_id, principal.mode)
        active = admission.active_jobs(conn, principal.account_id)
    return {
        "id": principal.account_id,
        "name": principal.account_name,
        "mode": principal.mode,
        "balance": balance.balance,
        "held": balance.held,
        "available": balance.available,
        "activeJobs": active,
        "maxActiveJobs": principal.max_active_jobs or services.settings.max_active_jobs,
    }


@router.get("/v2/account/usage", summary="Successful images and credits, by day or model")
def usage(
    request: Request,
    principal: Principal = Depends(authenticate),
    from_: str | None = Query(None, alias="from"),
    to: str | None = None,
    group_by: Literal["day", "model"] = "day",
) -> dict[str, Any]:
    services = get_services(request)
    start, end = _parse_time(from_, "from"), _parse_time(to, "to")
    with services.db.read() as conn:
        rows = usage_rows(conn, principal.account_id, principal.mode, start, end, group_by)
    return {
        "groupBy": group_by,
        "from": from_,
        "to": to,
        "usage": rows,
        "total": {name: sum(int(r[name]) for r in rows) for name in ("jobs", "images", "credits")},
    }


@router.get("/v2/account/ledger", summary="Ledger entries, newest first")
def ledger_entries(
    request: Request,
    principal: Principal = Depends(authenticate),
    limit: int = Query(50, ge=1, le=500),
    cursor: int | None = Query(None, ge=1, le=ledger_mod.MAX_ENTRY_ID),
) -> dict[str, Any]:
    services = get_services(request)
    with services.db.read() as conn:
        rows, more = ledger_mod.ledger_page(
            conn, principal.account_id, principal.mode, limit, cursor
        )
    return {
        "entries": [
            {
                "id": r["id"],
                "kind": r["kind"],
                "amount": r["amount"],
                "jobId": r["job_id"],
                "note": r["note"],
                "createdAt": iso(r["created_at"]),
            }
            for r in rows
        ],
        "nextCursor": rows[-1]["id"] if more else None,
        "hasMore": more,
    }


@router.get("/v2/account/webhook-secret", summary="The Standard Webhooks signing secret")
def webhook_secret(
    request: Request, principal: Principal = Depends(authenticate)
) -> dict[str, Any]:
    services = get_services(request)
    with services.db.read() as conn:
        account_row = get_account(conn, principal.account_id)
    assert account_row is not None
    state = secret_state(account_row, principal.mode)
    return {
        "secret": state.secret,
        "activeSecrets": len(state.active),
        "previousSecretExpiresAt": iso(state.previous_expires_at),
    }


@router.post(
    "/v2/account/webhook-secret/rotate",
    summary="New secret; the old one keeps signing for 24 hours",
)
def rotate_secret(request: Request, principal: Principal = Depends(authenticate)) -> dict[str, Any]:
    services = get_services(request)
    with services.db.write() as conn:
        account_row = rotate_webhook_secret(conn, principal.account_id, principal.mode)
    state = secret_state(account_row, principal.mode)
    return {"secret": state.secret, "previousSecretExpiresAt": iso(state.previous_expires_at)}
