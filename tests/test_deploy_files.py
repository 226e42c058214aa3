"""The deploy files agree with the machines' runtime settings, and the worker image is only the worker.

supabase/functions/_shared/machine_runtime.json is the one source of a machine's runtime settings
(provision-machine and every rollout apply it); fly.toml and the Dockerfile say the same things in their own
terms, read here the way flyctl and Docker read them. No Docker engine runs here, so the image's contents are
checked from its build context (.dockerignore, with Docker's own matching rules) and the wheel its build
stage installs.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from docker.utils.build import exclude_paths

from worker.settings import WorkerSettings
from worker.validator.settings import ValidatorSettings

REPO = Path(__file__).resolve().parents[1]
RUNTIME = json.loads((REPO / "supabase/functions/_shared/machine_runtime.json").read_text())
FLY_TOML = tomllib.loads((REPO / "fly.toml").read_text())
VALIDATOR_TOML = tomllib.loads((REPO / "fly.validator.toml").read_text())
DOCKERFILE = (REPO / "Dockerfile").read_text()
# flyctl's fly.toml -> Machines API mapping (internal/appconfig): restart "never" is the API's "no".
FLY_RESTART_POLICIES = {"always": "always", "never": "no", "on-failure": "on-failure"}
# What fly.toml may hold, and which runtime settings it has no words for.
FLY_TOML_KEYS = {
    "app", "primary_region", "kill_signal", "kill_timeout", "build", "services", "checks", "restart", "vm",
}  # fmt: skip
API_ONLY_SETTINGS = {"auto_destroy"}
# How the functions read their environment (_shared/env.ts, auth.ts's JSON key sets and Deno's own API).
ENV_READ = re.compile(
    r"(?:requireEnv|optionalEnv|positiveIntEnv|namedKeys|Deno\.env\.get)\(\s*\"([A-Z][A-Z0-9_]+)\""
)
# What the platform gives every function; `supabase secrets set` skips these names.
PLATFORM_PREFIX = "SUPABASE_"


def memory_mb(size: str) -> int:
    match = re.fullmatch(r"(\d+)\s*(mb|gb)", size.strip().lower())
    assert match, f"fly.toml memory {size!r} is not like '256mb'"
    return int(match.group(1)) * (1024 if match.group(2) == "gb" else 1)


def fly_toml_as_machine_config(toml: dict[str, Any]) -> dict[str, Any]:
    """What flyctl would send to the Machines API for fly.toml's runtime sections."""
    [restart] = toml["restart"]
    [vm] = toml["vm"]
    return {
        "guest": {"cpu_kind": vm["cpu_kind"], "cpus": vm["cpus"]},
        "restart": {"policy": FLY_RESTART_POLICIES[restart["policy"]], "max_retries": restart["retries"]},
        "stop_config": {"signal": toml["kill_signal"], "timeout": f"{toml['kill_timeout']}s"},
        "checks": {
            name: check | {"method": check["method"].upper()} for name, check in toml["checks"].items()
        },
        "services": [
            {
                "protocol": service["protocol"],
                "internal_port": service["internal_port"],
                "ports": [{"port": port["port"], "handlers": port["handlers"]} for port in service["ports"]],
                "autostart": service["auto_start_machines"],
                "autostop": service["auto_stop_machines"],
            }
            for service in toml["services"]
        ],
    }


# One source for the runtime settings ---------------------------------------------------------------------
def test_fly_toml_says_what_the_machine_runtime_settings_say() -> None:
    settings = {key: value for key, value in RUNTIME["config"].items() if key not in API_ONLY_SETTINGS}

    assert fly_toml_as_machine_config(FLY_TOML) == settings
    assert memory_mb(FLY_TOML["vm"][0]["memory"]) == min(RUNTIME["memoryMbByTier"].values())
    # Nothing else that would configure a machine differently (env comes per user from provision-machine).
    assert set(FLY_TOML) <= FLY_TOML_KEYS, set(FLY_TOML) - FLY_TOML_KEYS


def test_the_comparison_notices_drift() -> None:
    drifted = json.loads(json.dumps(FLY_TOML))
    drifted["restart"][0]["policy"] = "always"
    drifted["checks"]["health"]["grace_period"] = "20s"
    settings = {key: value for key, value in RUNTIME["config"].items() if key not in API_ONLY_SETTINGS}

    converted = fly_toml_as_machine_config(drifted)

    assert converted != settings
    assert converted["restart"]["policy"] == "always"
    assert converted["checks"]["health"]["grace_period"] == "20s"


def test_the_dockerfile_agrees_with_the_runtime_settings() -> None:
    config = RUNTIME["config"]
    [service] = config["services"]
    final_stage = DOCKERFILE.rsplit("FROM ", 1)[1]
    start_period = re.search(r"HEALTHCHECK[^\n]*--start-period=(\S+)", final_stage)

    assert re.search(r"^STOPSIGNAL (\S+)$", final_stage, re.M)[1] == config["stop_config"]["signal"]  # type: ignore[index]
    assert re.search(r"\bHTTP_PORT=(\d+)", final_stage)[1] == str(service["internal_port"])  # type: ignore[index]
    assert config["checks"]["health"]["port"] == service["internal_port"]
    assert re.search(r"^EXPOSE (\d+)$", final_stage, re.M)[1] == str(service["internal_port"])  # type: ignore[index]
    assert start_period is not None and start_period[1] == config["checks"]["health"]["grace_period"]
    assert config["stop_config"]["timeout"] == f"{FLY_TOML['kill_timeout']}s"


