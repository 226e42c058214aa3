"""pg_net's background worker: take queued requests (each at most once, as pg_net does), send them, and record
each answer (or the error) in net._http_response, keeping answers for 6 hours (pg_net.ttl's default)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import psycopg

logger = logging.getLogger(__name__)

SCHEMA_SQL = Path(__file__).with_name("schema.sql")
BATCH_SIZE = 200  # pg_net.batch_size's default
POLL_SECS = 1.0  # a missed notification is picked up by the next poll
TTL = "6 hours"
RECONNECT_SECS = 1.0


def install(conninfo: str) -> None:
    """Create the `net` schema's objects (idempotent; concurrent starts serialise on an advisory lock)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("select pg_advisory_lock(hashtext('devstack_pg_net'))")
        conn.execute(SCHEMA_SQL.read_text())


async def _send(client: httpx.AsyncClient, request: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = {"id": request["id"], "timed_out": False}
    try:
        response = await client.request(
            request["method"],
            request["url"],
            headers=request["headers"],
            content=bytes(request["body"]) if request["body"] is not None else None,
            timeout=request["timeout_milliseconds"] / 1000,
        )
    except httpx.TimeoutException:
        return answer | {"timed_out": True, "error_msg": "Timeout was reached"}
    except httpx.HTTPError as error:
        return answer | {"error_msg": f"{type(error).__name__}: {error}"}
    return answer | {
        "status_code": response.status_code,
        "content_type": response.headers.get("content-type"),
        "headers": json.dumps(dict(response.headers)),
        "content": response.text,
    }


async def run(conninfo: str) -> None:
    """Serve the queue for ever; a lost database (a `dev reset` drops it) is reconnected and re-installed."""
    while True:
        try:
            await asyncio.to_thread(install, conninfo)
            await _serve_queue(conninfo)
        except psycopg.Error as error:
            logger.warning("database connection lost (%s); reconnecting", error)
            await asyncio.sleep(RECONNECT_SECS)


async def _serve_queue(conninfo: str) -> None:
    async with (
        await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as listener,
        await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn,
        httpx.AsyncClient() as client,
    ):
        await listener.execute("listen devstack_pg_net")
        while True:
            cursor = await conn.execute(
                "delete from net.http_request_queue where id in (select id from net.http_request_queue"
                " order by id limit %s for update skip locked) returning id, method, url, headers, body,"
                " timeout_milliseconds",
                (BATCH_SIZE,),
            )
            columns = [column.name for column in cursor.description or ()]
            requests = [dict(zip(columns, row, strict=True)) for row in await cursor.fetchall()]
            if not requests:
                async for _ in listener.notifies(timeout=POLL_SECS, stop_after=1):
                    pass
                continue
            answers = await asyncio.gather(*(_send(client, request) for request in requests))
            for answer in answers:
                await conn.execute(
                    "insert into net._http_response (id, status_code, content_type, headers,"
                    " content, timed_out, error_msg) values (%(id)s, %(status_code)s,"
                    " %(content_type)s, %(headers)s, %(content)s, %(timed_out)s, %(error_msg)s)",
                    {"status_code": None, "content_type": None, "headers": None, "content": None,
                     "error_msg": None} | answer,
                )  # fmt: skip
            await conn.execute(f"delete from net._http_response where created < now() - interval '{TTL}'")
