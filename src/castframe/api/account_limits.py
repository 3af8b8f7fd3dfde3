"""Per-account fair shares of the upload routes: token buckets for uploads and for saved
character creations (taken before the body is read), and the storage quota (jobs/quota.py).

Each API process keeps its own buckets (api/ratelimit.py), keyed by account: an account's
keys share one bucket, so a second key is no way around it.
"""

from __future__ import annotations

from fastapi import Request

from castframe.api.ratelimit import RateLimiter
from castframe.config import Settings
from castframe.errors import ApiError
from castframe.jobs.accounts import Principal


def install(state: object, settings: Settings) -> None:
    """The app's upload and character buckets (``app.state``)."""
    state.upload_limiter = RateLimiter(  # type: ignore[attr-defined]
        settings.upload_rate_per_second, settings.upload_rate_burst
    )
    state.character_limiter = RateLimiter(  # type: ignore[attr-defined]
        settings.character_rate_per_second, settings.character_rate_burst
    )


def take_account_token(request: Request, principal: Principal, which: str, what: str) -> None:
    """One token of the account's ``which`` bucket (``upload_limiter``,
    ``character_limiter``), or 429 rate_limited with Retry-After and RateLimit-* headers."""
    limiter: RateLimiter = getattr(request.app.state, which)
    decision = limiter.check(principal.account_id, take=True)
    request.state.rate_headers = decision.headers()
    if not decision.allowed:
        raise ApiError(
            "rate_limited",
            f"too many {what} for this account; retry in {decision.retry_after}s",
            headers={"Retry-After": str(decision.retry_after)},
        )