def functions_env_reads() -> set[str]:
    read: set[str] = set()
    for source in (REPO / "supabase/functions").rglob("*.ts"):
        if "tests" not in source.parts:
            read |= set(ENV_READ.findall(source.read_text()))
    assert read, "no environment reads found: the pattern is stale"
    return read


def readme_deploy() -> str:
    readme = (REPO / "README.md").read_text()
    return readme[readme.index("## Deploy\n") :]


def secrets_table(deploy: str) -> set[str]:
    """The names in the first column of the Deploy section's table of function secrets."""
    lines = deploy[deploy.index("| secret | required | value |") :].splitlines()
    rows = list(itertools.takewhile(lambda line: line.startswith("|"), lines))[2:]
    return {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1])}


def test_the_readme_secrets_are_exactly_what_the_functions_read() -> None:
    read = functions_env_reads()
    deploy = readme_deploy()

    assert secrets_table(deploy) == {name for name in read if not name.startswith(PLATFORM_PREFIX)}
    # What the platform provides is named too, as not to be set.
    provided = {name for name in read if name.startswith(PLATFORM_PREFIX)}
    assert sorted(name for name in provided if f"`{name}`" not in deploy) == []


def test_the_validator_app_sets_what_the_validator_reads_with_the_workers_sandbox_limits() -> None:
    env = VALIDATOR_TOML["env"]
    settings = ValidatorSettings.model_fields
    required = {name.upper() for name, field in settings.items() if field.is_required()}
    worker = WorkerSettings.model_fields

    assert set(env) <= {name.upper() for name in settings}
    # The one required setting is a Fly secret, set in the Deploy section.
    assert required == {"VALIDATOR_SECRET"}
    assert "fly secrets set -a trademind-validator VALIDATOR_SECRET=" in readme_deploy()
    # What passes the validator runs on a machine: the same sandbox deadline and memory.
    assert float(env["VALIDATOR_DEADLINE_MS"]) == worker["sandbox_deadline_ms"].default
    assert int(env["VALIDATOR_MEMORY_LIMIT_MB"]) == worker["sandbox_memory_limit_mb"].default
    assert int(env["HTTP_PORT"]) == VALIDATOR_TOML["http_service"]["internal_port"]
    assert VALIDATOR_TOML["checks"]["health"]["port"] == int(env["HTTP_PORT"])


# What the image carries ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def context() -> set[str]:
    """Every path Docker would send as the build context (files and directories, relative)."""
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    return set(exclude_paths(str(REPO), patterns, dockerfile="Dockerfile"))


def copy_sources() -> list[str]:
    """The context paths the Dockerfile COPYs (not `--from` another stage)."""
    sources = []
    for line in DOCKERFILE.splitlines():
        parts = line.split()
        if parts[:1] == ["COPY"] and not parts[1].startswith("--from"):
            sources += parts[1:-1]
    return sources


def test_the_build_context_holds_neither_the_cli_nor_the_local_stack(context: set[str]) -> None:
    tops = {path.split("/")[0] for path in context}

    # Docker always sends the Dockerfile and .dockerignore; only COPY puts anything in the image.
    assert tops == {
        "Dockerfile", ".dockerignore", "pyproject.toml", "constraints.txt", "README.md", "worker", "supabase",
    }  # fmt: skip
    assert not [path for path in context if path.endswith((".pyc", "__pycache__", ".env"))]
    assert "worker/__main__.py" in context and "worker/sandbox/dry_run_klines.npz" in context
    assert {path for path in context if path.startswith("supabase/")} >= {
        "supabase/functions/_shared/schemas/decision.schema.json"
    }
    assert not [path for path in context if path.startswith("supabase/") and "/schemas" not in path and
                path not in {"supabase", "supabase/functions", "supabase/functions/_shared"}]  # fmt: skip
    # Everything the Dockerfile copies is there, and nothing it copies is the CLI or the stack.
    for source in copy_sources():
        assert source in context, f"COPY {source}: not in the build context"
        assert not source.startswith(("cli", "devstack")), source


def test_the_build_stage_installs_only_the_worker(context: set[str], tmp_path: Path) -> None:
    # The build stage's `pip install .` over exactly the files it copies: ask the project's build backend
    # (setuptools) what the distribution holds: its files, top-level packages and entry points.
    source = tmp_path / "src"
    for path in context:
        if (REPO / path).is_file() and path.split("/")[0] in {"pyproject.toml", "README.md", "worker"}:
            (source / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / path, source / path)
    egg_info = ["egg_info", "--egg-base", str(tmp_path)]
    built = subprocess.run(
        [sys.executable, "-c", "from setuptools import setup; setup()", *egg_info],
        cwd=source, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    metadata = tmp_path / "trademind.egg-info"

    files = (metadata / "SOURCES.txt").read_text().split()
    entry_points = (metadata / "entry_points.txt").read_text()

    assert set((metadata / "top_level.txt").read_text().split()) == {"worker"}
    assert "worker/__main__.py" in files and "worker/validator/__main__.py" in files
    assert not [path for path in files if path.startswith(("cli/", "devstack/"))]
    # The console script the project declares for the CLI points at a module the image lacks, so the
    # Dockerfile deletes it and checks that neither package can be imported.
    assert "trademind = cli.main:app" in entry_points
    assert "rm /opt/venv/bin/trademind" in DOCKERFILE
    assert "find_spec('cli') or u.find_spec('devstack')" in DOCKERFILE
