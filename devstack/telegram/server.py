"""Telegram Bot API subset: `/bot<token>/sendMessage` and `/bot<token>/getMe`, GET or POST, parameters as
query string, form or JSON, answers `{"ok": true, "result": ...}` or `{"ok": false, "error_code",
"description", "parameters"?}` as https://core.telegram.org/bots/api describes.

Every accepted message is appended to `<state>/messages.jsonl`, so the record survives a restart of the
stand-in. Test controls under `/_control`: `POST /_control/faults {"token", "faults": [{"kind", ...}]}` queues
faults for one bot token, each sendMessage with that token taking the next one. Kinds: rate_limit (429 with
parameters.retry_after, `retryAfterSecs`, default 1), server_error (502 Bad Gateway, as Telegram's front end
answers), chat_not_found (400), timeout (answers after `delaySecs`, default 30, having sent nothing).
`GET /_control/messages?token=...` lists what was sent with that token; `GET /_control/health`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

from aiohttp import web

logger = logging.getLogger(__name__)

TOKEN = re.compile(r"^([0-9]{1,20}):[A-Za-z0-9_-]{20,100}$")
CHAT_ID = re.compile(r"^(-?[0-9]{1,20}|@[A-Za-z0-9_]{5,32})$")
MAX_TEXT_CHARS = 4096  # Telegram's limit for one message
FAULT_KINDS = frozenset({"rate_limit", "server_error", "chat_not_found", "timeout"})
MESSAGES_FILE = "messages.jsonl"

FAULTS: web.AppKey[defaultdict[str, deque[dict[str, Any]]]] = web.AppKey("faults")
STORE: web.AppKey[MessageStore] = web.AppKey("store")


class MessageStore:
    """Sent messages, in memory and appended to a JSON-lines file (reloaded at start)."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self._path = state_dir / MESSAGES_FILE
        self._messages: list[dict[str, Any]] = []
        if self._path.exists():
            lines = self._path.read_text().splitlines()
            self._messages = [json.loads(line) for line in lines if line.strip()]

    def next_message_id(self, token: str) -> int:
        return 1 + sum(1 for message in self._messages if message["token"] == token)

    def add(self, record: dict[str, Any]) -> None:
        self._messages.append(record)
        with self._path.open("a") as file:
            file.write(json.dumps(record) + "\n")

    def for_token(self, token: str) -> list[dict[str, Any]]:
        return [message for message in self._messages if message["token"] == token]


def _fail(status: int, description: str, retry_after: int | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if retry_after is not None:
        body["parameters"] = {"retry_after": retry_after}
    return web.json_response(body, status=status)


async def _params(request: web.Request) -> dict[str, Any]:
    params: dict[str, Any] = dict(request.query)
    if request.method == "POST" and request.can_read_body:
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except json.JSONDecodeError:
                body = None
            if not isinstance(body, dict):
                raise ValueError("Bad Request: can't parse JSON object")
            params.update(body)
        else:
            params.update(await request.post())
    return params


def _bot_id(token: str) -> int | None:
    match = TOKEN.match(token)
    return int(match.group(1)) if match else None


BOT_USER = {"is_bot": True, "first_name": "TradeMind", "username": "trademind_bot"}


async def bot_method(request: web.Request) -> web.Response:
    token, method = request.match_info["token"], request.match_info["method"]
    bot_id = _bot_id(token)
    if bot_id is None:
        return _fail(401, "Unauthorized")
    if method == "getMe":
        return web.json_response({"ok": True, "result": {"id": bot_id, **BOT_USER}})
    if method != "sendMessage":
        return _fail(404, "Not Found")
    try:
        params = await _params(request)
        problem = _message_problem(params)
    except ValueError as error:
        problem = str(error)
    if problem is not None:
        return _fail(400, problem)
    faults = request.app[FAULTS][token]
    if faults:
        return await _fault(faults.popleft(), bot_id)
    return _send(request.app[STORE], token, bot_id, str(params["chat_id"]), params)


def _message_problem(params: dict[str, Any]) -> str | None:
    chat_id, text = str(params.get("chat_id", "")), params.get("text")
    if not chat_id:
        return "Bad Request: chat_id is empty"
    if not isinstance(text, str) or not text.strip():
        return "Bad Request: message text is empty"
    if len(text) > MAX_TEXT_CHARS:
        return "Bad Request: message is too long"
    if not CHAT_ID.match(chat_id):
        return "Bad Request: chat not found"
    return None


async def _fault(fault: dict[str, Any], bot_id: int) -> web.Response:
    kind = fault["kind"]
    logger.info("fault %s bot_id=%s", kind, bot_id)
    if kind == "rate_limit":
        retry_after = int(fault.get("retryAfterSecs", 1))
        return _fail(429, f"Too Many Requests: retry after {retry_after}", retry_after)
    if kind == "server_error":
        return web.Response(status=502, text="Bad Gateway")
    if kind == "timeout":
        await asyncio.sleep(float(fault.get("delaySecs", 30)))
        return _fail(504, "Gateway Timeout")
    return _fail(400, "Bad Request: chat not found")


def _send(store: MessageStore, token: str, bot_id: int, chat_id: str, params: dict[str, Any]) -> web.Response:
    now = int(time.time())
    message = {
        "message_id": store.next_message_id(token),
        "from": {"id": bot_id, **BOT_USER},
        "chat": {"id": int(chat_id) if chat_id.lstrip("-").isdigit() else chat_id, "type": "private"},
        "date": now,
        "text": params["text"],
    }
    store.add(
        {
            "token": token,
            "chat_id": chat_id,
            "text": params["text"],
            "parse_mode": params.get("parse_mode"),
            "message_id": message["message_id"],
            "date": now,
        }
    )
    return web.json_response({"ok": True, "result": message})


async def control_faults(request: web.Request) -> web.Response:
    body = await request.json()
    token, faults = body.get("token"), body.get("faults")
    if not isinstance(token, str) or not isinstance(faults, list):
        return web.json_response({"error": "body must be {token, faults: [...]}"}, status=400)
    unknown = [f for f in faults if not isinstance(f, dict) or f.get("kind") not in FAULT_KINDS]
    if unknown:
        message = f"unknown fault(s) {unknown}; kinds: {sorted(FAULT_KINDS)}"
        return web.json_response({"error": message}, status=400)
    request.app[FAULTS][token].extend(faults)
    return web.json_response({"queued": len(request.app[FAULTS][token])})


async def control_messages(request: web.Request) -> web.Response:
    token = request.query.get("token", "")
    return web.json_response({"messages": request.app[STORE].for_token(token)})


async def control_health(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_app(state_dir: Path) -> web.Application:
    app = web.Application()
    faults: defaultdict[str, deque[dict[str, Any]]] = defaultdict(deque)
    app[FAULTS] = faults
    app[STORE] = MessageStore(state_dir)
    app.router.add_get("/_control/health", control_health)
    app.router.add_get("/_control/messages", control_messages)
    app.router.add_post("/_control/faults", control_faults)
    app.router.add_route("*", r"/bot{token}/{method}", bot_method)
    return app
