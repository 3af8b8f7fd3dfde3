"""SSE across API processes, and the `castframe generate` / `jobs` commands against a server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.e2e.conftest import ROOT, Castframe
from tests.support.images import astronaut_png

pytestmark = pytest.mark.e2e


def test_sse_from_another_api_process(castframe_any: Castframe, tmp_path: Path) -> None:
    deployment = castframe_any
    _, submitter = deployment.server()  # runs the worker
    _, streamer = deployment.server("--no-worker")
    key = deployment.key()
    headers = {"X-API-Key": key}
    upload = httpx.post(
        f"{submitter}/v2/uploads",
        headers=headers,
        files={"file": ("r.png", astronaut_png(), "image/png")},
    ).json()
    assert upload["url"].startswith(f"{submitter}/v2/files/uploads/")
    body = {
        "prompt": "a knight",
        "model": "ideogram-character",
        "ideogramParams": {
            "character_reference_image": upload["url"],
            "rendering_speed": "quality",
            "num_images": 3,
        },
    }
    job_id = httpx.post(f"{submitter}/v2/images/generate", json=body, headers=headers).json()[
        "jobId"
    ]
    seen = []
    with httpx.stream(
        "GET", f"{streamer}/v2/jobs/{job_id}/events", headers=headers, timeout=60
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: {") and '"id"' in line:
                seen.append(json.loads(line[6:]))
            if line.startswith("event: end"):
                break
    statuses = [event["status"] for event in seen]
    assert statuses[-1] == "COMPLETED"
    assert "PROCESSING" in statuses or len(seen) > 1
    result = seen[-1]["result"]
    assert len(result["images"]) == 3 and all(isinstance(url, str) for url in result["images"])
    assert [d["width"] for d in result["imageDetails"]] == [1024] * 3


def run_cli(
    deployment: Castframe, base: str, key: str, *args: str
) -> subprocess.CompletedProcess[str]:
    env = {**deployment.env, "CASTFRAME_API_KEY": key, "CASTFRAME_BASE_URL": base}
    return subprocess.run(
        [sys.executable, "-m", "castframe.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_generate_command_writes_files_and_reports_errors(
    castframe_sqlite: Castframe, tmp_path: Path
) -> None:
    deployment = castframe_sqlite
    _, base = deployment.server()
    key = deployment.key(mode="test", credits=0)
    ref = tmp_path / "me.png"
    ref.write_bytes(astronaut_png())
    out = tmp_path / "images"
    done = run_cli(
        deployment,
        base,
        key,
        "generate",
        "a knight in a misty forest",
        "--ref",
        str(ref),
        "--aspect-ratio",
        "16:9",
        "--style",
        "FICTION",
        "--speed",
        "turbo",
        "--seed",
        "7",
        "--num-images",
        "2",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    paths = [Path(line.split()[0]) for line in done.stdout.splitlines()]
    assert len(paths) == 2 and all(p.parent == out for p in paths)
    assert {Image.open(p).size for p in paths} == {(1312, 736)}
    assert "seed 7" in done.stdout and "seed 8" in done.stdout
    as_json = run_cli(
        deployment,
        base,
        key,
        "generate",
        "at the beach",
        "--ref",
        str(ref),
        "--speed",
        "turbo",
        "--json",
        "--out",
        str(out),
    )
    report = json.loads(as_json.stdout)
    assert report["status"] == "COMPLETED" and len(report["files"]) == 1
    assert (report["error"], report["errorCode"]) == (None, None)
    (image,) = report["images"]
    assert image["url"].startswith(f"{base}/v2/files/") and (image["width"], image["height"]) == (
        1024,
        1024,
    )
    queued = run_cli(deployment, base, key, "generate", "later", "--ref", str(ref), "--no-wait")
    assert queued.returncode == 0 and len(queued.stdout.strip()) == 36
    bad = run_cli(deployment, base, key, "generate", "x", "--ref", str(ref), "--style", "ANIME")
    assert bad.returncode == 1
    assert "error: validation_error: " in bad.stderr
    assert "  ideogramParams.style_type: " in bad.stderr  # details, by JSON path
    failed = run_cli(
        deployment, base, key, "generate", "x", "--ref", "http://127.0.0.1:9/nothing.png"
    )
    assert failed.returncode == 1 and "error: reference_fetch_failed: " in failed.stderr
    wrong_key = run_cli(deployment, base, "afk_test_nope", "jobs", "list")
    assert wrong_key.returncode == 1 and "invalid_api_key" in wrong_key.stderr
    listed = run_cli(deployment, base, key, "jobs", "list", "--json")
    jobs = json.loads(listed.stdout)
    assert len(jobs) == 4  # the refused submission created no job
    assert jobs[0]["status"] == "FAILED" and jobs[0]["errorCode"] == "reference_fetch_failed"
    assert isinstance(jobs[0]["error"], str) and jobs[0]["error"]
    job_id = report["id"]
    shown = run_cli(deployment, base, key, "jobs", "show", job_id)
    raw = json.loads(shown.stdout)
    assert raw["id"] == job_id and raw["expired"] is False
    # The same file, signed afresh at each read.
    assert [url.split("?")[0] for url in raw["result"]["images"]] == [image["url"].split("?")[0]]
    canceled = run_cli(deployment, base, key, "jobs", "cancel", job_id)
    assert canceled.returncode == 1 and "job_not_cancelable" in canceled.stderr
