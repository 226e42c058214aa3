"""Each function's index.ts runs as Supabase's Edge Runtime runs it: as the main module, its top-level
Deno.serve(handler) serving the handler module that the tests and the local router import."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from devstack.config import StackConfig

CONFIG = StackConfig.load()
FUNCTION_SLUG = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")  # the CLI's FuncSlugPattern
FUNCTIONS = sorted(
    path.name
    for path in CONFIG.functions_dir.iterdir()
    if FUNCTION_SLUG.match(path.name) and (path / "index.ts").is_file()
)
LISTENING = re.compile(r"Listening on http://127\.0\.0\.1:(\d+)/")


@pytest.fixture(params=FUNCTIONS)
def served(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """(slug, base URL) of the function's index.ts started as the main module on an ephemeral port."""
    slug: str = request.param
    env = {
        **CONFIG.deno_env(),
        **CONFIG.functions_env(),
        # Deno.serve(handler) takes its address from here, as the runtime's server would hand it one.
        "DENO_SERVE_ADDRESS": "tcp:127.0.0.1:0",
    }
    process = subprocess.Popen(
        [str(CONFIG.deno_bin), "run", "--no-prompt", "--no-lock",
         "--allow-net", "--allow-env", "--allow-read", "--allow-sys", "index.ts"],
        cwd=CONFIG.functions_dir / slug,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        output: list[str] = []
        for line in process.stdout:
            output.append(line)
            if match := LISTENING.search(line):
                yield slug, f"http://127.0.0.1:{match.group(1)}"
                break
        else:
            pytest.fail(f"{slug}/index.ts exited without serving:\n{''.join(output)}")
    finally:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


def test_every_function_has_an_entry_point_and_a_config_entry() -> None:
    assert set(FUNCTIONS) == set(CONFIG.functions_verify_jwt), "each function needs [functions.<slug>]"
    for slug in FUNCTIONS:
        assert (CONFIG.functions_dir / slug / "handler.ts").is_file(), f"{slug}: the handler is in handler.ts"


def test_index_serves_the_handler_as_main_module(served: tuple[str, str]) -> None:
    slug, url = served
    preflight = httpx.options(f"{url}/{slug}", timeout=30)
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "*"

    if slug == "ping":
        # ping checks its caller as every function does (a revoked machine token gets past the gateway).
        answer = httpx.get(f"{url}/ping", headers={"Authorization": f"Bearer {CONFIG.anon_key}"}, timeout=30)
        assert answer.status_code == 200
        assert answer.json()["function"] == "ping"
    else:
        # The handler's own checks answer (no token), as they do behind the gateway.
        answer = httpx.post(f"{url}/{slug}", json={}, timeout=30)
        assert answer.status_code == 401
        assert answer.json()["error"]["code"]
