"""The local Supabase stack as one unit: Postgres, PostgREST, Edge Functions (Deno) and the nginx gateway."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from devstack import keys
from devstack.config import (
    AUTH_PORT,
    EXCHANGE_DEFAULT_SPEED,
    EXCHANGE_PORT,
    FLY_APP_NAME,
    FLY_DEV_TOKEN,
    FLY_EDGE_PORT,
    FLY_PORT,
    FUNCTIONS_PORT,
    GEMINI_PORT,
    PG_NET_PORT,
    POSTGREST_ADMIN_PORT,
    POSTGREST_PORT,
    REALTIME_PORT,
    TELEGRAM_PORT,
    VALIDATOR_DEV_SECRET,
    VALIDATOR_PORT,
    StackConfig,
)
from devstack.errors import StackError
from devstack.fly.machines import stop_recorded_processes
from devstack.postgres import PG_BIN_DIR, PLATFORM_OWNER, PostgresCluster
from devstack.processes import ProcessRecord, ProcessRegistry
from devstack.service_dirs import remove_writable_dir, writable_dir
from devstack.supabase_cli import SupabaseCli

NGINX_BIN = Path("/usr/sbin/nginx")
NGINX_TEMPLATE = Path(__file__).with_name("nginx.conf.template")
FUNCTIONS_ROUTER = Path(__file__).with_name("functions_router.ts")
READY_TIMEOUT_SECS = 60.0


@dataclass(frozen=True)
class PartStatus:
    name: str
    pid: int | None
    port: int | None
    running: bool
    log_path: str


Progress = Callable[[str], None]
Launch = Callable[[], tuple[list[str], dict[str, str] | None]]


def _quiet(_: str) -> None:
    pass


class DevStack:
    """Start, stop, inspect and reset the local stack; every process it starts is recorded by pid."""

    PARTS = (
        "postgres", "auth", "postgrest", "realtime", "functions", "gateway", "gemini", "fly", "exchange",
        "telegram", "pg_net", "validator",
    )  # fmt: skip

    def __init__(self, config: StackConfig | None = None) -> None:
        self.config = config or StackConfig.load()
        self.registry = ProcessRegistry(self.config.run_dir)
        self.postgres = PostgresCluster(self.config, self.registry)

    # Commands ---------------------------------------------------------------------------------------------
    def up(self, progress: Progress = _quiet) -> None:
        """Bring every part up (idempotent): create the cluster on first use, push pending migrations."""
        self._check_binaries()
        for directory in (self.config.state_dir, self.config.run_dir, self.config.logs_dir):
            directory.mkdir(parents=True, exist_ok=True)
        if not self.postgres.is_initialised():
            progress("creating the Postgres cluster")
            self.postgres.initialise()
        if self.postgres.running() is None:
            progress("starting Postgres")
            self._ensure_port_free("postgres", self.config.db_port)
            self.postgres.start()
        self.postgres.wait_until_ready()
        self._migrate(progress)
        self._ensure_running("auth", "Supabase Auth", AUTH_PORT, self._auth_launch, progress)
        self._ensure_running("postgrest", "PostgREST", POSTGREST_PORT, self._postgrest_launch, progress)
        self._ensure_running("realtime", "Realtime", REALTIME_PORT, self._realtime_launch, progress)
        self._ensure_running("pg_net", "pg_net (HTTP from SQL)", PG_NET_PORT, self._pg_net_launch, progress)
        self._ensure_running("gemini", "the Gemini stand-in", GEMINI_PORT, self._gemini_launch, progress)
        self._ensure_running(
            "telegram", "the Telegram stand-in", TELEGRAM_PORT, self._telegram_launch, progress
        )
        self._ensure_running(
            "validator", "the signal-code validator", VALIDATOR_PORT, self._validator_launch, progress
        )
        self._ensure_running("fly", "the Fly Machines stand-in", FLY_PORT, self._fly_launch, progress)
        self._ensure_running(
            "exchange", "the Binance exchange simulator", EXCHANGE_PORT, self._exchange_launch, progress
        )
        self._ensure_running(
            "functions", "Edge Functions (Deno)", FUNCTIONS_PORT, self._functions_launch, progress
        )
        self._ensure_running(
            "gateway", "the gateway (nginx)", self.config.api_port, self._gateway_launch, progress
        )
        progress("waiting for every part to answer")
        self.wait_until_ready()

    def down(self, progress: Progress = _quiet) -> list[str]:
        """Stop every process this stack started, Fly machines first; return the names of those stopped."""
        stopped = []
        # Realtime before Postgres: it drops its replication slot on the way out.
        # Fly first: its workers record their last heartbeat (`stopped`) through the gateway as they stop.
        for name in (
            "fly", "gateway", "functions", "realtime", "postgrest", "auth", "gemini", "exchange", "telegram",
            "pg_net", "validator",
        ):  # fmt: skip
            if self.registry.stop(name, first_signal=signal.SIGTERM):
                progress(f"stopped {name}")
                stopped.append(name)
        # Worker processes a crashed Fly stand-in left behind (it stops its own on SIGTERM).
        if stop_recorded_processes(self._fly_state_dir):
            progress("stopped leftover Fly machine processes")
        if self.postgres.stop():
            progress("stopped postgres")
            stopped.append("postgres")
        return stopped

    def status(self) -> list[PartStatus]:
        statuses = []
        for name in self.PARTS:
            record = self.registry.get(name)
            alive = record is not None and record.is_alive()
            statuses.append(
                PartStatus(
                    name=name,
                    pid=record.pid if record and alive else None,
                    port=record.port if record else None,
                    running=alive,
                    log_path=record.log_path if record else str(self.config.logs_dir / f"{name}.log"),
                )
            )
        return statuses

    def is_up(self) -> bool:
        return all(part.running for part in self.status())

    def reset(self, progress: Progress = _quiet) -> None:
        """`supabase db reset`: drop every user schema and object, re-apply every migration and the seed."""
        self.up(progress)
        progress("resetting the database with supabase db reset")
        SupabaseCli(self.config).reset(progress)
        self.wait_until_ready()

    def destroy(self) -> None:
        """Stop everything and delete the state folder (the next `up` starts from nothing)."""
        self.down()
        self.postgres.destroy()
        remove_writable_dir(self.config.state_dir / "nginx-temp")
        shutil.rmtree(self.config.state_dir, ignore_errors=True)

    # Readiness ----------------------------------------------------------------------------------------
    def wait_until_ready(self, timeout_secs: float = READY_TIMEOUT_SECS) -> None:
        """Wait until PostgREST has loaded the schema, the functions router and the gateway answer."""
        probes = {
            "auth": f"http://127.0.0.1:{AUTH_PORT}/health",
            "postgrest": f"http://127.0.0.1:{POSTGREST_ADMIN_PORT}/ready",
            "realtime": f"http://127.0.0.1:{REALTIME_PORT}/health",
            "functions": f"http://127.0.0.1:{FUNCTIONS_PORT}/_internal/health",
            "gateway": f"{self.config.api_url}/health",
            "gemini": f"http://127.0.0.1:{GEMINI_PORT}/_control/health",
            "fly": f"http://127.0.0.1:{FLY_PORT}/_control/health",
            "exchange": f"http://127.0.0.1:{EXCHANGE_PORT}/api/v3/ping",
            "telegram": f"http://127.0.0.1:{TELEGRAM_PORT}/_control/health",
            "pg_net": f"http://127.0.0.1:{PG_NET_PORT}/health",
            "validator": f"http://127.0.0.1:{VALIDATOR_PORT}/health",
        }
        deadline = time.monotonic() + timeout_secs
        with httpx.Client(timeout=2.0) as client:
            for name, url in probes.items():
                while True:
                    self._check_alive(name)
                    try:
                        if client.get(url).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline:
                        raise StackError(
                            f"{name} did not answer {url} within {timeout_secs:.0f}s; "
                            f"see {self._log_path(name)}"
                        )
                    time.sleep(0.05)

    # Parts ------------------------------------------------------------------------------------------------
    def _migrate(self, progress: Progress) -> None:
        """The platform bootstrap (what the Supabase image provides), then `supabase db push`, seed too."""
        owner = self.postgres.platform_owner()
        if owner not in (None, PLATFORM_OWNER):
            # Its schemas would not survive `supabase db reset`, and the CLI did not write its history.
            progress("re-creating the database, which an older version of the stack made")
            # Realtime drops its slot (which would block the drop) as it stops; Auth makes its tables as it
            # starts. `up` starts both again.
            for name in ("realtime", "auth"):
                self.registry.stop(name, first_signal=signal.SIGTERM)
            self.postgres.recreate_database()
            owner = None
        if owner is None:
            progress("applying the platform bootstrap")
            self.postgres.apply_bootstrap()
        SupabaseCli(self.config).push(progress)

    def _ensure_running(self, name: str, label: str, port: int, launch: Launch, progress: Progress) -> None:
        if self.registry.live(name):
            return
        progress(f"starting {label}")
        self._ensure_port_free(name, port)
        argv, env = launch()
        self.registry.spawn(name, argv, log_path=self._log_path(name), port=port, env=env)

    def _postgrest_launch(self) -> tuple[list[str], dict[str, str]]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PGRST_DB_URI": f"postgres://authenticator:postgres@127.0.0.1:{self.config.db_port}/postgres",
            "PGRST_DB_SCHEMAS": ",".join(self.config.api_schemas),
            "PGRST_DB_EXTRA_SEARCH_PATH": ",".join(self.config.extra_search_path),
            "PGRST_DB_ANON_ROLE": "anon",
            "PGRST_DB_MAX_ROWS": str(self.config.max_rows),
            "PGRST_DB_CHANNEL_ENABLED": "true",
            # The project's JWKS plus the legacy secret, as the Supabase CLI configures PostgREST: ES256
            # sessions and machine tokens verify by kid, the legacy HS256 anon/service_role keys still work.
            "PGRST_JWT_SECRET": json.dumps(self.config.jwks_with_legacy_secret()),
            # Validated JWTs cached until their exp, as current PostgREST does by default (its
            # jwt-cache-max-entries, since mid-2025); the 12.0 binary here needs it switched on. Checking an
            # ES256 signature is ~1.2 ms of CPU, half of PostgREST's work for a worker's RPC. Revocation is
            # unaffected: the pre-request hook checks the machine row on every request.
            "PGRST_JWT_CACHE_MAX_LIFETIME": "3600",
            "PGRST_SERVER_HOST": "127.0.0.1",
            "PGRST_SERVER_PORT": str(POSTGREST_PORT),
            "PGRST_ADMIN_SERVER_PORT": str(POSTGREST_ADMIN_PORT),
            "PGRST_LOG_LEVEL": "warn",
        }
        return [str(self.config.postgrest_bin)], env

    def _auth_launch(self) -> tuple[list[str], dict[str, str]]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(self.config.repo_root),
            "PYTHONUNBUFFERED": "1",
            "TRADEMIND_DEVSTACK_DIR": str(self.config.state_dir),
            # Trusted, as on a hosted project that still has its legacy keys; Auth never signs with it.
            "AUTH_LEGACY_JWT_SECRET": keys.JWT_SECRET,
        }
        return [sys.executable, "-m", "devstack.auth", "--port", str(AUTH_PORT)], env

    def _functions_launch(self) -> tuple[list[str], dict[str, str]]:
        env = {
            **self.config.deno_env(),
            "FUNCTIONS_DIR": str(self.config.functions_dir),
            "FUNCTIONS_PORT": str(FUNCTIONS_PORT),
            # The router's verify_jwt check (the platform's, like the CLI's edge runtime) still trusts legacy
            # HS256 tokens; it removes this from the environment before any function loads.
            "SUPABASE_INTERNAL_JWT_SECRET": keys.JWT_SECRET,
            **self.config.functions_env(),
            **self._functions_dotenv(),
        }
        argv = [
            str(self.config.deno_bin), "run",
            "--allow-net", "--allow-env", "--allow-read", "--allow-sys",
            "--no-prompt", "--no-lock",
            str(FUNCTIONS_ROUTER),
        ]  # fmt: skip
        return argv, env

    def _gemini_launch(self) -> tuple[list[str], dict[str, str]]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(self.config.repo_root)}
        return [sys.executable, "-m", "devstack.gemini", "--port", str(GEMINI_PORT)], env

    def _pg_net_launch(self) -> tuple[list[str], dict[str, str]]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(self.config.repo_root)}
        argv = [sys.executable, "-m", "devstack.pg_net", "--port", str(PG_NET_PORT)]
        return [*argv, "--db-port", str(self.config.db_port)], env

    def _validator_launch(self) -> tuple[list[str], dict[str, str]]:
        # The worker image's validator entry point, exactly as its Fly app runs it.
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(self.config.repo_root),
            "VALIDATOR_SECRET": VALIDATOR_DEV_SECRET,
            "HTTP_HOST": "127.0.0.1",
            "HTTP_PORT": str(VALIDATOR_PORT),
        }
        return [sys.executable, "-m", "worker.validator"], env

    def _telegram_launch(self) -> tuple[list[str], dict[str, str]]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(self.config.repo_root)}
        argv = [sys.executable, "-m", "devstack.telegram", "--port", str(TELEGRAM_PORT)]
        return [*argv, "--state-dir", str(self.config.state_dir / "telegram")], env

    def _exchange_launch(self) -> tuple[list[str], dict[str, str]]:
        """Replay ../shared/data/klines (or $TRADEMIND_KLINES_DIR) at $TRADEMIND_EXCHANGE_SPEED (60x)."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(self.config.repo_root)}
        if klines_dir := os.environ.get("TRADEMIND_KLINES_DIR"):
            env["TRADEMIND_KLINES_DIR"] = klines_dir
        speed = os.environ.get("TRADEMIND_EXCHANGE_SPEED", str(EXCHANGE_DEFAULT_SPEED))
        argv = [sys.executable, "-m", "devstack.exchange", "--port", str(EXCHANGE_PORT), "--speed", speed]
        return argv, env

    @property
    def _fly_state_dir(self) -> Path:
        return self.config.state_dir / "fly"

    def _fly_launch(self) -> tuple[list[str], dict[str, str]]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", str(self.config.state_dir)),
            "FLY_API_TOKEN": FLY_DEV_TOKEN,
            "FLY_APP_NAME": FLY_APP_NAME,
            "PYTHONPATH": str(self.config.repo_root),
            "PYTHONUNBUFFERED": "1",
        }
        argv = [sys.executable, "-m", "devstack.fly", "--port", str(FLY_PORT)]
        argv += ["--edge-port", str(FLY_EDGE_PORT), "--state-dir", str(self._fly_state_dir)]
        return argv, env

    def _realtime_launch(self) -> tuple[list[str], dict[str, str]]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "TRADEMIND_DEVSTACK_DIR": str(self.config.state_dir),
            "PYTHONUNBUFFERED": "1",
            "REALTIME_JWKS": json.dumps(self.config.jwks_with_legacy_secret()),
        }
        argv = [sys.executable, "-m", "devstack.realtime", "--port", str(REALTIME_PORT)]
        return [*argv, "--db-port", str(self.config.db_port)], env

    def _gateway_launch(self) -> tuple[list[str], dict[str, str] | None]:
        nginx_dir = self.config.state_dir / "nginx"
        nginx_dir.mkdir(parents=True, exist_ok=True)
        # Request bodies and responses over the buffer sizes are written here by the workers, not root.
        temp_dir = writable_dir(self.config.state_dir / "nginx-temp", self.config.gateway_os_user)
        replacements = {
            "{{RUN_DIR}}": str(self.config.run_dir),
            "{{LOGS_DIR}}": str(self.config.logs_dir),
            "{{NGINX_TEMP_DIR}}": str(temp_dir),
            "{{API_PORT}}": str(self.config.api_port),
            "{{POSTGREST_PORT}}": str(POSTGREST_PORT),
            "{{FUNCTIONS_PORT}}": str(FUNCTIONS_PORT),
            "{{REALTIME_PORT}}": str(REALTIME_PORT),
            "{{AUTH_PORT}}": str(AUTH_PORT),
            "{{ANON_KEY}}": self.config.anon_key,
            "{{SERVICE_ROLE_KEY}}": self.config.service_role_key,
        }
        conf = NGINX_TEMPLATE.read_text()
        for placeholder, value in replacements.items():
            conf = conf.replace(placeholder, value)
        conf_path = nginx_dir / "nginx.conf"
        conf_path.write_text(conf)
        return [
            str(NGINX_BIN),
            "-p",
            str(nginx_dir),
            "-c",
            str(conf_path),
            "-e",
            str(self._log_path("gateway")),
        ], None

    # Helpers ----------------------------------------------------------------------------------------------
    def _log_path(self, name: str) -> Path:
        return self.config.logs_dir / f"{name}.log"

    def _check_alive(self, name: str) -> None:
        if self.registry.live(name) is None:
            tail = _tail(self._log_path(name))
            raise StackError(f"{name} exited; last lines of {self._log_path(name)}:\n{tail}")

    def _check_binaries(self) -> None:
        required = {
            "postgrest": self.config.postgrest_bin,
            "deno": self.config.deno_bin,
            "supabase CLI": self.config.supabase_bin,
            "nginx": NGINX_BIN,
            "pg_recvlogical": PG_BIN_DIR / "pg_recvlogical",
        }
        missing = [f"{name} ({path})" for name, path in required.items() if not path.exists()]
        if missing:
            raise StackError(f"missing {', '.join(missing)}: run `make setup`")

    def _ensure_port_free(self, name: str, port: int) -> None:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                raise StackError(f"cannot start {name}: port {port} is already in use by another process")

    def _functions_dotenv(self) -> dict[str, str]:
        """Secrets from supabase/functions/.env, as `supabase functions serve` reads them."""
        dotenv = self.config.functions_dir / ".env"
        if not dotenv.exists():
            return {}
        values = {}
        for raw_line in dotenv.read_text().splitlines():
            line = raw_line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, value = line.split("=", 1)
                values[key.strip()] = value.strip().strip("'\"")
        return values

    def records(self) -> list[ProcessRecord]:
        return [record for name in self.PARTS if (record := self.registry.get(name)) is not None]


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
