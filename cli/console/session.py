"""Profiles: where the console talks to (API URL, anon key) and the signed-in user's session, one file each.

A profile file lives in the user's config directory (`TRADEMIND_CONFIG_DIR`, else the platform's, e.g.
~/.config/trademind/profiles/<name>.json), written atomically with mode 0600 in a 0700 directory: it holds a
refresh token. `TRADEMIND_URL` and `TRADEMIND_ANON_KEY` override what the profile saved; with neither, the
local stack's gateway and its well-known anon key are used.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cli.console.errors import ConsoleError, UsageProblem

LOCAL_URL = "http://127.0.0.1:54321"
PROFILE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Refresh this long before the access token expires, so a request never leaves with a token about to lapse.
REFRESH_MARGIN_SECS = 60


def local_anon_key() -> str:
    from devstack.keys import ANON_KEY

    return ANON_KEY


def config_dir() -> Path:
    configured = os.environ.get("TRADEMIND_CONFIG_DIR")
    if configured:
        return Path(configured)
    import platformdirs

    return Path(platformdirs.user_config_dir("trademind"))


@dataclass(frozen=True, slots=True)
class Endpoint:
    url: str
    anon_key: str


@dataclass(frozen=True, slots=True)
class Session:
    """A Supabase Auth session: the access token (a JWT) and what renews it."""

    access_token: str
    refresh_token: str | None
    expires_at: int  # UNIX seconds
    user_id: str
    email: str | None

    def expires_within(self, secs: float) -> bool:
        return self.expires_at - time.time() < secs


class Profile:
    """One named profile: its endpoint and its session."""

    def __init__(self, name: str = "default", directory: Path | None = None) -> None:
        if not PROFILE_NAME.match(name):
            raise UsageProblem(f"--profile must be 1-64 letters, digits, '-' or '_', not {name!r}")
        self.name = name
        self.path = (directory or config_dir()) / "profiles" / f"{name}.json"

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, json.JSONDecodeError) as error:
            raise ConsoleError(f"cannot read profile {self.path}: {error}") from error
        return data if isinstance(data, dict) else {}

    def _write(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.path.parent, 0o700)
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.name}.")
        try:
            os.fchmod(handle, 0o600)
            with os.fdopen(handle, "w") as file:
                json.dump(data, file, indent=2)
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def endpoint(self) -> Endpoint:
        saved = self._read()
        url = os.environ.get("TRADEMIND_URL") or saved.get("url") or LOCAL_URL
        anon_key = os.environ.get("TRADEMIND_ANON_KEY") or saved.get("anon_key") or local_anon_key()
        return Endpoint(str(url).rstrip("/"), str(anon_key))

    def save_endpoint(self, url: str | None, anon_key: str | None) -> None:
        data = self._read()
        if url:
            data["url"] = url.rstrip("/")
        if anon_key:
            data["anon_key"] = anon_key
        self._write(data)

    def session(self) -> Session | None:
        raw = self._read().get("session")
        if not isinstance(raw, dict):
            return None
        try:
            return Session(**raw)
        except TypeError as error:
            raise ConsoleError(f"the session in {self.path} is damaged: run trademind login") from error

    def save_session(self, session: Session) -> None:
        data = self._read()
        data["session"] = asdict(session)
        self._write(data)

    def clear_session(self) -> None:
        data = self._read()
        if data.pop("session", None) is not None:
            self._write(data)
