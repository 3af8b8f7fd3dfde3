"""HTTP concerns only: routes, auth, errors, idempotency and rate-limit headers."""
