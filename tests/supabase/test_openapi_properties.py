"""Property-based tests (schemathesis) of the functions' OpenAPI document and of PostgREST's own, against the
running stack through the gateway: no 5xx, and every error in its documented shape.

- Functions (supabase/functions/openapi.yaml): every error is `{"error": {"code", "message"}}` and nothing
  more; a body the document calls invalid is refused with 400 (413 when too large): the validators are at
  least as strict as the document says; answers conform to the documented response schemas.
- PostgREST (GET /rest/v1/ with the apikey, its Swagger 2.0 document of every table, view and RPC the API
  roles can see), as a signed-in user of its own: its errors are PostgREST's documented error object, a JSON
  object with exactly `code`, `message`, `details` and `hint` (https://docs.postgrest.org/en/v12/references/
  errors.html); the gateway answers nothing itself because the apikey is always sent.

Bounded: a fixed number of examples per operation, derandomized, so a run is repeatable and takes the same
time (FUNCTION_EXAMPLES, REST_EXAMPLES; the environment variables of those names run more, e.g.
FUNCTION_EXAMPLES=200 pytest tests/supabase/test_openapi_properties.py).
"""

from __future__ import annotations

import math
import os
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance

from devstack import keys
from devstack.stack import DevStack
from tests.factories import AppUser, create_user, delete_user

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS_DOCUMENT = ROOT / "supabase" / "functions" / "openapi.yaml"
FUNCTION_EXAMPLES = int(os.environ.get("FUNCTION_EXAMPLES", "25"))
REST_EXAMPLES = int(os.environ.get("REST_EXAMPLES", "10"))
# Operator functions get service_role (with userIds naming nobody, so nothing real is rolled or resized);
# the rest a free-tier user with no machine (nothing is provisioned; the AI budget runs out after a few).
SERVICE_ROLE_OPERATIONS = {"analyze-signal", "notify", "scale-machines", "update-machines"}
REACHES_EVERY_MACHINE = {"scale-machines", "update-machines"}
NOBODY = [str(uuid.UUID(int=22))]
POSTGREST_ERROR_KEYS = {"code", "message", "details", "hint"}

FUNCTIONS = schemathesis.openapi.from_path(FUNCTIONS_DOCUMENT)
OPERATIONS = {op.ok().path.strip("/"): op.ok() for op in FUNCTIONS.get_all_operations()}


def test_the_document_names_every_function_with_its_body_limit() -> None:
    folders = {p.parent.name for p in (ROOT / "supabase" / "functions").glob("*/index.ts")}
    raw = FUNCTIONS.raw_schema["paths"]

    assert set(OPERATIONS) == folders
    for name in folders - {"ping"}:
        handler = (ROOT / "supabase" / "functions" / name / "handler.ts").read_text()
        found = re.search(r"^const MAX_BODY_BYTES = ([0-9_* ]+);", handler, re.MULTILINE)
        assert found is not None, name
        limit = math.prod(int(factor) for factor in found.group(1).replace("_", "").split("*"))
        assert raw[f"/{name}"]["post"]["x-max-body-bytes"] == limit, name


def hypothesis_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


@pytest.fixture(scope="module")
def free_user(stack: DevStack) -> Iterator[AppUser]:
    with psycopg.connect(stack.config.db_url, autocommit=True) as db:
        user = create_user(db, tier="free")
        yield user
        delete_user(db, user)


def credential(name: str, user: AppUser) -> str:
    if name in SERVICE_ROLE_OPERATIONS:
        return keys.SERVICE_ROLE_KEY
    if name == "machine-token":
        return "not-a-machine-credential"
    return user.jwt


def assert_function_error(response: Any, what: str) -> None:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, f"{what}: {body}"
    assert isinstance(body["error"]["code"], str) and isinstance(body["error"]["message"], str), what


# Every function with valid and with invalid bodies; a GET takes no body, so it has nothing invalid to send.
SHAPE_CASES = [
    pytest.param(name, mode, id=f"{name}-{mode}")
    for name in sorted(OPERATIONS)
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or OPERATIONS[name].method.upper() != "GET"
]


@pytest.mark.parametrize(("name", "mode"), SHAPE_CASES)
def test_function_answers_in_its_documented_shapes(
    stack: DevStack, free_user: AppUser, name: str, mode: GenerationMode
) -> None:
    operation = OPERATIONS[name]
    headers = {"apikey": keys.ANON_KEY, "authorization": f"Bearer {credential(name, free_user)}"}
    base_url = f"{stack.config.api_url}/functions/v1"
    statuses: Counter[int] = Counter()

    @hypothesis_settings(FUNCTION_EXAMPLES)
    @given(case=operation.as_strategy(mode, headers=headers))
    def check(case: Any) -> None:
        if name in REACHES_EVERY_MACHINE and isinstance(case.body, dict) and "userIds" not in case.body:
            case.body["userIds"] = NOBODY
        response = case.call(base_url=base_url, timeout=120)
        statuses[response.status_code] += 1
        sent = str(case.body)[:300]
        what = f"{case.method} {name} {sent!r} -> {response.status_code} {response.text[:300]}"
        assert response.status_code < 500, what
        if response.status_code >= 400:
            assert_function_error(response, what)
        if mode is GenerationMode.NEGATIVE:
            assert response.status_code in (400, 413), f"the document calls this body invalid: {what}"
        case.validate_response(response, checks=[response_schema_conformance])

    check()
    print(f"{name} {mode}: answers by status {dict(sorted(statuses.items()))}")


@pytest.fixture(scope="module")
def rest_user(stack: DevStack) -> Iterator[AppUser]:
    with psycopg.connect(stack.config.db_url, autocommit=True) as db:
        user = create_user(db)
        yield user
        delete_user(db, user)


def test_postgrest_answers_every_operation_without_5xx_in_its_error_shape(
    stack: DevStack, rest_user: AppUser
) -> None:
    rest_url = f"{stack.config.api_url}/rest/v1"
    headers = {"apikey": keys.ANON_KEY, "authorization": f"Bearer {rest_user.jwt}"}
    # PostgREST documents what the requesting role may use (openapi-mode follow-privileges): the user's view.
    document = httpx.get(f"{rest_url}/", headers=headers, timeout=30)
    document.raise_for_status()
    schema = schemathesis.openapi.from_dict(document.json())
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 20, "PostgREST's document lists the tables and functions"

    for operation in operations:
        exercise_rest_operation(operation, rest_url, headers, failures, statuses)

    print(f"postgrest: {len(operations)} operations, answers by status {dict(sorted(statuses.items()))}")
    assert not failures, "\n".join(failures[:20])
    assert statuses[200] + statuses[201] + statuses[204] > 0, "no generated request was accepted"


def exercise_rest_operation(
    operation: Any, rest_url: str, headers: dict[str, str], failures: list[str], statuses: Counter[int]
) -> None:
    """REST_EXAMPLES generated requests to one PostgREST operation; what went wrong goes into `failures`."""

    @hypothesis_settings(REST_EXAMPLES)
    @given(case=operation.as_strategy(GenerationMode.POSITIVE, headers=headers))
    def check(case: Any) -> None:
        response = case.call(base_url=rest_url, timeout=30)
        statuses[response.status_code] += 1
        what = f"{operation.label} -> {response.status_code} {response.text[:300]}"
        if response.status_code >= 500:
            failures.append(what)
        elif response.status_code >= 400:
            body = response.json()
            if not (isinstance(body, dict) and set(body) == POSTGREST_ERROR_KEYS):
                failures.append(f"not PostgREST's error shape: {what}")

    check()
