"""The pg_net stand-in: net.http_post / net.http_get queue a request that is sent once, and the answer (or the
error) lands in net._http_response, as with Supabase's pg_net."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest

from devstack.stack import DevStack


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[str, str, dict[str, Any] | None]]]]:
    received: list[tuple[str, str, dict[str, Any] | None]] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, body: dict[str, Any] | None) -> None:
            received.append((self.command, self.path, body))
            self.send_response(201)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps({"seen": self.headers.get("authorization")}).encode())

        def do_POST(self) -> None:
            self._answer(json.loads(self.rfile.read(int(self.headers["content-length"]))))

        def do_GET(self) -> None:
            self._answer(None)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


def _queue(db: psycopg.Connection[Any], query: str, *params: str) -> int:
    row = db.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


def _response(db: psycopg.Connection[Any], request_id: int) -> tuple[Any, ...]:
    for _ in range(100):
        row = db.execute(
            "select status_code, content, timed_out, error_msg from net._http_response where id = %s",
            (request_id,),
        ).fetchone()
        if row is not None:
            return tuple(row)
        time.sleep(0.05)
    raise AssertionError(f"no response recorded for request {request_id}")


def test_requests_are_sent_once_and_answers_recorded(
    stack: DevStack, db: psycopg.Connection[Any], receiver: tuple[str, list[Any]]
) -> None:
    url, received = receiver

    post_id = _queue(
        db,
        'select net.http_post(%s, \'{"a": 1}\'::jsonb, \'{"q": "x"}\'::jsonb,'
        ' \'{"Content-Type": "application/json", "Authorization": "Bearer k"}\'::jsonb)',
        f"{url}/post",
    )
    get_id = _queue(db, "select net.http_get(%s)", f"{url}/get")
    refused_id = _queue(db, "select net.http_get('http://127.0.0.1:9/nothing')")

    assert _response(db, post_id) == (201, '{"seen": "Bearer k"}', False, None)
    assert _response(db, get_id)[0] == 201
    status, _, timed_out, error = _response(db, refused_id)
    assert (status, timed_out) == (None, False) and "Connect" in error
    assert sorted(received, key=lambda r: r[1]) == [("GET", "/get", None), ("POST", "/post?q=x", {"a": 1})]
    assert db.execute("select count(*) from net.http_request_queue").fetchone() == (0,)
