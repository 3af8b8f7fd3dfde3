"""Client commands of ``castframe``: ``generate`` and ``jobs`` (they talk HTTP via the SDK).

Each takes ``--api-key`` and ``--base-url``, or reads ``CASTFRAME_API_KEY`` and
``CASTFRAME_BASE_URL`` (default http://127.0.0.1:8000). Errors print the server's code and
message and exit with status 1; a server that cannot be reached is said at once, by its URL.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from castframe.client import Castframe, CastframeError, Job

jobs_app = typer.Typer(help="Inspect and cancel jobs on a server.", no_args_is_help=True)

ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="CASTFRAME_API_KEY",
        show_envvar=True,
        help="API key (afk_live_... or afk_test_...; `make run` prints one).",
    ),
]
BaseUrl = Annotated[
    str | None,
    typer.Option(
        "--base-url",
        envvar="CASTFRAME_BASE_URL",
        show_envvar=True,
        help="The Castframe server (default http://127.0.0.1:8000).",
    ),
]


def _client(api_key: str | None, base_url: str | None) -> Castframe:
    """The SDK client; a refused connection fails at once (no retries) with the URL."""
    try:
        return Castframe(api_key=api_key, base_url=base_url, connect_retries=0)
    except CastframeError as error:
        if error.code == "missing_api_key":
            error = CastframeError(
                "missing_api_key",
                "pass --api-key or set CASTFRAME_API_KEY (`make run` prints a development key)",
            )
        _fail(error)


def _fail(error: CastframeError) -> NoReturn:
    typer.echo(f"error: {error.code}: {error.message}", err=True)
    for path, messages in error.details.items():
        for message in messages:
            typer.echo(f"  {path}: {message}", err=True)
    if error.code == "network_error":
        typer.echo(
            "  is the server running there? Start it with `make run` (or `castframe serve`), "
            "or point --base-url / CASTFRAME_BASE_URL at it.",
            err=True,
        )
    raise typer.Exit(1)


def _summary(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "status": job.status,
        "progress": job.progress,
        "creditCost": job.credit_cost,
        "error": job.error,
        "errorCode": job.error_code,
        "images": [
            {"url": i.url, "seed": i.seed, "width": i.width, "height": i.height, "prompt": i.prompt}
            for i in job.images
        ],
    }


def _job_failure(job: Job) -> str:
    """``<code>: <message>`` of a job that did not complete (FAILED or CANCELLED)."""
    code = job.error_code or job.status.lower()
    return f"{code}: {job.error or job.status}"


def generate(
    prompt: Annotated[str, typer.Argument(help="What to draw.")],
    ref: Annotated[
        str | None, typer.Option("--ref", help="Reference: a file, an http(s) URL or data: URI.")
    ] = None,
    character: Annotated[
        str | None, typer.Option(help="A saved character id instead of --ref.")
    ] = None,
    aspect_ratio: Annotated[str | None, typer.Option("--aspect-ratio")] = None,
    style: Annotated[
        str | None, typer.Option(help="AUTO, GENERAL, REALISTIC, DESIGN, FICTION.")
    ] = None,
    speed: Annotated[str | None, typer.Option(help="turbo, default, quality.")] = None,
    magic_prompt: Annotated[
        str | None, typer.Option("--magic-prompt", help="Auto, On, Off.")
    ] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    negative: Annotated[str | None, typer.Option(help="What to leave out.")] = None,
    num_images: Annotated[int | None, typer.Option("--num-images")] = None,
    edit: Annotated[Path | None, typer.Option(help="Image to edit (with --mask).")] = None,
    mask: Annotated[Path | None, typer.Option(help="Mask: black = repaint, white = keep.")] = None,
    out: Annotated[Path, typer.Option(help="Folder for the images.")] = Path("."),
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Print the job id and exit.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the job as JSON.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 600.0,
    api_key: ApiKey = None,
    base_url: BaseUrl = None,
) -> None:
    """Generate images of a character and save them (live progress bar)."""
    if (ref is None) == (character is None):
        _fail(CastframeError("invalid_request", "give exactly one of --ref and --character"))
    if (edit is None) != (mask is None):
        _fail(CastframeError("invalid_request", "--edit and --mask go together"))
    params: dict[str, Any] = {
        "aspect_ratio": aspect_ratio,
        "style_type": style,
        "rendering_speed": speed,
        "magic_prompt_option": magic_prompt,
        "seed": seed,
        "negative_prompt": negative,
        "num_images": num_images,
        "character_id": character,
        "image": edit,
        "mask": mask,
    }
    with _client(api_key, base_url) as client:
        try:
            job_id = client.submit(prompt, ref, **params)
            if no_wait:
                typer.echo(json.dumps({"id": job_id, "status": "QUEUED"}) if as_json else job_id)
                return
            job = _wait_with_progress(client, job_id, timeout, quiet=as_json)
            paths = client.download(job, out) if job.status == "COMPLETED" else []
        except CastframeError as error:
            _fail(error)
        except TimeoutError as exc:
            typer.echo(f"error: timeout: {exc}", err=True)
            raise typer.Exit(1) from exc
    if as_json:
        typer.echo(json.dumps({**_summary(job), "files": [str(p) for p in paths]}))
    elif job.status == "COMPLETED":
        for path, image in zip(paths, job.images, strict=True):
            typer.echo(f"{path}  (seed {image.seed})" if image.seed is not None else str(path))
    if job.status != "COMPLETED":
        typer.echo(f"error: {_job_failure(job)}", err=True)
        raise typer.Exit(1)


def _wait_with_progress(client: Castframe, job_id: str, timeout: float, quiet: bool) -> Job:
    if quiet or not sys.stderr.isatty():
        return client.wait(job_id, timeout=timeout)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        transient=True,
    ) as progress:
        task = progress.add_task(f"{job_id[:8]} QUEUED", total=100)

        def update(job: Job) -> None:
            progress.update(task, completed=job.progress, description=f"{job_id[:8]} {job.status}")

        return client.wait(job_id, timeout=timeout, on_progress=update)


@jobs_app.command("list")
def jobs_list(
    status: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option()] = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    api_key: ApiKey = None,
    base_url: BaseUrl = None,
) -> None:
    """Your recent jobs, newest first."""
    with _client(api_key, base_url) as client:
        try:
            found = client.list_jobs(status=status, limit=limit).jobs
        except CastframeError as error:
            _fail(error)
    if as_json:
        typer.echo(json.dumps([_summary(job) for job in found]))
        return
    for job in found:
        typer.echo(f"{job.id}  {job.status:10} {job.progress:>3}%  {len(job.images)} image(s)")


@jobs_app.command("show")
def jobs_show(job_id: str, api_key: ApiKey = None, base_url: BaseUrl = None) -> None:
    """One job as JSON."""
    with _client(api_key, base_url) as client:
        try:
            job = client.get_job(job_id)
        except CastframeError as error:
            _fail(error)
    typer.echo(json.dumps(job.raw, indent=2))


@jobs_app.command("cancel")
def jobs_cancel(job_id: str, api_key: ApiKey = None, base_url: BaseUrl = None) -> None:
    """Cancel a job."""
    with _client(api_key, base_url) as client:
        try:
            job = client.cancel(job_id)
        except CastframeError as error:
            _fail(error)
    typer.echo(f"{job.id} {job.status}")
