"""The stand-in's HTTP server: `POST /v1beta/models/{model}:generateContent`, plus `/_control/*` for tests.

Faults are queued per API key (`POST /_control/faults {"apiKey", "faults": [{"kind", ...}]}`), so parallel
tests using different keys never see each other's faults; each generateContent call with that key takes
the next fault. Kinds: rate_limit (429, optional retryDelaySecs), server_error (500), unavailable (503),
timeout (answers after delaySecs, default 30), malformed_json, schema_violation, invalid_key (400),
refused_code (a strategy whose signal code the worker's compiler refuses) and crashing_code (code that
compiles but fails on recorded candles), both valid against the response schema.
The last requests per key are kept for `GET /_control/requests?apiKey=...`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict, deque
from typing import Any

from aiohttp import web

from devstack.gemini.analysis import build_decision
from devstack.gemini.chat import build_answer
from devstack.gemini.protocol import GeminiApiError, GenerateRequest, answer, parse_request
from devstack.gemini.strategy import build_strategy

logger = logging.getLogger(__name__)

FAULT_KINDS = frozenset(
    {
        "rate_limit",
        "server_error",
        "unavailable",
        "timeout",
        "malformed_json",
        "schema_violation",
        "invalid_key",
        "refused_code",
        "crashing_code",
    }
)
MAX_FAULTS_PER_KEY = 100
MAX_REQUESTS_KEPT = 50

Queues = defaultdict[str, deque[dict[str, Any]]]
FAULTS: web.AppKey[Queues] = web.AppKey("faults")
REQUESTS: web.AppKey[Queues] = web.AppKey("requests")


def _error(error: GeminiApiError) -> web.Response:
    return web.json_response(error.body(), status=error.code)


def _api_key(request: web.Request) -> str:
    key = request.headers.get("x-goog-api-key") or request.query.get("key") or ""
    if not key:
        raise GeminiApiError(
            403,
            "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers (callers without established identity). "
            "Please use API Key or other form of API consumer identity to call this API.",
        )
    return key


def _invalid_key() -> GeminiApiError:
    return GeminiApiError(
        400,
        "INVALID_ARGUMENT",
        "API key not valid. Please pass a valid API key.",
        [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            }
        ],
    )


def _schema_kind(schema: dict[str, Any] | None) -> str:
    properties = (schema or {}).get("properties") or {}
    if "signalCode" in properties:
        return "strategy"
    if "decision" in properties:
        return "analysis"
    if "answer" in properties and "enum" not in properties["answer"]:
        return "answer"
    return "generic"


def _value_for(schema: dict[str, Any]) -> Any:
    """A minimal value satisfying a Gemini schema (for prompts the stand-in does not recognise)."""
    kind = str(schema.get("type", "STRING")).upper()
    if schema.get("enum"):
        return schema["enum"][0]
    if kind == "OBJECT":
        properties = schema.get("properties") or {}
        return {
            name: _value_for(sub)
            for name, sub in properties.items()
            if name in (schema.get("required") or [])
        }
    if kind == "ARRAY":
        return [_value_for(schema.get("items") or {})] * int(schema.get("minItems") or 0)
    if kind in ("NUMBER", "INTEGER"):
        return schema.get("minimum", 0)
    if kind == "BOOLEAN":
        return False
    return "ok"


def _content(generate: GenerateRequest) -> dict[str, Any]:
    kind = _schema_kind(generate.response_schema)
    if kind == "strategy":
        return build_strategy(generate.first_user_text)
    if kind == "analysis":
        return build_decision(generate.first_user_text)
    if kind == "answer":
        return build_answer(generate.first_user_text)
    if generate.response_schema:
        value = _value_for(generate.response_schema)
        return value if isinstance(value, dict) else {"value": value}
    return {"text": "ok"}


def _violation(content: dict[str, Any], kind: str) -> dict[str, Any]:
    """Valid JSON that breaks the schema, the way models do: a required field dropped or mis-named."""
    if kind == "analysis":
        return {
            "decision": "open_long",
            "reasoning": content.get("reasoning", "x"),
            "confidence": 140,
            "metadata": {"new_stop_loss": 1},
        }
    if kind == "strategy":
        return {**content, "timeframes": ["7m"], "signalCode": "import os\n"}
    return {"unexpected": True}


# What a model writes that the sandbox refuses: state kept in a class, and an index past the history.
_REFUSED_CODE = """class Memory:
    last = None


def check_signal(symbol, ticker, klines):
    return Memory.last is None
"""
_CRASHING_CODE = """def check_signal(symbol, ticker, klines):
    closes = get_closes(klines["{timeframe}"])
    return closes[-5000] < closes[-1]
