"""Usage: successful jobs, delivered images and charged credits, grouped by day or model."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import sqlalchemy as sa

from castframe.jobs import states
from castframe.jobs.views import iso
from castframe.store.tables import jobs


def usage_rows(
    conn: sa.Connection,
    account_id: str,
    mode: str,
    start: float | None,
    end: float | None,
    group_by: str,
) -> list[dict[str, Any]]:
    query = sa.select(jobs.c.completed_at, jobs.c.model, jobs.c.delivered, jobs.c.charged).where(
        jobs.c.account_id == account_id, jobs.c.mode == mode, jobs.c.status == states.COMPLETED
    )
    if start is not None:
        query = query.where(jobs.c.completed_at >= start)
    if end is not None:
        query = query.where(jobs.c.completed_at < end)
    groups: dict[str, dict[str, int]] = defaultdict(lambda: {"jobs": 0, "images": 0, "credits": 0})
    for completed_at, model, delivered, charged in conn.execute(query):
        group = groups[model if group_by == "model" else (iso(completed_at) or "")[:10]]
        group["jobs"] += 1
        group["images"] += int(delivered or 0)
        group["credits"] += int(charged or 0)
    return [{group_by: key, **values} for key, values in sorted(groups.items())]
