"""The Telegram Bot API stand-in: sendMessage in each parameter encoding, the Bot API's error shapes, queued
faults, and a record of sent messages that survives a restart."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio
from aiohttp.test_utils import TestServer

from devstack.telegram.server import create_app

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"


@pytest_asyncio.fixture(loop_scope="function")
async def telegram(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    server = TestServer(create_app(tmp_path), host="127.0.0.1")
    await server.start_server()
    async with httpx.AsyncClient(base_url=str(server.make_url(""))) as client:
        yield client
    await server.close()


async def test_send_message_as_json_form_and_query(telegram: httpx.AsyncClient) -> None:
    as_json = await telegram.post(f"/bot{TOKEN}/sendMessage", json={"chat_id": 42, "text": "hello"})
    as_form = await telegram.post(f"/bot{TOKEN}/sendMessage", data={"chat_id": "42", "text": "again"})
    query = {"chat_id": "@trademind_ops", "text": "q"}
    as_query = await telegram.get(f"/bot{TOKEN}/sendMessage", params=query)

    assert as_json.status_code == 200
    result = as_json.json()["result"]
    assert as_json.json()["ok"] is True
    assert (result["message_id"], result["chat"]["id"], result["text"]) == (1, 42, "hello")
    assert result["from"]["is_bot"] is True
    assert as_form.json()["result"]["message_id"] == 2
    assert as_query.json()["result"]["chat"]["id"] == "@trademind_ops"
    messages = (await telegram.get("/_control/messages", params={"token": TOKEN})).json()["messages"]
    assert [message["text"] for message in messages] == ["hello", "again", "q"]


async def test_errors_have_the_bot_api_shape(telegram: httpx.AsyncClient) -> None:
    cases: dict[str, tuple[str, dict[str, Any]]] = {
        "bad token": ("/botnot-a-token/sendMessage", {"chat_id": 1, "text": "x"}),
        "empty text": (f"/bot{TOKEN}/sendMessage", {"chat_id": 1, "text": " "}),
        "unknown chat": (f"/bot{TOKEN}/sendMessage", {"chat_id": "not a chat", "text": "x"}),
        "too long": (f"/bot{TOKEN}/sendMessage", {"chat_id": 1, "text": "x" * 4097}),
        "unknown method": (f"/bot{TOKEN}/sendTelepathy", {}),
    }

    answers = {name: await telegram.post(path, json=body) for name, (path, body) in cases.items()}

    assert {name: answer.status_code for name, answer in answers.items()} == {
        "bad token": 401,
        "empty text": 400,
        "unknown chat": 400,
        "too long": 400,
        "unknown method": 404,
    }
    assert answers["unknown chat"].json() == {
        "ok": False,
        "error_code": 400,
        "description": "Bad Request: chat not found",
    }


async def test_queued_faults_apply_to_their_token_in_order(telegram: httpx.AsyncClient) -> None:
    other = "987654321:BBHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
    faults = [{"kind": "rate_limit", "retryAfterSecs": 3}, {"kind": "server_error"}]
    await telegram.post("/_control/faults", json={"token": TOKEN, "faults": faults})
    message = {"chat_id": 1, "text": "x"}

    unaffected = await telegram.post(f"/bot{other}/sendMessage", json=message)
    limited = await telegram.post(f"/bot{TOKEN}/sendMessage", json=message)
    failed = await telegram.post(f"/bot{TOKEN}/sendMessage", json=message)
    sent = await telegram.post(f"/bot{TOKEN}/sendMessage", json=message)

    assert unaffected.status_code == 200
    assert limited.status_code == 429
    assert limited.json()["parameters"] == {"retry_after": 3}
    assert limited.json()["description"] == "Too Many Requests: retry after 3"
    assert failed.status_code == 502
    assert sent.status_code == 200
    stored = (await telegram.get("/_control/messages", params={"token": TOKEN})).json()["messages"]
    assert len(stored) == 1, "refused attempts send nothing"


async def test_sent_messages_survive_a_restart(tmp_path: Path) -> None:
    first = TestServer(create_app(tmp_path), host="127.0.0.1")
    await first.start_server()
    async with httpx.AsyncClient(base_url=str(first.make_url(""))) as client:
        await client.post(f"/bot{TOKEN}/sendMessage", json={"chat_id": 7, "text": "before"})
    await first.close()
    second = TestServer(create_app(tmp_path), host="127.0.0.1")
    await second.start_server()
    async with httpx.AsyncClient(base_url=str(second.make_url(""))) as client:
        after = await client.post(f"/bot{TOKEN}/sendMessage", json={"chat_id": 7, "text": "after"})
        stored = (await client.get("/_control/messages", params={"token": TOKEN})).json()["messages"]
    await second.close()

    assert after.json()["result"]["message_id"] == 2
    assert [message["text"] for message in stored] == ["before", "after"]
