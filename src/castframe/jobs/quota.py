"""An account's storage quota: the bytes of its stored uploads, both modes together.

Uploads (multipart ``POST /v2/uploads``), saved characters' images and the inline images of
unfinished jobs are all rows of ``uploads`` with their size, so one indexed sum says what an
account holds (``ix_uploads_account``). A new upload or character that would take the account
over CASTFRAME_UPLOAD_QUOTA_BYTES is refused with 507 ``storage_quota_exceeded`` before
anything is written. The check and the insert are not one atomic step: concurrent uploads
of one account can overshoot the quota by at most what they add together (their rate is
bounded by the account's upload bucket), never more.
"""

from __future__ import annotations

import sqlalchemy as sa

from castframe.errors import ApiError
from castframe.store.tables import uploads

_STORED = sa.select(sa.func.coalesce(sa.func.sum(uploads.c.size), 0)).where(
    uploads.c.account_id == sa.bindparam("account_id")
)


def stored_bytes(conn: sa.Connection, account_id: str) -> int:
    """The bytes of every upload the account holds now."""
    return int(conn.execute(_STORED, {"account_id": account_id}).scalar() or 0)


def check_quota(conn: sa.Connection, account_id: str, adding: int, quota: int) -> None:
    """Raise 507 ``storage_quota_exceeded`` when ``adding`` more bytes would take the
    account over ``quota`` (0: no quota)."""
    if quota <= 0:
        return
    held = stored_bytes(conn, account_id)
    if held + adding > quota:
        raise ApiError(
            "storage_quota_exceeded",
            f"the account stores {held} bytes of uploads; this {adding}-byte image would pass "
            f"its quota of {quota} bytes. Delete saved characters or let uploads expire",
            extra={"storedBytes": held, "quotaBytes": quota},
        )
