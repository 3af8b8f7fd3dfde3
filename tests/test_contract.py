"""Castframe's answers against Apiframe v2's published contract, on SQLite and PostgreSQL.

Every operation Castframe shares with Apiframe (``GET /v2/me``, ``GET /v2/models``,
``POST /v2/uploads``, ``POST /v2/images/generate``, ``GET /v2/jobs/{id}``, ``GET /v2/jobs``)
is called for each answer the spec documents, and the status code and body are checked
against the spec's schemas (tests/support/apiframe_schemas.py). Webhooks are checked against
the documented body and ``X-Webhook-Signature`` scheme with a verifier written here.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from tests.conftest import Api, body_for, open_api
from tests.support.apiframe_schemas import (
    ALL,
    ERROR_RESPONSE,
    INSUFFICIENT_CREDITS,
    JOB,
    JOB_ACCEPTED,
    JOB_LIST,
    LIST_JOBS_QUERY,
    ME,
    MODEL_CATALOG,
    MODELS_QUERY,
    UPLOAD,
    VALIDATION_ERROR,
    WEBHOOK_PAYLOAD,
    Schema,
    violations,
)
from tests.support.http import LoopbackServer, Reply
from tests.support.images import astronaut_png
from tests.support.polling import wait_until

Body = Any


def expect(response: Any, status: int, schema: Schema) -> Body:
    """The (TestClient) answer has ``status``, a JSON body matching ``schema``; returns it."""
    where = f"{response.request.method} {response.request.url.path}"
    assert response.status_code == status, f"{where}: {response.status_code} {response.text}"
    assert response.headers["content-type"].startswith("application/json"), where
    body = response.json()
    problems = violations(schema, body)
    assert not problems, f"{where} {status} breaks the contract: {problems}\n{response.text}"
    return body


def auth(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def submit(api: Api, key: str, body: dict[str, Any], **headers: str) -> str:
    accepted = expect(api.generate(key, body, **headers), 202, JOB_ACCEPTED)
    assert accepted["status"] == "QUEUED"
    job_id: str = accepted["jobId"]
    return job_id


# -- the schemas themselves ----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ALL))
def test_schema_is_valid_draft_2020_12(name: str) -> None:
    Draft202012Validator.check_schema(ALL[name])


FORMAT_CASES = [
    ("uuid", str(uuid.uuid4()), True),
    ("uuid", "0b5e7c1e-8f1d-4c7e-9a57-1c2f3e4d5a6b", True),
    ("uuid", "job_0b5e7c1e8f1d4c7e", False),
    ("uuid", "0b5e7c1e8f1d4c7e9a571c2f3e4d5a6b", False),
    ("date-time", "2026-12-01T09:30:00.123Z", True),
    ("date-time", "2026-12-01T09:30:00Z", True),
    ("date-time", "2026-12-01 09:30:00", False),
    ("date-time", "2026-12-01T09:30:00", False),
    ("date-time", "2026-13-01T09:30:00Z", False),
    ("date-time", "1733045400", False),
    ("uri", "https://example.com/a.png?x=1", True),
    ("uri", "http://testserver/v2/files/outputs/a.png", True),
    ("uri", "/v2/files/outputs/a.png", False),
    ("uri", "upload://0b5e7c1e", False),
    ("uri", "ftp://example.com/a.png", False),
    ("uri", "https:///a.png", False),
    ("email", "acme@castframe.local", True),
    ("email", "acme", False),
    ("email", "acme@localhost", False),
    ("email", "a b@castframe.local", False),
]


@pytest.mark.parametrize(("fmt", "value", "valid"), FORMAT_CASES)
def test_formats_are_really_checked(fmt: str, value: str, valid: bool) -> None:
    assert (violations({"type": "string", "format": fmt}, value) == []) is valid


# -- GET /v2/me ----------------------------------------------------------------------------


@pytest.mark.parametrize(("account", "credits"), [("acme", 100_000), ("poor", 0)])
def test_me(api_no_worker: Api, account: str, credits: int) -> None:
    key = api_no_worker.key(account=account, credits=credits)
    me = expect(api_no_worker.client.get("/v2/me", headers=auth(key)), 200, ME)
    assert me["user"]["email"]  # Apiframe's SDK smoke test asserts exactly this
    assert me["user"]["role"] == "OWNER"
    assert me["team"]["credits"] == credits
    assert me["apiKey"] is not None and key.startswith(me["apiKey"]["prefix"])


# -- GET /v2/models ------------------------------------------------------------------------


@pytest.mark.parametrize("query", [{}, {"modality": "image"}, {"modality": "video"}])
def test_models(api_no_worker: Api, query: dict[str, str]) -> None:
    assert violations(MODELS_QUERY, query) == []
    catalog = expect(api_no_worker.client.get("/v2/models", params=query), 200, MODEL_CATALOG)
    modalities = {model["modality"] for model in catalog["models"]}
    if query.get("modality") == "video":
        assert catalog["models"] == []
    else:
        assert modalities == {"image"}
        assert "ideogram-character" in {model["id"] for model in catalog["models"]}


@pytest.mark.parametrize("modality", ["audio", "IMAGE", ""])
def test_models_with_a_bad_modality_is_a_validation_error(
    api_no_worker: Api, modality: str
) -> None:
    assert violations(MODELS_QUERY, {"modality": modality})
    response = api_no_worker.client.get("/v2/models", params={"modality": modality})
    error = expect(response, 400, VALIDATION_ERROR)
    assert "modality" in error.get("details", {}), error


# -- POST /v2/uploads ----------------------------------------------------------------------


def test_upload_is_201_and_its_url_drops_into_an_image_field(api: Api) -> None:
    key = api.key()
    png = astronaut_png()
    response = api.client.post(
        "/v2/uploads", headers=auth(key), files={"file": ("me.png", png, "image/png")}
    )
    upload = expect(response, 201, UPLOAD)
    assert (upload["kind"], upload["contentType"], upload["byteSize"]) == (
        "image",
        "image/png",
        len(png),
    )
    job_id = submit(api, key, body_for(upload["url"]))
    assert api.wait(key, job_id)["status"] == "COMPLETED"


@pytest.mark.parametrize(
    "files",
    [
        pytest.param({"other": ("me.png", astronaut_png(), "image/png")}, id="no file"),
        pytest.param({"file": ("me.png", b"not an image at all", "image/png")}, id="not an image"),
        pytest.param({"file": ("me.png", astronaut_png()[:2000], "image/png")}, id="truncated"),
    ],
)
def test_bad_uploads_are_validation_errors(
    api_no_worker: Api, files: dict[str, tuple[str, bytes, str]]
) -> None:
    key = api_no_worker.key()
    response = api_no_worker.client.post("/v2/uploads", headers=auth(key), files=files)
    error = expect(response, 400, VALIDATION_ERROR)
    assert error["error"]
    assert "file" in error.get("details", {}), error


# -- POST /v2/images/generate --------------------------------------------------------------


def test_generate_is_202_job_accepted(api_no_worker: Api, ref: str) -> None:
    key = api_no_worker.key()
    job_id = submit(api_no_worker, key, body_for(ref))
    job = expect(api_no_worker.client.get(f"/v2/jobs/{job_id}", headers=auth(key)), 200, JOB)
    assert job["status"] == "QUEUED"


def _without_params(body: dict[str, Any]) -> dict[str, Any]:
    body.pop("ideogramParams")
    return body


BAD_BODIES: list[Any] = [
    pytest.param(body_for("https://example.com/me.png", prompt=""), "prompt", id="empty prompt"),
    pytest.param(
        body_for("https://example.com/me.png", prompt="x" * 2001), "prompt", id="long prompt"
    ),
    pytest.param(
        _without_params(body_for("https://example.com/me.png")),
        "ideogramParams",
        id="no ideogramParams",
    ),
    pytest.param(
        body_for("https://example.com/me.png", rendering_speed="fast"),
        "ideogramParams.rendering_speed",
        id="bad rendering_speed",
    ),
    pytest.param(
        {**body_for("https://example.com/me.png"), "webhookUrl": "not a url"},
        "webhookUrl",
        id="bad webhookUrl",
    ),
    pytest.param(
        {**body_for("https://example.com/me.png"), "model": "dall-e-9"}, "model", id="unknown model"
    ),
    pytest.param([1, 2], None, id="JSON array"),
    pytest.param("a prompt", None, id="JSON string"),
]


@pytest.mark.parametrize(("body", "field"), BAD_BODIES)
def test_bad_bodies_are_validation_errors(api_no_worker: Api, body: Any, field: str | None) -> None:
    key = api_no_worker.key()
    response = api_no_worker.client.post(
        "/v2/images/generate",
        content=json.dumps(body),
        headers={**auth(key), "Content-Type": "application/json"},
    )
    error = expect(response, 400, VALIDATION_ERROR)
    assert error["error"]
    if field is not None:
        assert field in error.get("details", {}), error


def test_malformed_json_is_a_validation_error(api_no_worker: Api) -> None:
    key = api_no_worker.key()
    response = api_no_worker.client.post(
        "/v2/images/generate",
        content=b"{not json",
        headers={**auth(key), "Content-Type": "application/json"},
    )
    assert expect(response, 400, VALIDATION_ERROR)["error"]


AUTHENTICATED: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/v2/me", {}),
    ("GET", "/v2/jobs", {}),
    ("GET", f"/v2/jobs/{uuid.UUID(int=1)}", {}),
    ("POST", "/v2/uploads", {"files": {"file": ("me.png", astronaut_png(), "image/png")}}),
    ("POST", "/v2/images/generate", {"json": body_for("https://example.com/me.png")}),
]


@pytest.mark.parametrize("credentials", [{}, {"X-API-Key": "afk_live_not_a_key"}])
@pytest.mark.parametrize(
    ("method", "path", "send"), AUTHENTICATED, ids=[f"{m} {p}" for m, p, _ in AUTHENTICATED]
)
def test_missing_or_unknown_key_is_401(
    api_no_worker: Api, method: str, path: str, send: dict[str, Any], credentials: dict[str, str]
) -> None:
    response = api_no_worker.client.request(method, path, headers=credentials, **send)
    assert expect(response, 401, ERROR_RESPONSE)["error"]


def test_no_credits_is_402_insufficient_credits(api_no_worker: Api) -> None:
    key = api_no_worker.key(account="poor", credits=0)
    response = api_no_worker.generate(key, body_for("https://example.com/me.png"))
    error = expect(response, 402, INSUFFICIENT_CREDITS)
    assert (error["creditsRequired"], error["creditsAvailable"]) == (10, 0)


def test_idempotency_key_replayed_with_another_body_is_409(api_no_worker: Api) -> None:
    key = api_no_worker.key()
    first = submit(
        api_no_worker, key, body_for("https://example.com/a.png"), **{"Idempotency-Key": "k-1"}
    )
    replay = api_no_worker.generate(
        key, body_for("https://example.com/a.png"), **{"Idempotency-Key": "k-1"}
    )
    assert expect(replay, 202, JOB_ACCEPTED)["jobId"] == first
    other = api_no_worker.generate(
        key, body_for("https://example.com/b.png"), **{"Idempotency-Key": "k-1"}
    )
    assert expect(other, 409, ERROR_RESPONSE)["error"]


def test_rate_limited_submission_is_429_with_retry_after(tmp_path: Path, database_url: str) -> None:
    with open_api(
        tmp_path, database_url, run_worker=False, rate_limit_per_second=0.001, rate_limit_burst=1
    ) as api:
        key = api.key()
        submit(api, key, body_for("https://example.com/a.png"))
        response = api.generate(key, body_for("https://example.com/a.png"))
        assert expect(response, 429, ERROR_RESPONSE)["error"]
        retry_after = response.headers.get("Retry-After", "")
        assert re.fullmatch(r"\d+", retry_after) and int(retry_after) > 0, response.headers


# -- GET /v2/jobs/{id} ---------------------------------------------------------------------


def _queued(api: Api, key: str, server: LoopbackServer) -> str:
    return submit(api, key, body_for(server.url("/astronaut.png")))


def _completed(api: Api, key: str, server: LoopbackServer) -> str:
    job_id = submit(api, key, body_for(server.serve_bytes("/astronaut.png", astronaut_png())))
    api.wait(key, job_id)
    return job_id


def _failed(api: Api, key: str, server: LoopbackServer) -> str:
    job_id = submit(api, key, body_for(server.url("/missing.png")))  # the server answers 404
    api.wait(key, job_id)
    return job_id


def _cancelled(api: Api, key: str, server: LoopbackServer) -> str:
    job_id = _queued(api, key, server)
    response = api.client.post(f"/v2/jobs/{job_id}/cancel", headers=auth(key))
    assert response.status_code == 200, response.text
    return job_id


JOB_MAKERS: dict[str, tuple[bool, Callable[[Api, str, LoopbackServer], str]]] = {
    # status: (run the worker?, how to get a job there)
    "QUEUED": (False, _queued),
    "COMPLETED": (True, _completed),
    "FAILED": (True, _failed),
    "CANCELLED": (False, _cancelled),
}


@pytest.mark.parametrize("status", sorted(JOB_MAKERS))
def test_get_job_in_each_status(
    tmp_path: Path, database_url: str, http_server: LoopbackServer, status: str
) -> None:
    run_worker, make = JOB_MAKERS[status]
    with open_api(tmp_path, database_url, run_worker=run_worker) as api:
        key = api.key()
        job_id = make(api, key, http_server)
        job = expect(api.client.get(f"/v2/jobs/{job_id}", headers=auth(key)), 200, JOB)
    assert (job["id"], job["status"], job["model"]) == (job_id, status, "ideogram-character")
    assert job["expired"] is False
    if status == "QUEUED":
        assert (job["result"], job["error"], job["completedAt"]) == (None, None, None)
    if status == "COMPLETED":
        assert job["error"] is None and job["progress"] == 100 and job["completedAt"]
        assert job["result"]["images"], job["result"]
        assert job["creditCost"] == 10
    if status in ("FAILED", "CANCELLED"):
        assert isinstance(job["error"], str) and " " in job["error"], job["error"]
        assert job["completedAt"] and job["creditCost"] == 0
    if status == "FAILED":
        assert job["errorCode"] == "reference_fetch_failed"
        assert "404" in job["error"]
    if status == "CANCELLED":
        assert job["errorCode"] == "cancelled"


@pytest.mark.parametrize(
    ("job_id", "status"),
    [("not-a-uuid", 400), ("12345", 400), (str(uuid.uuid4()), 404)],
    ids=["word", "number", "unknown uuid"],
)
def test_get_job_with_a_bad_or_unknown_id(api_no_worker: Api, job_id: str, status: int) -> None:
    key = api_no_worker.key()
    response = api_no_worker.client.get(f"/v2/jobs/{job_id}", headers=auth(key))
    assert expect(response, status, ERROR_RESPONSE)["error"]


def test_another_accounts_job_is_404(api_no_worker: Api) -> None:
    job_id = submit(
        api_no_worker, api_no_worker.key("alice"), body_for("https://example.com/a.png")
    )
    response = api_no_worker.client.get(
        f"/v2/jobs/{job_id}", headers=auth(api_no_worker.key("bob"))
    )
    expect(response, 404, ERROR_RESPONSE)


# -- GET /v2/jobs --------------------------------------------------------------------------


def test_list_jobs_pages_and_filters(api_no_worker: Api) -> None:
    api = api_no_worker
    key = api.key()
    ids = [submit(api, key, body_for("https://example.com/a.png")) for _ in range(5)]

    def page(**query: Any) -> Body:
        assert violations(LIST_JOBS_QUERY, query) == []
        return expect(api.client.get("/v2/jobs", params=query, headers=auth(key)), 200, JOB_LIST)

    seen: list[str] = []
    sizes: list[int] = []
    query: dict[str, Any] = {"limit": 2}
    while True:
        answer = page(**query)
        seen += [job["id"] for job in answer["jobs"]]
        sizes.append(len(answer["jobs"]))
        assert answer["hasMore"] is (answer["nextCursor"] is not None)
        if not answer["hasMore"]:
            break
        query["cursor"] = answer["nextCursor"]
    assert (seen, sizes) == (list(reversed(ids)), [2, 2, 1])

    assert len(page()["jobs"]) == 5
    assert len(page(scope="team")["jobs"]) == 5
    assert "models" not in page(include_models="false")
    assert page(include_models="true")["models"] == ["ideogram-character"]
    [found] = page(search=ids[2])["jobs"]
    assert found["id"] == ids[2]
    assert page(search=str(uuid.uuid4()))["jobs"] == []

    cancel = api.client.post(f"/v2/jobs/{ids[0]}/cancel", headers=auth(key))
    assert cancel.status_code == 200, cancel.text
    [cancelled] = page(status="CANCELLED")["jobs"]
    assert (cancelled["id"], cancelled["status"]) == (ids[0], "CANCELLED")
    assert isinstance(cancelled["error"], str)
    assert len(page(status="QUEUED")["jobs"]) == 4
    assert page(model="flux-1.1-pro")["jobs"] == []


BAD_LIST_QUERIES: list[Any] = [
    pytest.param({"scope": "org"}, id="scope"),
    pytest.param({"limit": 0}, id="limit 0"),
    pytest.param({"limit": 101}, id="limit 101"),
    pytest.param({"limit": "ten"}, id="limit word"),
    pytest.param({"status": "CANCELED"}, id="status one L"),
    pytest.param({"search": "not-a-uuid"}, id="search"),
    pytest.param({"include_models": "yes"}, id="include_models"),
]


@pytest.mark.parametrize("query", BAD_LIST_QUERIES)
def test_list_jobs_with_a_bad_query_is_a_validation_error(
    api_no_worker: Api, query: dict[str, Any]
) -> None:
    assert violations(LIST_JOBS_QUERY, query)
    key = api_no_worker.key()
    response = api_no_worker.client.get("/v2/jobs", params=query, headers=auth(key))
    error = expect(response, 400, VALIDATION_ERROR)
    assert set(query) & set(error.get("details", {})), error


def test_list_jobs_with_a_bad_cursor_is_a_validation_error(api_no_worker: Api) -> None:
    key = api_no_worker.key()
    response = api_no_worker.client.get("/v2/jobs", params={"cursor": "!!"}, headers=auth(key))
    assert expect(response, 400, VALIDATION_ERROR)["error"]


# -- webhooks ------------------------------------------------------------------------------


def verify_webhook(body: bytes, signature: str, api_key: str) -> bool:
    """Apiframe's scheme: ``[sha256=]<hex HMAC-SHA256 of the raw body>``, keyed by the raw
    32-byte SHA-256 digest of the API key that submitted the job; compared in constant time."""
    received = signature.strip().removeprefix("sha256=")
    signing_key = hashlib.sha256(api_key.encode()).digest()
    expected = hmac.new(signing_key, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), received.encode())


@pytest.mark.parametrize("outcome", ["completed", "failed"])
def test_webhook_is_signed_apiframe_shaped_and_recorded_as_delivered(
    api: Api, http_server: LoopbackServer, ref: str, outcome: str
) -> None:
    http_server.routes["/hook"] = lambda _r: Reply(200, b"ok")
    key, other_key = api.key(), api.key("other")
    reference = ref if outcome == "completed" else http_server.url("/missing.png")
    body = body_for(reference, top={"webhookUrl": http_server.url("/hook")})
    job_id = submit(api, key, body)
    api.wait(key, job_id)
    [final] = wait_until(
        lambda: [d for d in http_server.received("/hook") if d.json().get("type") == outcome]
    )
    for delivery in http_server.received("/hook"):
        signature = delivery.headers["x-webhook-signature"]
        assert signature.startswith("sha256=")
        assert verify_webhook(delivery.body, signature, key)
        assert verify_webhook(delivery.body, signature.removeprefix("sha256="), key)
        assert not verify_webhook(delivery.body + b" ", signature, key)
        assert not verify_webhook(delivery.body.replace(job_id.encode(), b"x" * 36), signature, key)
        assert not verify_webhook(delivery.body, signature, other_key)
        problems = violations(WEBHOOK_PAYLOAD, delivery.json())
        assert not problems, f"webhook body breaks the contract: {problems}\n{delivery.body!r}"
    payload = final.json()
    assert (payload["jobId"], payload["event"]) == (job_id, outcome)
    if outcome == "completed":
        assert payload["status"] == "COMPLETED" and payload["result"]["images"]
        assert "error" not in payload
    else:
        assert payload["status"] == "FAILED" and "404" in payload["error"]
    delivered = wait_until(
        lambda: (job := api.get_job(key, job_id))["webhookStatus"] == "delivered" and job
    )
    assert not violations(JOB, delivered)
