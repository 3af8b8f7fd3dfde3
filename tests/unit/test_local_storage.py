"""Local storage: keys stay inside the root, and writes leave no partial files behind."""

from __future__ import annotations

from pathlib import Path

import pytest

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
