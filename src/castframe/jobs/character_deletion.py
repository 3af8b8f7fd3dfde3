"""Deleting a saved character: its picture and face descriptor are biometric data.

At the deletion, in one transaction: the character is marked deleted (later submissions
naming it are refused) and its image upload expires now, so its ``upload://`` reference and
signed URL are refused at once (jobs/uploads.py: ``existing_uploads`` skips expired
uploads). If no queued or running job names the image, the upload row, the character row
(with its descriptor) and, through the deletion queue, the image file and its descriptor
sidecar go in the same transaction; the caller then deletes the files at once
(``delete_files_now``). A job still to run keeps them until it is done: the retention
sweeper then deletes the expired upload, the character with it (jobs/uploads.py:
``delete_uploads``) and the files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import sqlalchemy as sa

from castframe.jobs import file_deletions
from castframe.jobs import store as job_store
from castframe.jobs.characters import get_character
from castframe.jobs.retention import upload_ids_in
from castframe.jobs.uploads import Owner, delete_uploads, files_of
from castframe.media.storage import Storage
from castframe.store.tables import characters, uploads


@dataclass
class Deletion:
    """What deleting a character did: whether it existed, and the files it freed now."""

    found: bool
    upload_id: str | None = None
    files: list[str] = field(default_factory=list)
    kept_for_jobs: bool = False


def delete_character(conn: sa.Connection, owner: Owner, character_id: str) -> Deletion:
    """Delete the character (module doc); the files to remove are queued and returned."""
    row = get_character(conn, owner, character_id)
    if row is None:
        return Deletion(False)
    now = time.time()
    marked = conn.execute(
        characters.update()
        .where(characters.c.id == character_id, characters.c.deleted_at.is_(None))
        .values(deleted_at=now)
    ).rowcount
    if marked != 1:
        return Deletion(False)
    upload_id = str(row["upload_id"])
    conn.execute(uploads.update().where(uploads.c.id == upload_id).values(expires_at=now))
    if upload_id in upload_ids_in(job_store.unfinished_params(conn)):
        return Deletion(True, upload_id, kept_for_jobs=True)
    key = conn.execute(sa.select(uploads.c.storage_key).where(uploads.c.id == upload_id)).scalar()
    delete_uploads(conn, {upload_id})
    files = files_of([str(key)]) if key else []
    file_deletions.enqueue(conn, files, now)
    return Deletion(True, upload_id, files)


def delete_files_now(storage: Storage, deletion: Deletion) -> list[str]:
    """Remove the freed files at once (best effort): the keys actually deleted, which the
    caller takes off the deletion queue; any other is left to the sweeper's next pass."""
    done: list[str] = []
    for key in deletion.files:
        try:
            storage.delete(key)
        except Exception:  # storage trouble: the queued deletion retries it
            continue
        done.append(key)
    return done
