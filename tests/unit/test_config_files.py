"""``CASTFRAME_<NAME>_FILE``: settings read from files (container secrets)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from castframe import __version__
from castframe.cli import app
from castframe.config import ConfigFileError, Settings


def test_a_setting_is_read_from_its_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "ideogram"
    key.write_text("ik-from-a-file\n")
    secret = tmp_path / "signing"
    secret.write_text("  s3cret-signing-key  \n")
    monkeypatch.setenv("CASTFRAME_IDEOGRAM_API_KEY_FILE", str(key))
    monkeypatch.setenv("CASTFRAME_SECRET_KEY_FILE", str(secret))
    monkeypatch.setenv("CASTFRAME_WORKER_CONCURRENCY_FILE", str(_write(tmp_path, "n", "5\n")))
    settings = Settings(data_dir=tmp_path)
    assert settings.ideogram_api_key == "ik-from-a-file"
    assert settings.signing_key == b"s3cret-signing-key"
    assert settings.worker_concurrency == 5  # not only strings: the field's own type


def test_a_file_value_is_validated_like_any_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CASTFRAME_WORKER_CONCURRENCY_FILE", str(_write(tmp_path, "n", "0")))
    with pytest.raises(ValueError, match="worker_concurrency"):
        Settings()


def test_arguments_still_win_over_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASTFRAME_PORT_FILE", str(_write(tmp_path, "port", "9001")))
    assert Settings().port == 9001
    assert Settings(port=9002).port == 9002


def test_both_the_variable_and_its_file_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CASTFRAME_IDEOGRAM_API_KEY", "ik-env")
    monkeypatch.setenv("CASTFRAME_IDEOGRAM_API_KEY_FILE", str(_write(tmp_path, "k", "ik-file")))
    with pytest.raises(ConfigFileError, match="not both"):
        Settings()


def test_an_empty_variable_beside_its_file_is_no_conflict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # compose.yaml passes `CASTFRAME_IDEOGRAM_API_KEY: ${CASTFRAME_IDEOGRAM_API_KEY:-}`.
    monkeypatch.setenv("CASTFRAME_IDEOGRAM_API_KEY", "")
    monkeypatch.setenv("CASTFRAME_IDEOGRAM_API_KEY_FILE", str(_write(tmp_path, "k", "ik-file")))
    assert Settings().ideogram_api_key == "ik-file"


def test_an_unreadable_file_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nowhere"
    monkeypatch.setenv("CASTFRAME_SECRET_KEY_FILE", str(missing))
    with pytest.raises(ConfigFileError, match="CASTFRAME_SECRET_KEY_FILE: cannot read"):
        Settings()
    binary = _write(tmp_path, "bin", "")
    binary.write_bytes(b"\xff\xfe\x00")
    monkeypatch.setenv("CASTFRAME_SECRET_KEY_FILE", str(binary))
    with pytest.raises(ConfigFileError, match="not UTF-8"):
        Settings()


def test_an_empty_file_variable_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASTFRAME_IDEOGRAM_API_KEY_FILE", "")
    assert Settings().ideogram_api_key == ""


def test_the_cli_reports_a_bad_secret_file_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CASTFRAME_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CASTFRAME_SECRET_KEY_FILE", str(tmp_path / "nowhere"))
    result = CliRunner().invoke(app, ["migrate"])
    assert result.exit_code == 2
    assert "configuration error: CASTFRAME_SECRET_KEY_FILE: cannot read" in result.output
    assert "Traceback" not in result.output


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"castframe {__version__}"


def _write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path
