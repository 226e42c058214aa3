"""The HTTP API's server (h11 on asyncio): routing, errors in the API's shape, keep-alive, limits, closing.

The routes themselves are tested through a running worker (tests/worker/test_service.py)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from worker.http_api import MAX_BODY_BYTES, HttpApi, Request, Response, json_response

SECRET = "test-api-secret-0123456789"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Routes:
    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = asyncio.Event()

    async def echo(self, request: Request) -> Response:
        return json_response({"path": request.path, "body": request.body.decode()})

    async def fail(self, _: Request) -> Response:
        raise RuntimeError("boom")

    async def slow(self, _: Request) -> Response:
        self.started.set()
        await self.release.wait()
        return json_response({"done": True})


@pytest_asyncio.fixture(loop_scope="function")  # the server runs on the test's own loop
async def served() -> AsyncIterator[tuple[HttpApi, Routes, str]]:
    routes = Routes()
    api = HttpApi(
        {
            ("GET", "/echo"): routes.echo,
            ("POST", "/echo"): routes.echo,
            ("GET", "/fail"): routes.fail,
            ("GET", "/slow"): routes.slow,
        },
        SECRET,
    )
    port = _free_port()
    await api.start("127.0.0.1", port)
    try:
        yield api, routes, f"http://127.0.0.1:{port}"
    finally:
        routes.release.set()
        await api.close()


async def test_routes_answer_and_one_connection_carries_many_requests(
    served: tuple[HttpApi, Routes, str],
) -> None:
    _, _, url = served
    async with httpx.AsyncClient(base_url=url) as client:
        answers = [await client.get("/echo", params={"n": str(n)}) for n in range(3)]
        posted = await client.post("/echo", content=b"hello", headers={"Authorization": f"Bearer {SECRET}"})
        head = await client.head("/echo")
        connections = client._transport._pool.connections  # type: ignore[attr-defined]

    assert [(answer.status_code, answer.json()["path"]) for answer in answers] == [(200, "/echo")] * 3
    assert answers[0].headers["content-type"] == "application/json; charset=utf-8"
    assert posted.json() == {"path": "/echo", "body": "hello"}
    assert (head.status_code, head.content, head.headers["content-length"]) == (
        200,
        b"",
        str(len(answers[0].content)),
    )
    assert len(connections) == 1  # kept alive across all five


async def test_errors_have_the_api_shape(served: tuple[HttpApi, Routes, str]) -> None:
    _, _, url = served
    async with httpx.AsyncClient(base_url=url) as client:
        missing = await client.get("/nowhere")
        wrong_method = await client.delete("/echo")
        unauthorised = await client.post("/echo")
        wrong_secret = await client.post("/echo", headers={"Authorization": "Bearer nope"})
        failed = await client.get("/fail")
        too_large = await client.post(
            "/echo", content=b"x" * (MAX_BODY_BYTES + 1), headers={"Authorization": f"Bearer {SECRET}"}
        )

    codes = [
        (answer.status_code, answer.json()["error"]["code"])
        for answer in (missing, wrong_method, unauthorised, wrong_secret, failed, too_large)
    ]
    assert codes == [
        (404, "not_found"), (405, "method_not_allowed"), (401, "missing_authorization"),
        (403, "invalid_secret"), (500, "internal_error"), (413, "body_too_large"),
    ]  # fmt: skip
    assert wrong_method.headers["allow"] == "GET, POST"
    assert "boom" not in failed.text  # the exception is logged, not shown


async def test_a_malformed_request_gets_400_and_the_server_goes_on(
    served: tuple[HttpApi, Routes, str],
) -> None:
    _, _, url = served
    port = int(url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()

    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b'"code": "bad_request"' in answer
    async with httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/echo")).status_code == 200


async def test_close_lets_a_request_in_progress_finish(served: tuple[HttpApi, Routes, str]) -> None:
    api, routes, url = served
    async with httpx.AsyncClient(base_url=url) as client:
        idle = httpx.AsyncClient(base_url=url)
        await idle.get("/echo")  # a kept-alive connection with nothing in progress
        in_progress = asyncio.create_task(client.get("/slow"))
        await routes.started.wait()
        closing = asyncio.create_task(api.close())
        await asyncio.sleep(0.05)
        assert not closing.done()  # waits for the response in progress
        routes.release.set()
        answer = await in_progress
        await asyncio.wait_for(closing, 5)
        await idle.aclose()

    assert answer.json() == {"done": True}
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(base_url=url) as client:
            await client.get("/echo")
