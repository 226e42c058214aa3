"""The local stack's legacy JWT secret, its well-known API keys, and minting of test and machine tokens."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt

# The Supabase CLI's local defaults (supabase/cli pkg/config/apikeys.go): public knowledge, dev only.
JWT_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"  # noqa: S105
ANON_KEY = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJpc3MiOiJzdXBhYmFzZS1kZW1vIiwicm9sZSI6ImFub24iLCJleHAiOjE5ODM4MTI5OTZ9."
    "CRXP1A7WOeoJeXxjNni43kdQwgnWNReilDMblYTn_I0"
)
SERVICE_ROLE_KEY = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJpc3MiOiJzdXBhYmFzZS1kZW1vIiwicm9sZSI6InNlcnZpY2Vfcm9sZSIsImV4cCI6MTk4MzgxMjk5Nn0."
    "EGIM96RAZx35lJzdJsyH-qQwv8Hdp7fsn3W0YpN81IU"
)

ROLES = ("anon", "authenticated", "service_role", "trader_machine")


def mint_jwt(
    role: str,
    sub: uuid.UUID | str | None = None,
    *,
    valid_for_secs: int = 3600,
    extra_claims: dict[str, Any] | None = None,
    algorithm: str = "ES256",
    secret: str = JWT_SECRET,
) -> str:
    """Return a token shaped like Supabase Auth's (iss, aud, iat, exp, role, sub): ES256 with the stack's
    signing key (as current projects sign), or HS256 with `secret` (the legacy JWT secret)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    now_secs = int(time.time())
    claims: dict[str, Any] = {
        "iss": "supabase-demo",
        "aud": "authenticated",
        "role": role,
        "iat": now_secs,
        "exp": now_secs + valid_for_secs,
    }
    if sub is not None:
        claims["sub"] = str(uuid.UUID(str(sub)))
    if role == "trader_machine":
        claims["machine_gen"] = 1  # a machine row's first identity (fly_machines.token_generation's default)
    claims.update(extra_claims or {})
    if algorithm == "HS256":
        return jwt.encode(claims, secret, algorithm="HS256")
    if algorithm != "ES256":
        raise ValueError(f"unsupported algorithm {algorithm!r}; expected ES256 or HS256")
    from devstack.config import StackConfig  # noqa: PLC0415 - config imports this module

    config = StackConfig.load()
    return config.project_signing_keys()[0].sign({**claims, "iss": f"{config.api_url}/auth/v1"})


def decode(token: str) -> dict[str, Any]:
    """Verify a token the local stack issued (ES256 with its signing key, or HS256 with the legacy secret)."""
    if jwt.get_unverified_header(token).get("alg") == "HS256":
        return dict(jwt.decode(token, JWT_SECRET, algorithms=["HS256"], options={"verify_aud": False}))
    from devstack.config import StackConfig  # noqa: PLC0415 - config imports this module

    jwks = jwt.PyJWKSet.from_dict(StackConfig.load().jwks_with_legacy_secret())
    key = jwks[jwt.get_unverified_header(token)["kid"]]
    return dict(jwt.decode(token, key.key, algorithms=["ES256"], options={"verify_aud": False}))
