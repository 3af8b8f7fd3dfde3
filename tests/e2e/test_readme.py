"""The README's quick start, run verbatim against a fresh server, as a new user would.

The blocks are read from README.md (between "## Quick start" and the next "## "), in order,
in one bash, in a folder laid out like a fresh clone after `make run`: the sample reference
in docs/gallery/, the development key that `castframe dev-key` wrote in .castframe/, and a
.venv whose bin holds `castframe`. Only CASTFRAME_BASE_URL differs (the server's free port).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.e2e.conftest import ROOT, free_port

pytestmark = pytest.mark.e2e


def quick_start_blocks() -> list[tuple[str, str]]:
    """(language, code) of every fenced block of the README's quick start, in order."""
    text = (ROOT / "README.md").read_text()
    start = text.index("\n## Quick start\n")
    end = text.index("\n## ", start + 1)
    return re.findall(r"```(\w+)\n(.*?)```", text[start:end], re.S)


@dataclass
class Clone:
    folder: Path
    base: str
    env: dict[str, str]

    def bash(self, script: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", script],
            cwd=self.folder,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )


@pytest.fixture
def clone(tmp_path: Path) -> Iterator[Clone]:
    folder = tmp_path / "castframe"
    (folder / "docs" / "gallery").mkdir(parents=True)
    shutil.copy(ROOT / "docs" / "gallery" / "reference.png", folder / "docs" / "gallery")
    (folder / ".venv").symlink_to(Path(sys.prefix))  # where `make run` put `castframe`
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASTFRAME_")}
    port = free_port()
    # Server-side only: one process instead of a face-scoring pool (the machine is small).
    server_env = {**env, "CASTFRAME_FACE_PROCESSES": "0", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "castframe.cli"]
    subprocess.run(
        [*command, "dev-key"],
        cwd=folder,
        env=server_env,
        check=True,
        timeout=120,
        capture_output=True,
    )
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(
        [*command, "serve", "--port", str(port)],
        cwd=folder,
        env=server_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, (
                tmp_path / "server.log"
            ).read_text()
            time.sleep(0.1)
        yield Clone(folder, base, {**env, "CASTFRAME_BASE_URL": base})
    finally:
        server.terminate()
        server.wait(30)
        log.close()


def test_the_quick_start_runs_verbatim_to_downloaded_images(clone: Clone) -> None:
    blocks = quick_start_blocks()
    languages = [language for language, _ in blocks]
    assert languages == ["bash", "bash", "bash", "json", "python", "js", "python", "bash"], (
        languages
    )
    shell = "\n".join(code for language, code in blocks if language == "bash")
    ran = clone.bash(shell)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "Traceback" not in ran.stderr and "error" not in ran.stderr, ran.stderr
    job_id = re.search(r"^job ([0-9a-f-]{36})$", ran.stdout, re.M)
    assert job_id, ran.stdout
    assert "saved detective.png" in ran.stdout
    with Image.open(clone.folder / "detective.png") as image:
        assert (image.format, image.size) == ("PNG", (864, 1152))  # aspect_ratio 3:4
    # The "job again" block printed the job, and the CLI block saved its image too.
    assert f'"id":"{job_id.group(1)}","status":"COMPLETED"' in ran.stdout
    assert [p.suffix for p in (clone.folder / "images").iterdir()] == [".png"]

    key = (clone.folder / ".castframe" / "dev_api_key").read_text().strip()
    for index, (language, code) in enumerate(blocks):
        if language != "python":
            continue
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=clone.folder,
            env={**clone.env, "CASTFRAME_API_KEY": key},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, (index, done.stdout + done.stderr)
    with Image.open(clone.folder / "knight.png") as image:
        assert image.format == "PNG"
    assert len(list((clone.folder / "images").iterdir())) == 2  # the SDK's download


def first_steps() -> str:
    """The key block and the upload-generate-download block, as the README has them."""
    bash = [code for language, code in quick_start_blocks() if language == "bash"]
    return bash[0] + "\n" + bash[1]


def test_the_quick_start_stops_with_the_servers_error_on_a_wrong_key(clone: Clone) -> None:
    wrong = first_steps().replace(
        "export CASTFRAME_API_KEY=$(cat .castframe/dev_api_key)",
        "export CASTFRAME_API_KEY=afk_live_mistyped",
    )
    ran = clone.bash(wrong + '\necho "reached: $REF"')
    assert ran.stderr.strip() == "error: invalid_api_key: Invalid API key", ran.stderr
    assert "reached: \n" in ran.stdout  # the steps after the failed one did not run
    assert not (clone.folder / "detective.png").exists()


def test_the_quick_start_says_what_is_wrong_without_the_file_or_the_server(
    clone: Clone,
) -> None:
    (clone.folder / "docs" / "gallery" / "reference.png").unlink()
    ran = clone.bash(first_steps())
    assert ran.returncode != 0
    assert "Failed to open/read local data" in ran.stderr  # curl names the missing file
    assert "error: no JSON answer from the server" in ran.stderr
    assert "Traceback" not in ran.stderr

    shutil.copy(ROOT / "docs" / "gallery" / "reference.png", clone.folder / "docs" / "gallery")
    down = f"http://127.0.0.1:{free_port()}"
    ran = clone.bash(first_steps(), CASTFRAME_BASE_URL=down)
    assert ran.returncode != 0
    assert f"Failed to connect to 127.0.0.1 port {down.rsplit(':', 1)[1]}" in ran.stderr
    assert "Traceback" not in ran.stderr