"""


def _bad_code(content: dict[str, Any], kind: str) -> dict[str, Any]:
    if kind == "refused_code":
        return {**content, "signalCode": _REFUSED_CODE}
    return {**content, "signalCode": _CRASHING_CODE.replace("{timeframe}", content["timeframes"][0])}


async def generate_content(request: web.Request) -> web.Response:
    model, _, method = request.match_info["model_method"].partition(":")
    if method != "generateContent":
        return _error(GeminiApiError(404, "NOT_FOUND", f"Method not found: {method or '(none)'}"))
    try:
        key = _api_key(request)
        try:
            body = await request.json()
        except json.JSONDecodeError as error:
            raise GeminiApiError(
                400, "INVALID_ARGUMENT", f"Invalid JSON payload received. {error}"
            ) from error
        request.app[REQUESTS][key].append(body)
        fault = request.app[FAULTS][key].popleft() if request.app[FAULTS][key] else None
        generate = parse_request(model, body)
        if fault is not None:
            logger.info("injecting fault kind=%s model=%s", fault["kind"], model)
            response = await _faulty(generate, fault)
            if response is not None:
                return response
        return web.json_response(answer(generate, json.dumps(_content(generate))))
    except GeminiApiError as error:
        return _error(error)


_ERROR_FAULTS = {
    "server_error": GeminiApiError(
        500,
        "INTERNAL",
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
    ),
    "unavailable": GeminiApiError(503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
    "invalid_key": _invalid_key(),
}


async def _faulty(generate: GenerateRequest, fault: dict[str, Any]) -> web.Response | None:
    kind = fault["kind"]
    if kind in _ERROR_FAULTS:
        return _error(_ERROR_FAULTS[kind])
    if kind == "rate_limit":
        details = []
        if fault.get("retryDelaySecs") is not None:
            delay = f"{fault['retryDelaySecs']}s"
            details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay})
        quota = "You exceeded your current quota, please check your plan and billing details."
        return _error(GeminiApiError(429, "RESOURCE_EXHAUSTED", quota, details))
    if kind == "timeout":
        await asyncio.sleep(float(fault.get("delaySecs", 30)))
        return None  # then answer normally, far too late for a client with a short timeout
    content = _content(generate)
    if kind in ("refused_code", "crashing_code") and _schema_kind(generate.response_schema) == "strategy":
        return web.json_response(answer(generate, json.dumps(_bad_code(content, kind))))
    if kind == "malformed_json":
        text = json.dumps(content)
        return web.json_response(answer(generate, text[: max(1, len(text) // 2)], "MAX_TOKENS"))
    # schema_violation
    return web.json_response(
        answer(generate, json.dumps(_violation(content, _schema_kind(generate.response_schema))))
    )


async def set_faults(request: web.Request) -> web.Response:
    body = await request.json()
    key, faults = body.get("apiKey"), body.get("faults")
    if not isinstance(key, str) or not key or not isinstance(faults, list):
        return web.json_response({"error": "expected {apiKey: str, faults: [{kind, ...}]}"}, status=400)
    for fault in faults:
        if not isinstance(fault, dict) or fault.get("kind") not in FAULT_KINDS:
            return web.json_response(
                {"error": f"unknown fault {fault!r}; kinds: {sorted(FAULT_KINDS)}"}, status=400
            )
    queue = request.app[FAULTS][key]
    queue.clear()
    queue.extend(faults[:MAX_FAULTS_PER_KEY])
    request.app[REQUESTS][key].clear()
    return web.json_response({"apiKey": key, "queued": len(queue)})


async def clear_faults(request: web.Request) -> web.Response:
    key = request.query.get("apiKey", "")
    request.app[FAULTS].pop(key, None)
    request.app[REQUESTS].pop(key, None)
    return web.json_response({"apiKey": key, "queued": 0})


async def list_requests(request: web.Request) -> web.Response:
    key = request.query.get("apiKey", "")
    return web.json_response({"apiKey": key, "requests": list(request.app[REQUESTS].get(key, []))})


async def health(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_app() -> web.Application:
    # Request bodies carry klines for several timeframes; allow what analyze-signal can send.
    app = web.Application(client_max_size=8 * 1024 * 1024)
    faults: Queues = defaultdict(deque)
    requests: Queues = defaultdict(lambda: deque(maxlen=MAX_REQUESTS_KEPT))
    app[FAULTS] = faults
    app[REQUESTS] = requests
    app.router.add_post("/v1beta/models/{model_method}", generate_content)
    app.router.add_post("/_control/faults", set_faults)
    app.router.add_delete("/_control/faults", clear_faults)
    app.router.add_get("/_control/requests", list_requests)
    app.router.add_get("/_control/health", health)
    return app
