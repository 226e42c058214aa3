"""The nginx gateway and the functions router behave like Supabase's: key checks, routing, JWTs, CORS."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import jwt
import pytest

from devstack import keys
from devstack.stack import DevStack


@pytest.fixture
def http(stack: DevStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.config.api_url, timeout=10) as client:
        yield client


def test_rest_without_apikey_is_rejected_with_a_json_error(http: httpx.Client) -> None:
    response = http.get("/rest/v1/traders")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "no_api_key"


def test_rest_with_an_unknown_apikey_is_rejected(http: httpx.Client) -> None:
    forged = jwt.encode(
        {"role": "service_role"}, "another-secret-that-is-at-least-32-chars", algorithm="HS256"
    )

    response = http.get("/rest/v1/traders", headers={"apikey": forged})

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_apikey_alone_acts_as_the_bearer(http: httpx.Client) -> None:
    response = http.get("/rest/v1/traders", headers={"apikey": keys.SERVICE_ROLE_KEY}, params={"limit": "1"})

    assert response.status_code == 200


def test_a_bad_bearer_token_is_refused_by_postgrest(http: httpx.Client) -> None:
    forged = jwt.encode(
        {"role": "service_role"}, "another-secret-that-is-at-least-32-chars", algorithm="HS256"
    )

    response = http.get(
        "/rest/v1/traders", headers={"apikey": keys.ANON_KEY, "Authorization": f"Bearer {forged}"}
    )

    assert response.status_code == 401
    assert response.json()["code"] == "PGRST301"


def test_cors_preflight_needs_no_key(http: httpx.Client) -> None:
    response = http.options(
        "/rest/v1/traders",
        headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"},
    )

    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "*"
    assert "apikey" in response.headers["access-control-allow-headers"]


def test_function_requires_a_jwt_when_verify_jwt_is_on(http: httpx.Client) -> None:
    missing = http.post("/functions/v1/ping")
    expired = http.post(
        "/functions/v1/ping",
        headers={"Authorization": f"Bearer {keys.mint_jwt('authenticated', valid_for_secs=-10)}"},
    )
    forged = http.post(
        "/functions/v1/ping",
        headers={"Authorization": "Bearer " + jwt.encode({"role": "anon"}, "x" * 40, algorithm="HS256")},
    )

    assert (missing.status_code, missing.json()["error"]["code"]) == (401, "missing_authorization")
    assert (expired.status_code, expired.json()["error"]["message"]) == (401, "JWT expired")
    assert (forged.status_code, forged.json()["error"]["message"]) == (401, "invalid JWT signature")


def test_function_runs_with_a_valid_jwt(http: httpx.Client) -> None:
    response = http.post("/functions/v1/ping", headers={"Authorization": f"Bearer {keys.ANON_KEY}"})

    body = response.json()
    assert response.status_code == 200
    assert (body["function"], body["method"]) == ("ping", "POST")
    assert response.headers["access-control-allow-origin"] == "*"
    assert abs((datetime.fromisoformat(body["time"]) - datetime.now(UTC)).total_seconds()) < 5


def test_unknown_function_is_a_404(http: httpx.Client) -> None:
    response = http.post(
        "/functions/v1/no-such-function", headers={"Authorization": f"Bearer {keys.ANON_KEY}"}
    )

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "function_not_found"


def test_realtime_route_checks_the_key_in_the_query_string(http: httpx.Client) -> None:
    without_key = http.get("/realtime/v1/websocket")
    with_key = http.get("/realtime/v1/websocket", params={"apikey": keys.ANON_KEY, "vsn": "1.0.0"})

    assert without_key.status_code == 401
    # The key passes and the request reaches the Realtime server, which wants a WebSocket upgrade.
    assert (with_key.status_code, with_key.json()["error"]) == (426, "expected a WebSocket upgrade")


def test_unknown_route_is_a_json_404(http: httpx.Client) -> None:
    response = http.get("/storage/v1/bucket")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_gateway_access_log_never_records_the_apikey(stack: DevStack, http: httpx.Client) -> None:
    http.get("/realtime/v1/websocket", params={"apikey": keys.ANON_KEY})

    access_log = (stack.config.logs_dir / "nginx-access.log").read_text()
    assert "/realtime/v1/websocket" in access_log
    assert keys.ANON_KEY not in access_log
