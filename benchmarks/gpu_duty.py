"""GPU duty cycle: how much of a (stand-in) GPU's time the worker keeps busy, against the
worker of a baseline commit measured in the same run.

Each deployment is real processes with default settings (faces on unless asked otherwise): a
``castframe serve --no-worker`` API and a ``castframe worker``, on SQLite or PostgreSQL, the
engine a stand-in GPU (benchmarks/gpu_standin.py: one lock per device, N ms per image with the
GIL released, a real 1024x1024 picture with a face). Jobs are submitted over HTTP and all name
one uploaded reference, as a client using a saved picture would. After a warm-up, the measured
jobs are submitted at once; the rate is taken between the completions of the first and the
last of them (steady state, not start-up), and

    duty cycle = images/s x seconds per image / devices

(1.0: the devices never waited for the CPU). The baseline is the same benchmark against the
``src/`` of another commit (default: the merge-base of this branch with ``main``), exported
with ``git archive`` beside this checkout; it is given ``2 x devices`` slots (its default is 2
slots, and it has no ``--devices``), this checkout ``--devices`` when there are several.

    python benchmarks/gpu_duty.py                       # the whole matrix (about 25 minutes)
    python benchmarks/gpu_duty.py --ms 500 --devices 1 --faces on --db sqlite --seconds 8
    python benchmarks/gpu_duty.py --no-baseline --ms 250 2000
    python benchmarks/gpu_duty.py --baseline-ref HEAD~3

Needs PostgreSQL at CASTFRAME_BENCH_POSTGRES (default postgresql://postgres@127.0.0.1/test)
for ``--db postgres``: a fresh database is created and dropped per deployment.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.queue_bench import free_port, wait_until_idle  # noqa: E402
from castframe.store.db import Database  # noqa: E402
from castframe.store.tables import jobs, ledger, status_is  # noqa: E402

ADMIN = os.environ.get("CASTFRAME_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
ENGINE = "benchmarks.gpu_standin:StandInGpuEngine"


@dataclass(frozen=True)
class Version:
    """A checkout's ``src/`` to run, and whether its worker takes ``--devices``."""

    label: str
    src: Path

    @property
    def has_devices(self) -> bool:
        return "--devices" in (self.src / "castframe" / "cli.py").read_text()


@dataclass(frozen=True)
class Case:
    db: str
    ms: int
    devices: int
    faces: bool

    def __str__(self) -> str:
        return (
            f"{self.db:8s} {self.ms:5d} ms  {self.devices} device(s)  "
            f"faces {'on ' if self.faces else 'off'}"
        )


@dataclass(frozen=True)
class Measured:
    images_per_second: float
    duty: float
    cpu: dict[str, float]
    """CPU seconds per measured image, by process (api, worker, its child processes), the
    seconds per image their threads waited for a CPU (``... waited``), and ``cores``: the CPU
    they used over the measured wall time."""

    def cpu_line(self) -> str:
        return "  ".join(
            f"{name} {value:.2f}" if name == "cores" else f"{name} {value * 1000:.0f} ms"
            for name, value in self.cpu.items()
        )


def cpu_seconds(pids: list[int]) -> dict[str, float]:
    """Seconds on a CPU of the API, the worker and the worker's children so far, and
    ``<name> waited``: seconds their threads were runnable but waited for a CPU (the
    machine's other load, or each other). From Linux's /proc/<pid>/task/*/schedstat: no dependency for two numbers."""

    def tasks(pid: int) -> list[tuple[float, float]]:
        found = []
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                ran, waited, _ = (task / "schedstat").read_text().split()
            except (OSError, ValueError):  # exited meanwhile
                continue
            found.append((int(ran) / 1e9, int(waited) / 1e9))
        return found

    def children(pid: int) -> list[int]:
        found = []
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                found += [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                continue
        return found + [grand for child in found for grand in children(child)]

    api, worker = pids
    groups = {
        "api": tasks(api),
        "worker": tasks(worker),
        "children": [entry for child in children(worker) for entry in tasks(child)],
    }
    found = {name: sum(ran for ran, _ in entries) for name, entries in groups.items()}
    found.update(
        {f"{name} waited": sum(wait for _, wait in entries) for name, entries in groups.items()}
    )
    return found


def export_baseline(ref: str, into: Path) -> Version:
    """``src/`` of ``ref``, exported (no worktree is registered, nothing in .git changes)."""
    sha = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", ref],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    target = into / f"baseline-{sha}"
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", sha, "src"],
        check=True,
        capture_output=True,
    ).stdout
    target.mkdir(parents=True, exist_ok=True)
    tar_path = target / "src.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(target, filter="data")
    return Version(f"baseline {sha}", target / "src")


