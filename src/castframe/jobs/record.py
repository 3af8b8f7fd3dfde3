"""The job as a frozen record: what the job store reads from a row and hands to every layer.

A ``Job``'s fields cannot be reassigned, and nothing changes its JSON fields (``input``,
``params``, ``result``) in place either. A finishing write of the job store returns the job as
it now is (``job.replace(...)`` with the values it wrote), or None when the write's guard
refused (a lost lease, a cancellation), so a caller can never mistake the job it passed in for
the job the database holds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from castframe.store import states


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    account_id: str
    api_key_id: str
    mode: str
    model: str
    engine: str
    status: str
    input: dict[str, Any]
    params: dict[str, Any]
    progress: int
    result: dict[str, Any] | None
    error_code: str | None
    error_message: str | None
    price: int
    charged: int | None
    delivered: int | None
    created_at: float
    started_at: float | None
    completed_at: float | None
    run_after: float
    attempts: int
    lease_owner: str | None
    lease_expires_at: float | None
    cancel_requested: bool
    webhook_url: str | None
    webhook_events: list[str] | None
    webhook_status: str | None
    webhook_key_hash: str | None
    expired: bool
    queue_key: float

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Job:
        """A row of ``jobs`` (every column) as a record."""
        return cls(**{name: row[name] for name in FIELDS})

    def replace(self, **changes: Any) -> Job:
        return dataclasses.replace(self, **changes)

    @property
    def requested(self) -> int:
        """How many images the job asked for (what a full charge pays for)."""
        return int(self.params["num_images"])

    @property
    def is_terminal(self) -> bool:
        return self.status in states.TERMINAL


FIELDS = tuple(field.name for field in dataclasses.fields(Job))
