"""The local stack's JWT secret, its well-known API keys, and minting of test and machine tokens."""

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
    secret: str = JWT_SECRET,
) -> str:
    """Return an HS256 token shaped like Supabase Auth's (iss, aud, iat, exp, role, sub)."""
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
    claims.update(extra_claims or {})
    return jwt.encode(claims, secret, algorithm="HS256")
