"""The validator's HTTP API (aiohttp): authenticate, read the body, compile, dry-run, answer."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import time
from typing import Any, TypeGuard

from aiohttp import web

from worker.domain.intervals import INTERVAL_MS
from worker.errors import TransientError
from worker.sandbox import SandboxPool, SignalCodeError, SignalRunner, SignalRuntimeError, compile_signal
from worker.sandbox.compiler import MAX_SOURCE_CHARS
from worker.sandbox.dialect import POLICY_VERSION
from worker.sandbox.dry_run import dry_run

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 4 * MAX_SOURCE_CHARS  # the code is JSON-escaped in the body
MAX_TIMEFRAMES = 4
MAX_SYMBOLS = 20
# The dry run covers the first few symbols: symbol-specific branches are rare, and each round of each
# symbol may take up to the deadline.
DRY_RUN_SYMBOLS = 4
_SYMBOL = re.compile(r"^[A-Z0-9]{2,20}$")


class Problem(Exception):
    """A request the validator refuses before looking at the code: status, code and message of the answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Validator:
    """Compiles signal code with the worker's compiler and dry-runs it in the worker's sandbox."""

    def __init__(self, pool: SandboxPool, max_concurrent: int) -> None:
        self._pool = pool
        self._slots = asyncio.Semaphore(max_concurrent)

    async def validate(self, code: str, timeframes: list[str], symbols: list[str]) -> dict[str, Any]:
        """The verdict as the JSON body of the answer (`ok` False: `error` says why)."""
        started = time.perf_counter()
        digest = hashlib.sha256(code.encode()).hexdigest()[:12]
        try:
            program = compile_signal(code)
        except SignalCodeError as error:
            logger.info("signal code refused stage=compile code=%s reason=%s", digest, error)
            return _refusal(str(error), error.line, "compile")
        async with self._slots:
            # A runner per request: nothing one request's code did is remembered for the next.
            runner = SignalRunner(self._pool)
            try:
                report = await dry_run(runner, program, timeframes, symbols[:DRY_RUN_SYMBOLS])
            except SignalRuntimeError as error:
                logger.info("signal code refused stage=dry_run code=%s reason=%s", digest, error.reason)
                return _refusal(
                    f"signal code was stopped on recorded candles: {error.reason}", None, "dry_run"
                )
        if not report.ok:
            logger.info("signal code refused stage=dry_run code=%s reason=%s", digest, report.problem())
            return _refusal(report.problem(), None, "dry_run")
        duration_ms = (time.perf_counter() - started) * 1000
        logger.info(
            "signal code accepted code=%s checks=%d duration_ms=%.0f", digest, report.checks, duration_ms
        )
        return {
            "ok": True,
            "policyVersion": POLICY_VERSION,
            "checks": report.checks,
            "matches": report.matches,
            "declined": report.declined,
        }


def build_app(validator: Validator, secret: str) -> web.Application:
    """The aiohttp application; POST /validate requires `Authorization: Bearer <secret>`."""

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "policyVersion": POLICY_VERSION})

    async def validate(request: web.Request) -> web.Response:
        try:
            code, timeframes, symbols = await _read(request, secret)
            verdict = await validator.validate(code, timeframes, symbols)
        except Problem as problem:
            body = {"error": {"code": problem.code, "message": problem.message}}
            return web.json_response(body, status=problem.status)
        except TransientError as error:
            logger.warning("sandbox unavailable: %s", error)
            body = {"error": {"code": "sandbox_unavailable", "message": "the sandbox could not start; retry"}}
            return web.json_response(body, status=503)
        return web.json_response(verdict, status=200 if verdict["ok"] else 422)

    app = web.Application(client_max_size=MAX_BODY_BYTES + 1)
    app.router.add_get("/health", health)
    app.router.add_post("/validate", validate)
    return app


async def _read(request: web.Request, secret: str) -> tuple[str, list[str], list[str]]:
    presented = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not presented:
        raise Problem(401, "missing_authorization", "POST /validate needs 'Authorization: Bearer <secret>'")
    if not hmac.compare_digest(presented.encode(), secret.encode()):
        raise Problem(401, "invalid_authorization", "the bearer secret is not the validator's")
    too_large = Problem(413, "body_too_large", f"the body is larger than {MAX_BODY_BYTES} bytes")
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise too_large
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise too_large
    return _parse(raw)


def _parse(raw: bytes) -> tuple[str, list[str], list[str]]:
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise Problem(400, "invalid_body", f"the body is not JSON ({error})") from None
    if not isinstance(body, dict):
        raise Problem(400, "invalid_body", "the body must be a JSON object")
    unknown = sorted(set(body) - {"signalCode", "timeframes", "symbols"})
    if unknown:
        raise Problem(
            400,
            "invalid_body",
            f"unknown field(s): {', '.join(unknown)}; expected signalCode, timeframes, symbols",
        )
    code, timeframes, symbols = body.get("signalCode"), body.get("timeframes"), body.get("symbols")
    if not isinstance(code, str) or not code.strip():
        raise Problem(400, "invalid_body", "signalCode must be a non-empty string")
    if len(code) > MAX_SOURCE_CHARS:
        raise Problem(400, "invalid_body", f"signalCode is longer than {MAX_SOURCE_CHARS} characters")
    if not _strings(timeframes, MAX_TIMEFRAMES) or not set(timeframes) <= set(INTERVAL_MS):
        raise Problem(
            400, "invalid_body", f"timeframes must be 1-{MAX_TIMEFRAMES} of {' '.join(INTERVAL_MS)}"
        )
    if not _strings(symbols, MAX_SYMBOLS) or not all(_SYMBOL.match(symbol) for symbol in symbols):
        raise Problem(400, "invalid_body", f"symbols must be 1-{MAX_SYMBOLS} Binance symbols such as BTCUSDT")
    return code, list(dict.fromkeys(timeframes)), list(dict.fromkeys(symbols))


def _strings(value: object, limit: int) -> TypeGuard[list[str]]:
    return (
        isinstance(value, list) and 1 <= len(value) <= limit and all(isinstance(item, str) for item in value)
    )


def _refusal(message: str, line: int | None, stage: str) -> dict[str, Any]:
    return {
        "ok": False,
        "error": {"code": "signal_code_rejected", "message": message, "line": line, "stage": stage},
    }