class Deployment:
    """An API process and a worker process of one version, on one database; killed on exit."""

    def __init__(
        self,
        version: Version,
        case: Case,
        database_url: str,
        data_dir: Path,
        face_processes: int | None = None,
    ) -> None:
        self.version = version
        self.case = case
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CASTFRAME_")}
        self.env.update(
            {
                "CASTFRAME_DATABASE_URL": database_url,
                "CASTFRAME_DATA_DIR": str(data_dir),
                "CASTFRAME_ROUTES": "ideogram-character=" + ENGINE,
                # The same engine for a baseline from before the route table existed.
                "CASTFRAME_ENGINE_IDEOGRAM_CHARACTER": ENGINE,
                "CASTFRAME_GPU_STANDIN_MS": str(case.ms),
                "CASTFRAME_GPU_STANDIN_DEVICES": str(case.devices),
                "CASTFRAME_FACES_ENABLED": "true" if case.faces else "false",
                "CASTFRAME_RATE_LIMIT_BURST": "100000",
                "CASTFRAME_RATE_LIMIT_PER_SECOND": "100000",
                "CASTFRAME_MAX_ACTIVE_JOBS": "100000",
                "CASTFRAME_SECRET_KEY": "bench",
                "CASTFRAME_LOG_FORMAT": "text",
                # The version's code first; this checkout's root for the stand-in engine.
                "PYTHONPATH": os.pathsep.join((str(version.src), str(ROOT))),
            }
        )
        if face_processes is not None:  # unknown to older versions: ignored there
            self.env["CASTFRAME_FACE_PROCESSES"] = str(face_processes)
        self.procs: list[subprocess.Popen[bytes]] = []

    def run(self, *args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "castframe.cli", *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def spawn(self, *args: str) -> None:
        self.procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "castframe.cli", *args],
                env=self.env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

    def start(self) -> str:
        """Migrate, start the API and the worker; returns the API's base URL."""
        self.run("migrate")
        port = free_port()
        self.spawn("serve", "--no-worker", "--port", str(port))
        devices = self.case.devices
        if self.version.has_devices and devices > 1:
            names = ",".join(f"standin:{index}" for index in range(devices))
            self.spawn("worker", "--devices", names)
        elif devices > 1:
            self.spawn("worker", "--concurrency", str(2 * devices))
        else:
            self.spawn("worker")
        base = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    wait_until_idle([proc.pid for proc in self.procs])
                    return base
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise SystemExit("the API did not start")

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGKILL)
            proc.wait()


def reference_png() -> bytes:
    import io

    from PIL import Image
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buffer, format="PNG")
    return buffer.getvalue()


def submit(client: httpx.Client, base: str, key: str, reference: str, seeds: range) -> None:
    for seed in seeds:
        body = {
            "prompt": f"the character in a city street at night, take {seed}",
            "model": "ideogram-character",
            "ideogramParams": {"character_reference_image": reference, "seed": seed},
        }
        reply = client.post(f"{base}/v2/images/generate", json=body, headers={"X-API-Key": key})
        if reply.status_code != 202:
            raise SystemExit(f"submission failed: {reply.status_code} {reply.text}")


