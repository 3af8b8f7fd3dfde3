"""Usage: successful jobs, delivered images and charged credits, grouped by day or model."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import sqlalchemy as sa

from castframe.jobs import store as job_store
from castframe.jobs.views import iso


def usage_rows(
    conn: sa.Connection,
    account_id: str,
    mode: str,
    start: float | None,
    end: float | None,
    group_by: str,
) -> list[dict[str, Any]]:
    groups: dict[str, dict[str, int]] = defaultdict(lambda: {"jobs": 0, "images": 0, "credits": 0})
    for completed_at, model, delivered, charged in job_store.completed_jobs(
        conn, account_id, mode, start, end
    ):
        group = groups[model if group_by == "model" else (iso(completed_at) or "")[:10]]
        group["jobs"] += 1
        group["images"] += delivered
        group["credits"] += charged
    return [{group_by: key, **values} for key, values in sorted(groups.items())]
