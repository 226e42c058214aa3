"""The functions router: a function whose first load failed is loaded again on the next request."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from devstack.config import StackConfig
from devstack.stack import FUNCTIONS_ROUTER

PACKAGE = "tm-load-probe"


class FlakyRegistry:
    """An npm registry on loopback serving one package, or 503 for everything while it is `down`."""

    def __init__(self) -> None:
        self.down = True
        self.tarball = _package_tarball()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if registry.down:
                    self.send_response(503)
                    self.end_headers()
                    return
                body = registry.tarball if self.path.endswith(".tgz") else registry.metadata()
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        return Handler

    def metadata(self) -> bytes:
        integrity = "sha512-" + base64.b64encode(hashlib.sha512(self.tarball).digest()).decode()
        tarball_url = f"{self.url}{PACKAGE}/-/{PACKAGE}-1.0.0.tgz"
        dist = {"tarball": tarball_url, "integrity": integrity}
        version = {"name": PACKAGE, "version": "1.0.0", "dist": dist}
        document = {"name": PACKAGE, "dist-tags": {"latest": "1.0.0"}, "versions": {"1.0.0": version}}
        return json.dumps(document).encode()


def _package_tarball() -> bytes:
    files = {
        "package/package.json": json.dumps({"name": PACKAGE, "version": "1.0.0", "type": "module"}),
        "package/index.js": "export const answer = 42;\n",
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def registry() -> Iterator[FlakyRegistry]:
    flaky = FlakyRegistry()
    thread = threading.Thread(target=flaky.server.serve_forever, daemon=True)
    thread.start()
    yield flaky
    flaky.server.shutdown()
    flaky.server.server_close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def router_url(tmp_path: Path, registry: FlakyRegistry) -> Iterator[str]:
    """The real router serving one function that imports the registry's package, with an empty cache."""
    function_dir = tmp_path / "functions" / "probe"
    function_dir.mkdir(parents=True)
    (function_dir / "index.ts").write_text('import { handler } from "./handler.ts";\nDeno.serve(handler);\n')
    (function_dir / "handler.ts").write_text(
        f'import {{ answer }} from "npm:{PACKAGE}@1.0.0";\n'
        "export function handler(_req: Request): Response {\n"
        "  return Response.json({ answer });\n"
        "}\n"
    )
    config = StackConfig.load()
    port = _free_port()
    env = {
        **config.deno_env(),
        "DENO_DIR": str(tmp_path / "deno"),
        "NPM_CONFIG_REGISTRY": registry.url,
        "FUNCTIONS_DIR": str(tmp_path / "functions"),
        "FUNCTIONS_PORT": str(port),
        "SUPABASE_URL": config.api_url,
        "SUPABASE_INTERNAL_JWT_SECRET": "router-test-secret-with-at-least-32-characters",
        "FUNCTIONS_VERIFY_JWT": json.dumps({"probe": False}),
    }
    argv = [str(config.deno_bin), "run", "--allow-net", "--allow-env", "--allow-read", "--allow-sys"]
    router = subprocess.Popen(
        [*argv, "--no-prompt", "--no-lock", str(FUNCTIONS_ROUTER)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/_internal/health", timeout=1)
                break
            except httpx.TransportError:
                assert router.poll() is None, "the router exited"
                assert time.monotonic() < deadline, "the router did not start within 30 s"
                time.sleep(0.1)
        yield url
    finally:
        router.terminate()
        router.wait(10)


def test_a_function_whose_npm_download_failed_loads_on_the_next_request(
    router_url: str, registry: FlakyRegistry
) -> None:
    failed = httpx.post(f"{router_url}/probe", timeout=60)
    registry.down = False
    retried = httpx.post(f"{router_url}/probe", timeout=60)
    again = httpx.post(f"{router_url}/probe", timeout=60)

    assert failed.status_code == 503
    assert failed.json()["error"]["code"] == "function_boot_error"
    assert (retried.status_code, retried.json()) == (200, {"answer": 42})
    assert (again.status_code, again.json()) == (200, {"answer": 42})
