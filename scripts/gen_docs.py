"""Generate docs/api.md (from the OpenAPI spec) and docs/errors.md (from castframe.errors).

Run with `make docs`; a test fails when the committed files are out of date, so the reference
can never drift from the code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from castframe.app import create_app
from castframe.config import COMPONENTS, Settings, component_of
from castframe.errors import ERROR_CODES, JOB_ERROR_CODES, MAX_PROBLEM_CHARS, MAX_PROBLEMS

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _schema_rows(schema: dict[str, Any], components: dict[str, Any], prefix: str = "") -> list[str]:
    rows = []
    required = set(schema.get("required", []))
    for name, prop in schema.get("properties", {}).items():
        prop = _resolve(prop, components)
        kind = _type_name(prop, components)
        default = prop.get("default")
        text = (prop.get("description") or "").replace("\n", " ")
        extra = []
        if "enum" in prop:
            extra.append("one of " + ", ".join(f"`{v}`" for v in prop["enum"]))
        for bound, label in (
            ("minimum", "min"),
            ("maximum", "max"),
            ("minLength", "min length"),
            ("maxLength", "max length"),
        ):
            if bound in prop:
                extra.append(f"{label} {prop[bound]}")
        if default is not None:
            extra.append(f"default `{json.dumps(default)}`")
        detail = "; ".join(part for part in [text, *extra] if part)
        rows.append(
            f"| `{prefix}{name}` | {kind} | {'yes' if name in required else ''} | {detail} |"
        )
        if prop.get("type") == "object" and "properties" in prop:
            rows += _schema_rows(prop, components, prefix=f"{prefix}{name}.")
    return rows


def _resolve(prop: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in prop:
        return dict(components[prop["$ref"].rsplit("/", 1)[-1]])
    options = [p for p in prop.get("anyOf", []) if p.get("type") != "null"]
    if len(options) == 1:
        merged = {**prop, **_resolve(options[0], components)}
        merged.pop("anyOf", None)
        return merged
    return prop


def _type_name(prop: dict[str, Any], components: dict[str, Any]) -> str:
    if "anyOf" in prop:
        return " or ".join(_type_name(_resolve(p, components), components) for p in prop["anyOf"])
    kind = prop.get("type", "object")
    if kind == "array":
        return f"array of {_type_name(_resolve(prop.get('items', {}), components), components)}"
    return str(kind)


def api_markdown(spec: dict[str, Any]) -> str:
    lines = [
        "# API reference",
        "",
        "Generated from the OpenAPI spec by `make docs` (scripts/gen_docs.py). The live spec "
        "is at `/openapi.json` and interactive docs at `/docs` on a running server.",
        "",
        "Authentication: `X-API-Key: <key>` or `Authorization: Bearer <key>` on every "
        "`/v2` endpoint except `/v2/models` and signed `/v2/files` links. Errors are "
        '`{"error": "<message>", "code": "<code>", "details": {"<json.path>": ["<message>"]}}`; '
        "see [errors.md](errors.md).",
        "",
        "Which of Apiframe's v2 operations and fields Castframe serves, and what it adds: "
        "[apiframe-compatibility.md](apiframe-compatibility.md).",
        "",
    ]
    lines += ["## Endpoints", "", "| method | path | summary |", "|---|---|---|"]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            lines.append(f"| {method.upper()} | `{path}` | {operation.get('summary', '')} |")
    body = spec["paths"]["/v2/images/generate"]["post"]["requestBody"]["content"][
        "application/json"
    ]
    schema = body["schema"]
    components = {**schema.get("$defs", {}), **spec.get("components", {}).get("schemas", {})}
    lines += [
        "",
        "## `POST /v2/images/generate` body (`model: ideogram-character`)",
        "",
        "| field | type | required | notes |",
        "|---|---|---|---|",
    ]
    lines += _schema_rows(schema, components)
    lines += ["", "Example:", "", "```json", json.dumps(body["example"], indent=2), "```", ""]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            params = operation.get("parameters", [])
            if not params:
                continue
            lines += [
                f"### {method.upper()} `{path}` parameters",
                "",
                "| name | in | type | required |",
                "|---|---|---|---|",
            ]
            for param in params:
                kind = _type_name(_resolve(param.get("schema", {}), components), components)
                lines.append(
                    f"| `{param['name']}` | {param['in']} | {kind} | "
                    f"{'yes' if param.get('required') else ''} |"
                )
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def errors_markdown() -> str:
    lines = [
        "# Error codes",
        "",
        "Generated from `castframe/errors.py` by `make docs`. Every HTTP error body is "
        "Apiframe's error envelope plus Castframe's stable `code`:",
        "",
        "```json",
        '{"error": "invalid request (ideogramParams.seed: Input should be a valid integer)",',
        ' "code": "validation_error",',
        ' "details": {"ideogramParams.seed": ["Input should be a valid integer"]}}',
        "```",
        "",
        "`error` is the human message (what Apiframe's SDK puts in its exception), `code` is "
        "stable (branch on it), and `details` maps the JSON path of each field at fault to its "
        "messages; it is `{}` when no field is to blame. An error lists at most "
        f"{MAX_PROBLEMS} problems, and cuts any field path or message over "
        f"{MAX_PROBLEM_CHARS} characters with `…` (a message may quote the value sent, which "
        "may be megabytes long).",
        "",
        "## HTTP errors",
        "",
        "| status | code | meaning |",
        "|---|---|---|",
    ]
    for code, (status, meaning) in sorted(ERROR_CODES.items(), key=lambda kv: (kv[1][0], kv[0])):
        lines.append(f"| {status} | `{code}` | {meaning} |")
    lines += [
        "",
        '`insufficient_credits` is Apiframe\'s 402 body: `"error": "Insufficient credits"`, '
        "`creditsRequired` (the job's price) and `creditsAvailable` (balance less holds), plus "
        "Castframe's `balance` and `held`. `rate_limited`, `too_many_active_jobs`, "
        "`idempotency_key_in_use`, `not_ready` and `storage_unavailable` carry a "
        "`Retry-After` header.",
        "",
        "Apiframe's SDK picks its exception class by status alone: 400 `ValidationError`, 401 "
        "`AuthenticationError`, 402 `InsufficientCreditsError`, 403 `PermissionError`, 404 "
        "`NotFoundError`, 409 `ConflictError`, 429 `RateLimitError`, 5xx `ServerError`; the "
        "other statuses here (405, 410) reach it as its base `ApiframeError`.",
        "",
        "## Job errors",
        "",
        "A job that fails has `status: FAILED` (or `CANCELLED`), `error`: the message (a string, "
        "as Apiframe's job has it) and `errorCode`: one of the codes below. Both are `null` "
        "otherwise. Failed and cancelled jobs are never charged (`creditCost: 0`).",
        "",
        "| code | meaning |",
        "|---|---|",
    ]
    for code, meaning in JOB_ERROR_CODES.items():
        lines.append(f"| `{code}` | {meaning} |")
    return "\n".join(lines) + "\n"


def config_table() -> str:
    """The README's configuration tables, one per component (config.py: COMPONENTS), from
    the Settings fields and their descriptions."""
    groups: dict[str, list[str]] = {component: [] for component, _names in COMPONENTS}
    for name, field in Settings.model_fields.items():
        default = field.default
        if field.default_factory is not None:
            default = field.default_factory()  # type: ignore[call-arg]
        shown = "" if default in ("", None, {}, []) else f"`{default}`"
        row = f"| `CASTFRAME_{name.upper()}` | {shown} | {field.description or ''} |"
        groups[component_of(name) or COMPONENTS[0][0]].append(row)
    sections = []
    for component, rows in groups.items():
        if rows:
            header = ["| variable | default | meaning |", "|---|---|---|"]
            sections.append("\n".join([f"**{component}**", "", *header, *rows]))
    return "\n\n".join(sections)


def readme_with_config(readme: str) -> str:
    start, end = "<!-- config:start -->", "<!-- config:end -->"
    head, _, rest = readme.partition(start)
    _, _, tail = rest.partition(end)
    return f"{head}{start}\n{config_table()}\n{end}{tail}"


def render() -> dict[Path, str]:
    spec = create_app(Settings()).openapi()
    readme = DOCS.parent / "README.md"
    return {
        DOCS / "api.md": api_markdown(spec),
        DOCS / "errors.md": errors_markdown(),
        readme: readme_with_config(readme.read_text()),
    }


def main() -> int:
    check = "--check" in sys.argv
    stale = []
    for path, text in render().items():
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print("out of date (run `make docs`):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
