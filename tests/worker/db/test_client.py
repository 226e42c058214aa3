"""PostgREST's answers become the worker's errors in one place (worker/db/client.py), by code first."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from worker.db.client import InsufficientPaperBalance, Refused, StaleState, refusal
from worker.errors import ConfigError, RateLimited, TransientError, WorkerError


def answer(status: int, body: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
    if body is None:
        return httpx.Response(status, text="<html>bad gateway</html>", headers=headers)
    return httpx.Response(status, json=body, headers=headers)


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (answer(429, {"code": None, "message": "slow down"}, {"Retry-After": "7"}), RateLimited),
        (answer(503, {"code": "PGRST002", "message": "schema cache"}, {"Retry-After": "2"}), RateLimited),
        (answer(401, {"code": "PGRST301", "message": "JWSError"}), ConfigError),
        (answer(403, {"code": "42501", "message": "permission denied"}), ConfigError),
        (answer(409, {"code": "PT409", "message": "position changed"}), StaleState),
        (answer(402, {"code": "PT402", "message": "overdraft"}), InsufficientPaperBalance),
        (answer(503, {"code": "PGRST001", "message": "no connection"}), TransientError),
        (answer(500, {"code": "57014", "message": "statement timeout"}), TransientError),
        (answer(502), TransientError),
        (answer(500, {"code": "P0002", "message": "no machine row"}), Refused),
        (answer(409, {"code": "23505", "message": "duplicate key"}), Refused),
        (answer(400, {"code": "23503", "message": "foreign key"}), Refused),
    ],
)
def test_each_answer_maps_to_what_the_caller_should_do(response: httpx.Response, expected: type) -> None:
    error = refusal("call()", response)

    assert type(error) is expected
    assert isinstance(error, WorkerError)
    assert str(error).startswith(f"call(): HTTP {response.status_code}")


def test_a_rate_limit_carries_the_wait_and_a_refusal_its_code() -> None:
    limited = refusal("call()", answer(429, {"message": "slow"}, {"Retry-After": "7"}))
    refused = refusal("insert signal", answer(409, {"code": "23505", "message": "one_live_per_trader"}))

    assert isinstance(limited, RateLimited) and limited.retry_after_secs == 7.0
    assert isinstance(refused, Refused)
    assert (refused.status, refused.code, refused.detail) == (409, "23505", "one_live_per_trader")
