"""`supabase functions deploy --use-api` (the pinned CLI) accepts every function, against a local stand-in of
the Management API's upload endpoints (devstack.management_api) that bundles the uploaded files as the
platform does. The CLI is pointed at the stand-in with a profile file; nothing reaches a real host."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import httpx
import pytest

from devstack.config import REPO_ROOT, StackConfig
from devstack.fly.machines import free_port

CONFIG = StackConfig.load()
PROJECT_REF = "trademindlocalprojct"  # a project ref is 20 lowercase letters
# The CLI accepts only tokens shaped like a personal access token.
ACCESS_TOKEN = "sbp_" + "0123456789abcdef" * 2 + "01234567"
FUNCTIONS = sorted(
    path.parent.name
    for path in CONFIG.functions_dir.glob("*/index.ts")
    if not path.parent.name.startswith("_")
)


@pytest.fixture(scope="module")
def management_api() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "devstack.management_api", "--port", str(port)],
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO_ROOT), "HOME": os.environ.get("HOME", "/")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{url}/_control/health", timeout=1).raise_for_status()
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def deploy(
    api_url: str, home: Path, *args: str, workdir: Path = REPO_ROOT
) -> subprocess.CompletedProcess[str]:
    """The CLI as an operator runs it, with a profile whose API is the stand-in."""
    home.mkdir(parents=True, exist_ok=True)
    profile = home / "local-profile.yaml"
    profile.write_text(
        f"name: trademind-local\napi_url: {api_url}\ndashboard_url: {api_url}/dashboard\n"
        "project_host: supabase.local\n"
    )
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "SUPABASE_ACCESS_TOKEN": ACCESS_TOKEN,
        "SUPABASE_TELEMETRY_DISABLED": "1",
        "DO_NOT_TRACK": "1",
    }
    return subprocess.run(
        [str(CONFIG.supabase_bin), "functions", "deploy", *args, "--use-api",
         "--project-ref", PROJECT_REF, "--profile", str(profile)],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


def deployed(api_url: str) -> dict[str, dict[str, Any]]:
    functions: dict[str, dict[str, Any]] = (
        httpx.get(f"{api_url}/_control/functions").json().get(PROJECT_REF, {})
    )
    return functions


def local_modules(entrypoint: str) -> set[str]:
    """The repository files in the entrypoint's module graph, as Deno itself resolves it (not the CLI)."""
    info = subprocess.run(
        [str(CONFIG.deno_bin), "info", "--json", "--no-lock", entrypoint],
        cwd=REPO_ROOT, env=CONFIG.deno_env(), capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    modules = json.loads(info.stdout)["modules"]
    return {
        str(Path(unquote(urlparse(module["specifier"]).path)).relative_to(REPO_ROOT))
        for module in modules
        if module["specifier"].startswith("file://")
    }


def test_every_function_deploys_through_the_upload_api(management_api: str, tmp_path: Path) -> None:
    result = deploy(management_api, tmp_path / "home")

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Deployed Functions on project {PROJECT_REF}: {', '.join(FUNCTIONS)}" in result.stdout
    functions = deployed(management_api)
    assert sorted(functions) == FUNCTIONS
    for slug, function in functions.items():
        entrypoint = f"supabase/functions/{slug}/index.ts"
        # Bundled from the files the CLI uploaded, then activated together by the bulk update.
        assert function["status"] == "ACTIVE", slug
        assert function["entrypoint_path"] == entrypoint
        # Exactly its module graph: its own modules, the _shared ones it imports, JSON modules included.
        assert set(function["files"]) == local_modules(entrypoint), slug
        assert any(name.startswith("supabase/functions/_shared/") for name in function["files"]), slug
        assert function["verify_jwt"] == CONFIG.functions_verify_jwt[slug], slug
    assert "supabase/functions/_shared/schemas/decision.schema.json" in functions["analyze-signal"]["files"]


def test_a_function_whose_modules_were_not_uploaded_is_refused(management_api: str, tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "supabase").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "supabase" / "config.toml", project / "supabase" / "config.toml")
    broken = project / "supabase" / "functions" / "broken"
    broken.mkdir(parents=True)
    # The CLI uploads what it can find; a module that is not there cannot be bundled.
    (broken / "index.ts").write_text('import { handler } from "./handler.ts";\n\nDeno.serve(handler);\n')

    result = deploy(management_api, tmp_path / "home", "broken", workdir=project)

    assert result.returncode != 0
    assert "Failed to bundle the function" in result.stdout + result.stderr
    assert "handler.ts" in result.stdout + result.stderr
    assert "broken" not in deployed(management_api)
