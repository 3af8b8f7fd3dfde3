"""Local storage: keys stay inside the root, and writes leave no partial files behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from castframe.dispatch.worker import output_key
from castframe.media.storage import LocalStorage


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "files", "http://x", b"k")


def test_put_then_get_round_trips_and_leaves_only_the_file(storage: LocalStorage) -> None:
    storage.put("outputs/job-1/0-7.png", b"png bytes", "image/png")
    storage.put("outputs/job-1/0-7.png", b"new bytes", "image/png")  # replaced whole
    assert storage.get("outputs/job-1/0-7.png") == b"new bytes"
    assert storage.exists("outputs/job-1/0-7.png")
    assert [p.name for p in (storage.root / "outputs" / "job-1").iterdir()] == ["0-7.png"]


@pytest.mark.parametrize(
    "key", ["../x", "outputs/../../x", "/etc/passwd", "a//b", "a/./b", "a\\..\\b", "a\x00b", ""]
)
def test_keys_that_could_leave_the_root_are_refused(storage: LocalStorage, key: str) -> None:
    with pytest.raises(ValueError):
        storage.path_for(key)
    with pytest.raises(ValueError):
        storage.put(key, b"x", "image/png")
    assert storage.exists(key) is False


def test_put_makes_missing_folders_again_after_they_are_removed(storage: LocalStorage) -> None:
    """Writes no longer create the folder first; a folder removed meanwhile (a retention
    job deleting an old day) is made again on the write that finds it missing."""
    storage.put("outputs/2026-11-01/a-0-1.png", b"one", "image/png")
    for file in (storage.root / "outputs" / "2026-11-01").iterdir():
        file.unlink()
    (storage.root / "outputs" / "2026-11-01").rmdir()
    (storage.root / "outputs").rmdir()
    storage.put("outputs/2026-11-01/b-0-1.png", b"two", "image/png")
    assert storage.get("outputs/2026-11-01/b-0-1.png") == b"two"


def test_output_keys_group_a_day_of_jobs_in_one_folder() -> None:
    created = 1_795_000_000.0  # 2026-11-18 UTC
    assert output_key("j1", created, 0, 42) == "outputs/2026-11-18/j1-a1-0-42.png"
    assert output_key("j2", created + 60, 1, 7) == "outputs/2026-11-18/j2-a1-1-7.png"
    # Each attempt its own keys: a retry never overwrites (or deletes) another attempt's files.
    assert output_key("j2", created + 60, 1, 7, attempt=2) == "outputs/2026-11-18/j2-a2-1-7.png"
    assert output_key("j3", created + 86_400, 0, 7).startswith("outputs/2026-11-19/")
