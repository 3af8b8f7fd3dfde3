"""Hold Apiframe's own OpenAPI contract against a freshly started Castframe (schemathesis).

Castframe promises to speak Apiframe's v2 image API exactly, so the contract we test against is
Apiframe's document (``--spec`` or ``APIFRAME_SPEC``; by default
``../shared/research/apiframe-v2-openapi.json`` beside the repo, or beside its main checkout when
run from a git worktree), not the one Castframe serves about itself. This script:

1. starts ``castframe migrate``, ``castframe dev-key`` and ``castframe serve`` (what ``make run``
   does) on a free loopback port with a throwaway data dir, from this checkout's ``src/``;
2. reads the server's own ``/openapi.json`` and ``/v2/models`` to learn which of Apiframe's
   operations and which ``model`` variants it serves, and writes a trimmed copy of Apiframe's
   document with only those (path parameter names may differ: ``{id}`` and ``{job_id}`` match);
3. runs schemathesis (every check) once per served variant of ``POST /v2/images/generate``
   (so each model is exercised, however few examples) and once for the other operations, with
   the dev key in ``X-API-Key``;
4. prints one line per run and exits 1 if any run found a failure (2 if the server never came up).

What Apiframe does that its document does not say lives in ``scripts/spec_check_hooks.py``
(schemathesis hooks; read its docstring):

- **The 409 of a reused ``Idempotency-Key`` is accepted.** Apiframe's document lists no 409,
  but its official SDK maps 409 to ``ConflictError`` ("replayed an idempotency key with a
  different request body"). A ``filter_failure`` hook drops every check's failure for a 409
  whose body's ``code`` is ``idempotency_key_reused`` or ``idempotency_key_in_use``; any other
  409 still fails. (Most drawn keys also get a unique suffix so bodies are really validated.)
- ``cursor`` on ``GET /v2/jobs`` is left out: it is an opaque server-issued token.
- **``positive_data_acceptance`` is not run.** It expects a 2xx for every body the document
  allows, but the document types the providers' enums as free strings (``style_type``,
  ``aspect_ratio``, ``resolution``…) and states none of the providers' rules (FLUX's width
  and height or ratio and resolution; an outpaint choice with mode outpaint; a minimum image
  size). Castframe checks those at submission, as the provider would, each a documented 400
  (docs/apiframe-compatibility.md, "Where Castframe accepts less"); accepting them would mean
  failing the job later or dropping the value silently. Every other check runs, including
  ``negative_data_rejection`` (what the document forbids must be refused).
- **``missing_required_header`` is not run.** The key goes in ``X-API-Key`` through
  ``--header``, which schemathesis adds to every request, so that check's "header left out"
  cases still carry it (and answer 202). A request without a key is ``401 missing_api_key``
  (tests/test_api_core.py, tests/test_contract.py).
- The trimmed document's ``security`` drops ``BearerAuth`` (Apiframe's dashboard login with
  Supabase JWTs, which the document says SDK users do not use).

Runtime is bounded by ``--max-examples`` (per operation and run; default 10 keeps the whole run
around five minutes on two busy cores). Reports (JUnit XML, one per run) stay in the work dir
with ``--keep``. Nothing here needs the network beyond 127.0.0.1.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SPEC_IN_SHARED = Path("shared") / "research" / "apiframe-v2-openapi.json"
HOOKS = Path(__file__).resolve().parent / "spec_check_hooks.py"
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def default_spec() -> Path:
    """``../shared/research/...`` beside the repo, or beside its main checkout (a worktree)."""
    roots = [REPO]
    try:
        common = subprocess.run(
            ["git", "rev-parse", "--path-format=absolute", "--git-common-dir"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        roots.append(Path(common).parent)
    except (OSError, subprocess.CalledProcessError):
        pass
    candidates = [root.parent / SPEC_IN_SHARED for root in roots]
    return next((path for path in candidates if path.exists()), candidates[0])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def template(path: str) -> str:
    """``/v2/jobs/{id}`` and ``/v2/jobs/{job_id}`` are the same operation."""
    return re.sub(r"\{[^}]*\}", "{}", path)


def get_json(url: str, key: str | None = None) -> Any:
    request = urllib.request.Request(url, headers={"X-API-Key": key} if key else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


class Server:
    """A Castframe started the way ``make run`` starts it, in its own data dir."""

    def __init__(self, python: str, workdir: Path, port: int, worker: bool) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.data_dir = workdir / "data"
        self.log_path = workdir / "server.log"
        self.env = dict(os.environ)
        self.env.update(
            CASTFRAME_DATA_DIR=str(self.data_dir),
            CASTFRAME_HOST="127.0.0.1",
            CASTFRAME_PORT=str(port),
            CASTFRAME_DATABASE_URL="",
            CASTFRAME_DEV_CREDITS="100000000",
            # schemathesis submits far faster than a client would; 429s would hide the rest.
            CASTFRAME_RATE_LIMIT_PER_SECOND="100000",
            CASTFRAME_RATE_LIMIT_BURST="100000",
            PYTHONPATH=os.pathsep.join(
                [str(REPO / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
        )
        self.cli = [python, "-m", "castframe.cli"]
        self.worker = worker
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, wait: float = 60.0) -> str:
        """Migrate, create the dev key, serve; return the key once /healthz answers."""
        self.data_dir.mkdir(parents=True)
        subprocess.run([*self.cli, "migrate"], env=self.env, check=True, capture_output=True)
        subprocess.run([*self.cli, "dev-key"], env=self.env, check=True, capture_output=True)
        key = (self.data_dir / "dev_api_key").read_text().strip()
        args = [*self.cli, "serve"] + ([] if self.worker else ["--no-worker"])
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"castframe serve exited with {self.process.returncode}")
            try:
                get_json(self.base + "/healthz")
                return key
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.3)
        raise RuntimeError(f"castframe serve did not answer /healthz within {wait:.0f}s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def served_operations(server_openapi: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (template(path), method)
        for path, item in server_openapi.get("paths", {}).items()
        for method in item
        if method in HTTP_METHODS
    }


def served_models(models_body: Any) -> set[str]:
    """Model ids from ``GET /v2/models`` (a list, or an object holding one under data/models)."""
    items = models_body
    if isinstance(models_body, dict):
        items = models_body.get("data") or models_body.get("models") or []
    return {item["id"] for item in items if isinstance(item, dict) and "id" in item}


def resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = spec
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


def body_schema(spec: dict[str, Any], operation: dict[str, Any]) -> dict[str, Any] | None:
    content = operation.get("requestBody", {}).get("content", {}).get("application/json")
    return resolve(spec, content["schema"]) if content and "schema" in content else None


def variant_models(variant: dict[str, Any]) -> list[str]:
    model = variant.get("properties", {}).get("model", {})
    return list(model.get("enum", [])) or ([model["const"]] if "const" in model else [])


def trim_variants(
    spec: dict[str, Any], operation: dict[str, Any], models: set[str]
) -> list[dict[str, Any]]:
    """Replace a ``oneOf`` body by its served variants (enums narrowed); return them."""
    schema = body_schema(spec, operation)
    if not schema or "oneOf" not in schema:
        return []
    kept = []
    for variant in schema["oneOf"]:
        variant = resolve(spec, variant)
        ids = [m for m in variant_models(variant) if m in models]
        if ids:
            variant = copy.deepcopy(variant)
            variant["properties"]["model"] = {"type": "string", "enum": ids}
            kept.append(variant)
    content = operation["requestBody"]["content"]["application/json"]
    content["schema"] = {**{k: v for k, v in schema.items() if k != "oneOf"}, "oneOf": kept}
    return kept


def build_spec(
    apiframe: dict[str, Any], served: set[tuple[str, str]], models: set[str], base: str
) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    """Apiframe's document cut down to what Castframe serves; also the generate variants."""
    spec = copy.deepcopy(apiframe)
    spec["servers"] = [{"url": base}]
    schemes = spec.get("components", {}).get("securitySchemes", {})
    schemes.pop("BearerAuth", None)
    paths: dict[str, Any] = {}
    names: list[str] = []
    generate_variants: list[dict[str, Any]] = []
    for path, item in spec["paths"].items():
        ops = {
            method: op
            for method, op in item.items()
            if method in HTTP_METHODS and (template(path), method) in served
        }
        if not ops:
            continue
        for method, op in ops.items():
            names.append(f"{method.upper()} {path}")
            if "security" in op:
                op["security"] = [s for s in op["security"] if "BearerAuth" not in s]
            variants = trim_variants(spec, op, models)
            if (path, method) == ("/v2/images/generate", "post"):
                generate_variants = variants
        paths[path] = {k: v for k, v in item.items() if k not in HTTP_METHODS} | ops
    spec["paths"] = paths
    return spec, generate_variants, names