def wait_done(db: Database, timeout: float) -> None:
    pending = sa.select(
        sa.exists().where(
            sa.or_(status_is(jobs.c.status, "QUEUED"), status_is(jobs.c.status, "PROCESSING"))
        )
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with db.read() as conn:
            if not conn.execute(pending).scalar():
                return
        time.sleep(0.05)
    raise SystemExit("jobs did not finish in time")


def measure(
    version: Version, case: Case, seconds: float, root: Path, face_processes: int | None = None
) -> Measured:
    """One deployment: warm up, then the measured jobs; the steady-state rate."""
    if case.db == "sqlite":
        url, database = f"sqlite:///{root}/{uuid.uuid4().hex[:8]}.db", None
    else:
        database = f"castframe_duty_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{database}"')
        url = ADMIN.rsplit("/", 1)[0] + "/" + database
    deployment = Deployment(version, case, url, root / uuid.uuid4().hex[:8], face_processes)
    db = Database(url)
    try:
        base = deployment.start()
        key = deployment.run(
            "keys", "create", "--account", "duty", "--credits", "100000000"
        ).split()[-1]
        with httpx.Client(timeout=60) as client:
            uploaded = client.post(
                f"{base}/v2/uploads",
                files={"file": ("ref.png", reference_png(), "image/png")},
                headers={"X-API-Key": key},
            )
            uploaded.raise_for_status()
            reference = str(uploaded.json()["reference"])
            warmup = 2 * case.devices
            submit(client, base, key, reference, range(warmup))
            wait_done(db, 120 + warmup * case.ms / 100)
            count = max(4, math.ceil(seconds * 1000 / case.ms)) * case.devices
            pids = [proc.pid for proc in deployment.procs]
            cpu_before, wall_before = cpu_seconds(pids), time.monotonic()
            started = time.time()
            submit(client, base, key, reference, range(warmup, warmup + count))
            wait_done(db, 120 + count * case.ms / 100)
            cpu_after, wall = cpu_seconds(pids), time.monotonic() - wall_before
        used = {name: cpu_after[name] - cpu_before[name] for name in cpu_after}
        cpu = {name: value / count for name, value in used.items()}
        cpu["cores"] = (used["api"] + used["worker"] + used["children"]) / wall
        with db.read() as conn:
            finished = sorted(
                row[0]
                for row in conn.execute(
                    sa.select(jobs.c.completed_at).where(
                        jobs.c.created_at >= started, jobs.c.status == "COMPLETED"
                    )
                )
            )
            captured = conn.execute(
                sa.select(sa.func.count()).select_from(ledger).where(ledger.c.kind == "capture")
            ).scalar()
        if len(finished) != count or captured != count + warmup:
            raise SystemExit(f"{len(finished)} of {count} completed, {captured} captures")
        first = case.devices - 1
        rate = (count - case.devices) / (finished[-1] - finished[first])
        return Measured(rate, rate * case.ms / 1000 / case.devices, cpu)
    finally:
        deployment.stop()
        db.dispose()
        if database:
            with psycopg.connect(ADMIN, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def default_baseline() -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), "merge-base", "HEAD", "main"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ms", type=int, nargs="+", default=[250, 500, 2000])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--faces", choices=["on", "off"], nargs="+", default=["on", "off"])
    parser.add_argument(
        "--db", choices=["sqlite", "postgres"], nargs="+", default=["sqlite", "postgres"]
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=12.0,
        help="engine seconds per device in each measurement (default 12; at least 4 jobs)",
    )
    parser.add_argument("--baseline-ref", default=None, help="default: merge-base with main")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument(
        "--face-processes",
        type=int,
        default=None,
        help="CASTFRAME_FACE_PROCESSES for this checkout (default: its default)",
    )
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="also print CPU per image by process, and the time waited for a CPU (Linux /proc)",
    )
    args = parser.parse_args()
    current = Version("this checkout", ROOT / "src")
    with tempfile.TemporaryDirectory(prefix="castframe-duty-") as tmp:
        root = Path(tmp)
        baseline = None
        if not args.no_baseline:
            baseline = export_baseline(args.baseline_ref or default_baseline(), root)
        print(
            f"duty cycle = images/s x s per image / devices; {args.seconds:g} engine-seconds per "
            f"device measured per case; {current.label} vs {baseline.label if baseline else '-'}"
        )
        for db in args.db:
            for ms in args.ms:
                for devices in args.devices:
                    for faces in args.faces:
                        case = Case(db, ms, devices, faces == "on")
                        now = measure(current, case, args.seconds, root, args.face_processes)
                        line = f"{case}:  {now.images_per_second:5.2f} img/s  duty {now.duty:4.0%}"
                        if baseline is not None:
                            then = measure(baseline, case, args.seconds, root)
                            line += (
                                f"   baseline {then.images_per_second:5.2f} img/s  duty "
                                f"{then.duty:4.0%}   x{now.images_per_second / then.images_per_second:4.2f}"
                            )
                        print(line, flush=True)
                        if args.cpu:
                            print(f"    cpu per image, this checkout: {now.cpu_line()}")
                            if baseline is not None:
                                print(f"    cpu per image, baseline:      {then.cpu_line()}")


if __name__ == "__main__":
    main()
