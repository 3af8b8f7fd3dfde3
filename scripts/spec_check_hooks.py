"""schemathesis hooks for scripts/spec_check.py (loaded through ``SCHEMATHESIS_HOOKS``).

Each hook encodes something Apiframe itself does that its OpenAPI document does not say:

- ``filter_failure``: a 409 whose body's ``code`` is ``idempotency_key_reused`` or
  ``idempotency_key_in_use`` is a reused ``Idempotency-Key``. Apiframe's document omits 409, but
  its official SDK maps it to ``ConflictError`` ("replayed an idempotency key with a different
  request body"), so every check is waived for that response (and only that one: any other 409
  still fails).
- ``before_call``: schemathesis draws short keys ("0", "a") again and again, so without help
  most submissions would replay an earlier key and stop at that 409 before their body is ever
  validated. Three in four valid-looking keys get a unique suffix; the fourth keeps its drawn
  value, so the reused-key path is still exercised. A key at the 255-character limit keeps
  its length (its tail is replaced); invalid keys (too long, not printable ASCII) are left as
  drawn.
- ``map_query``: ``cursor`` on ``GET /v2/jobs`` is an opaque token the server issues; a random
  string is rightly answered 400, which the positive-data check would call a failure.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import schemathesis

IDEMPOTENCY_CODES = frozenset({"idempotency_key_reused", "idempotency_key_in_use"})
_counter = itertools.count(1)


def _is_reused_key_conflict(response: Any) -> bool:
    if response is None or getattr(response, "status_code", None) != 409:
        return False
    try:
        body = json.loads(response.content)
    except (ValueError, TypeError, AttributeError):
        return False
    return isinstance(body, dict) and body.get("code") in IDEMPOTENCY_CODES


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """Keep every failure except those about a reused Idempotency-Key's 409."""
    return not _is_reused_key_conflict(response)


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    # Right before sending (every phase: the coverage phase skips the map_* hooks and sends
    # one drawn key, often 255 zeros, with every body).
    headers = case.headers
    if not headers:
        return
    for name in list(headers):
        value = headers[name]
        if name.lower() != "idempotency-key" or not isinstance(value, str):
            continue
        n = next(_counter)
        suffix = f"-st{n}"
        if n % 4 and value.isascii() and value.isprintable() and len(value) <= 255:
            headers[name] = (value + suffix)[-255:]


@schemathesis.hook
def map_query(context: Any, query: dict[str, Any] | None) -> dict[str, Any] | None:
    operation = getattr(context, "operation", None)
    if query and operation is not None and getattr(operation, "path", "") == "/v2/jobs":
        query.pop("cursor", None)
    return query