def only_variant(spec: dict[str, Any], variant: dict[str, Any]) -> dict[str, Any]:
    one = copy.deepcopy(spec)
    one["paths"] = {"/v2/images/generate": one["paths"]["/v2/images/generate"]}
    content = one["paths"]["/v2/images/generate"]["post"]["requestBody"]["content"]
    content["application/json"]["schema"] = variant
    return one


def without_generate(spec: dict[str, Any]) -> dict[str, Any]:
    rest = copy.deepcopy(spec)
    item = rest["paths"].get("/v2/images/generate", {})
    item.pop("post", None)
    if not set(item) & HTTP_METHODS:
        rest["paths"].pop("/v2/images/generate", None)
    return rest


def junit_failures(path: Path) -> list[str]:
    """``operation: message`` for each failed or errored test case in a JUnit report."""
    if not path.exists():
        return ["(no report written)"]
    found = []
    for case in ET.parse(path).getroot().iter("testcase"):
        for tag in ("failure", "error"):
            for node in case.findall(tag):
                text = (node.get("message") or node.text or "").strip().splitlines()
                found.append(f"{case.get('name')}: {text[0] if text else tag}")
    return found


def run_schemathesis(
    st: list[str], spec_path: Path, base: str, key: str, args: argparse.Namespace, report: Path
) -> int:
    command = [
        *st,
        "run",
        str(spec_path),
        "--url",
        base,
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance,missing_required_header",
        "--header",
        f"X-API-Key: {key}",
        "--max-examples",
        str(args.max_examples),
        "--seed",
        str(args.seed),
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--continue-on-failure",
        "--report",
        "junit",
        "--report-junit-path",
        str(report),
        "--suppress-health-check",
        "all",
    ]
    if args.phases:
        command += ["--phases", args.phases]
    env = dict(
        os.environ, SCHEMATHESIS_TELEMETRY="false", NO_COLOR="1", SCHEMATHESIS_HOOKS=str(HOOKS)
    )
    # In the work dir: schemathesis keeps a crash cache (.schemathesis/) in its working directory.
    return subprocess.run(command, env=env, cwd=report.parent).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--spec",
        type=Path,
        default=Path(os.environ["APIFRAME_SPEC"]) if os.environ.get("APIFRAME_SPEC") else None,
        help="Apiframe's OpenAPI document (env APIFRAME_SPEC).",
    )
    parser.add_argument(
        "--max-examples",
        type=int,
        default=int(os.environ.get("SPEC_CHECK_MAX_EXAMPLES", "10")),
        help="Examples per operation and run (env SPEC_CHECK_MAX_EXAMPLES).",
    )
    parser.add_argument("--seed", type=int, default=int(os.environ.get("SPEC_CHECK_SEED", "1")))
    parser.add_argument("--phases", default="", help="schemathesis phases (default: all).")
    parser.add_argument("--only", default="", help="Run only runs whose name contains this.")
    parser.add_argument("--no-worker", action="store_true", help="Serve without the worker.")
    parser.add_argument("--keep", action="store_true", help="Keep the work dir (logs, reports).")
    args = parser.parse_args()

    python = sys.executable
    st_bin = Path(python).parent / "schemathesis"
    st = [str(st_bin)] if st_bin.exists() else [python, "-m", "schemathesis.cli"]
    spec_file = args.spec or default_spec()
    if not spec_file.exists():
        print(f"spec_check: Apiframe's OpenAPI document not found at {spec_file} (--spec)")
        return 2
    apiframe = json.loads(spec_file.read_text())
    workdir = Path(tempfile.mkdtemp(prefix="castframe-spec-check-"))
    server = Server(python, workdir, free_port(), worker=not args.no_worker)
    try:
        try:
            key = server.start()
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            print(f"spec_check: the server did not start: {exc}; log: {server.log_path}")
            args.keep = True
            return 2
        served = served_operations(get_json(server.base + "/openapi.json"))
        models = served_models(get_json(server.base + "/v2/models", key))
        spec, variants, names = build_spec(apiframe, served, models, server.base)
        print(f"spec_check: {server.base}, Apiframe operations served: {', '.join(names)}")
        runs: list[tuple[str, dict[str, Any]]] = []
        for variant in variants:
            runs.append(
                ("generate " + "|".join(variant_models(variant)), only_variant(spec, variant))
            )
        runs.append(("other operations", without_generate(spec)))
        if args.only:
            runs = [run for run in runs if args.only in run[0]]
        results = []
        for index, (name, run_spec) in enumerate(runs):
            spec_path = workdir / f"spec-{index}.json"
            spec_path.write_text(json.dumps(run_spec, indent=1))
            report = workdir / f"junit-{index}.xml"
            print(f"\n=== spec_check run {index + 1}/{len(runs)}: {name} ===", flush=True)
            code = run_schemathesis(st, spec_path, server.base, key, args, report)
            results.append((name, code, junit_failures(report) if code else []))
        print("\n=== spec_check summary (Apiframe's contract vs Castframe) ===")
        for name, code, failures in results:
            print(
                f"{'PASS' if code == 0 else 'FAIL'}  {name}" + (f"  (exit {code})" if code else "")
            )
            for failure in failures:
                print(f"      {failure}")
        failed = [name for name, code, _ in results if code]
        print(f"{len(results) - len(failed)}/{len(results)} runs passed.")
        if failed:
            args.keep = True
        return 1 if failed else 0
    finally:
        server.stop()
        if args.keep:
            print(f"spec_check: work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
