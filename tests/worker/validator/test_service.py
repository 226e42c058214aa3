"""`python -m worker.validator` as its Fly app runs it: auth, bad bodies, and the compiler's verdicts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from devstack.config import REPO_ROOT
from tests.worker.sandbox.hostile import body
from tests.worker.sandbox.model_corpus import strategies
from worker.sandbox.dialect import POLICY_VERSION

SECRET = "test-validator-secret-of-at-least-32-chars"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _environment(**extra: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO_ROOT), **extra}


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    port = _free_port()
    env = _environment(VALIDATOR_SECRET=SECRET, HTTP_HOST="127.0.0.1", HTTP_PORT=str(port))
    process = subprocess.Popen([sys.executable, "-m", "worker.validator"], env=env, cwd=REPO_ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "the validator did not start"
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        assert process.wait(timeout=15) == 0


def validate(url: str, payload: object, secret: str | None = SECRET) -> httpx.Response:
    headers = {"authorization": f"Bearer {secret}"} if secret else {}
    return httpx.post(f"{url}/validate", json=payload, headers=headers, timeout=30)


def request(code: str, timeframes: tuple[str, ...] = ("1h",)) -> dict[str, object]:
    return {"signalCode": code, "timeframes": list(timeframes), "symbols": ["BTCUSDT", "ETHUSDT"]}


def test_health_states_the_policy_version(url: str) -> None:
    assert httpx.get(f"{url}/health").json() == {"status": "ok", "policyVersion": POLICY_VERSION}


def test_a_model_style_strategy_is_accepted(url: str) -> None:
    code = next(code for name, code in strategies() if name.startswith("10_"))

    answer = validate(url, request(code, ("15m", "1h", "4h")))

    assert answer.status_code == 200, answer.text
    verdict = answer.json()
    assert verdict["ok"] is True and verdict["policyVersion"] == POLICY_VERSION
    assert verdict["checks"] == 6 and verdict["matches"] + verdict["declined"] <= 6


@pytest.mark.parametrize(
    ("code", "stage", "line", "words"),
    [
        (body("import os", "return False"), "compile", 2, "imports are not allowed"),
        (body("return np.mean(klines['1h'].close) > 0"), "compile", 2, "use their methods"),
        (body("return klines['4h'].close[-1] > 0"), "dry_run", None, "KeyError: '4h'"),
        (body("return klines['1h'].close[-5000] > 0"), "dry_run", None, "IndexError"),
        (body("while True:", "    pass"), "dry_run", None, "stopped on recorded candles: check_signal ran"),
        (body("return 'yes'"), "dry_run", None, "returned str, expected True or False"),
    ],
    ids=["import", "numpy", "undeclared timeframe", "index", "runaway", "not a bool"],
)
def test_refusals_are_422_with_the_reason(
    url: str, code: str, stage: str, line: int | None, words: str
) -> None:
    answer = validate(url, request(code))

    assert answer.status_code == 422
    error = answer.json()["error"]
    assert (error["code"], error["stage"], error["line"]) == ("signal_code_rejected", stage, line)
    assert words in error["message"]


def test_a_declining_strategy_is_accepted(url: str) -> None:
    answer = validate(url, request(body("raise ValueError('waiting for a setup')")))

    assert answer.status_code == 200
    assert answer.json()["declined"] == 6


def test_callers_without_the_secret_are_401(url: str) -> None:
    missing = validate(url, request(body("return True")), secret=None)
    wrong = validate(url, request(body("return True")), secret="x" * 40)

    assert (missing.status_code, missing.json()["error"]["code"]) == (401, "missing_authorization")
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (401, "invalid_authorization")


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        ([1], "a JSON object"),
        ({"signalCode": "", "timeframes": ["1h"], "symbols": ["BTCUSDT"]}, "signalCode must be"),
        ({**request(body("return True")), "timeframes": ["7m"]}, "timeframes must be"),
        ({**request(body("return True")), "timeframes": []}, "timeframes must be"),
        ({**request(body("return True")), "symbols": ["btc usdt"]}, "symbols must be"),
        ({**request(body("return True")), "extra": 1}, "unknown field(s): extra"),
    ],
)
def test_bad_bodies_are_400_naming_the_field(url: str, payload: object, words: str) -> None:
    answer = validate(url, payload)

    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_body" and words in answer.json()["error"]["message"]


def test_oversized_bodies_are_413(url: str) -> None:
    answer = validate(url, request(body("return True") + "#" * 500_000))

    assert answer.status_code == 413


def test_concurrent_requests_each_get_their_own_verdict(url: str) -> None:
    codes = [body("return True"), body("import os"), body("return klines['1h'].close[-9999] > 0")] * 4

    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = list(pool.map(lambda code: validate(url, request(code)).status_code, codes))

    assert statuses == [200, 422, 422] * 4


def test_a_missing_secret_stops_it_with_one_line_and_exit_78() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "worker.validator"],
        env=_environment(VALIDATOR_SECRET="short"), cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip

    assert result.returncode == 78
    assert result.stderr.startswith("validator: validator settings: VALIDATOR_SECRET is invalid")
    assert len(result.stderr.strip().splitlines()) == 1
