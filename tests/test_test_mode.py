"""Test mode is isolated both ways: a test key sees and changes only test data (its jobs,
balance, ledger, webhook secret, uploads and characters), and a live key never sees test data."""

from __future__ import annotations

from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.conftest import Api, body_for
from tests.support.http import LoopbackServer, Reply
from tests.support.images import astronaut_png, data_uri


def get(api: Api, key: str, path: str) -> Any:
    response = api.client.get(path, headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    return response.json()


def upload(api: Api, key: str) -> dict[str, Any]:
    response = api.client.post(
        "/v2/uploads",
        headers={"X-API-Key": key},
        files={"file": ("a.png", astronaut_png(), "image/png")},
    )
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_balances_and_ledgers_are_per_mode(api: Api, ref: str) -> None:
    live, test = api.key("acme", "live", credits=1000), api.key("acme", "test")
    assert api.submit_and_wait(live, body_for(ref))["status"] == "COMPLETED"
    assert api.submit_and_wait(test, body_for(ref))["status"] == "COMPLETED"
    live_ledger = get(api, live, "/v2/account/ledger")["entries"]
    assert {entry["kind"] for entry in live_ledger} == {"topup", "hold", "capture"}
    # The test key sees no live money: no entries, no balance; its jobs were free.
    assert get(api, test, "/v2/account/ledger") == {
        "entries": [],
        "nextCursor": None,
        "hasMore": False,
    }
    account = get(api, test, "/v2/account")
    assert (account["balance"], account["held"], account["available"]) == (0, 0, 0)
    assert get(api, test, "/v2/me")["team"]["credits"] == 0
    assert get(api, live, "/v2/me")["team"]["credits"] == 990
    # And the live key sees no test job.
    live_jobs = {entry["jobId"] for entry in live_ledger if entry["jobId"]}
    test_jobs = {job["id"] for job in get(api, test, "/v2/jobs")["jobs"]}
    assert live_jobs and test_jobs and not live_jobs & test_jobs


def test_each_mode_has_its_own_webhook_secret(
    api_sqlite: Api, http_server: LoopbackServer, ref: str
) -> None:
    api = api_sqlite
    http_server.routes["/hook"] = lambda _r: Reply(200)
    live, test = api.key("acme", "live"), api.key("acme", "test")
    live_secret = get(api, live, "/v2/account/webhook-secret")["secret"]
    test_secret = get(api, test, "/v2/account/webhook-secret")["secret"]
    assert live_secret != test_secret
    # A test key rotates the test secret only.
    rotated = api.client.post("/v2/account/webhook-secret/rotate", headers={"X-API-Key": test})
    new_test_secret = rotated.json()["secret"]
    assert new_test_secret not in (live_secret, test_secret)
    assert get(api, live, "/v2/account/webhook-secret")["secret"] == live_secret
    assert get(api, live, "/v2/account/webhook-secret")["activeSecrets"] == 1
    # A test job's delivery is signed with the test secrets, never with the live one.
    api.generate(test, body_for(ref, top={"webhookUrl": http_server.url("/hook")}))
    [delivery] = http_server.wait_for("/hook", 1)
    Webhook(new_test_secret).verify(delivery.body, delivery.headers)
    Webhook(test_secret).verify(delivery.body, delivery.headers)  # during the overlap
    try:
        Webhook(live_secret).verify(delivery.body, delivery.headers)
    except WebhookVerificationError:
        pass
    else:
        raise AssertionError("a test delivery verified with the live secret")


def test_uploads_belong_to_their_mode(api: Api) -> None:
    live, test = api.key("acme", "live"), api.key("acme", "test")
    for owner, other in ((live, test), (test, live)):
        answer = upload(api, owner)
        refused = api.generate(other, body_for(answer["reference"]))
        assert (refused.status_code, refused.json()["code"]) == (400, "upload_not_found")
        for source in (answer["url"], answer["reference"]):
            assert api.generate(owner, body_for(source)).status_code == 202
        # The signed URL is a public URL: any key may use it, its reference stays bound.
        assert api.generate(other, body_for(answer["url"])).status_code == 202


def test_characters_belong_to_their_mode(api_sqlite: Api) -> None:
    api = api_sqlite
    live, test = api.key("acme", "live"), api.key("acme", "test")
    created = api.client.post(
        "/v2/characters",
        json={"name": "Eileen", "image": data_uri(astronaut_png())},
        headers={"X-API-Key": live},
    )
    assert created.status_code == 201, created.text
    character_id = created.json()["id"]
    assert get(api, test, "/v2/characters") == {"characters": []}
    for method in ("GET", "DELETE"):
        response = api.client.request(
            method, f"/v2/characters/{character_id}", headers={"X-API-Key": test}
        )
        assert response.status_code == 404
    body = {
        "prompt": "on a beach",
        "model": "ideogram-character",
        "ideogramParams": {"character_id": character_id},
    }
    refused = api.generate(test, body)
    assert (refused.status_code, refused.json()["code"]) == (400, "character_not_found")
    assert api.generate(live, body).status_code == 202
    assert [c["id"] for c in get(api, live, "/v2/characters")["characters"]] == [character_id]
