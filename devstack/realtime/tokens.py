"""Verify the JWTs Realtime sees (socket apikey, join access_token), refusing with the real reasons.

Only the roles the project issues are accepted (its API keys, user sessions, machine tokens): a token of any
other role signed with the project's key (e.g. `postgres`) is refused here, as PostgREST refuses it (its
authenticator may switch to these roles only).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jwt

ISSUED_ROLES = frozenset({"anon", "authenticated", "service_role", "trader_machine"})


class TokenRejected(Exception):
    """The token may not be used; `reason` is the text the real server puts in a join error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    @property
    def reason(self) -> str:
        return f"{self.code}: {self.message}"


@dataclass(frozen=True, slots=True)
class Claims:
    """A verified token's claims; `claims_json` is what Postgres sees as request.jwt.claims."""

    role: str
    exp: int
    sub: str | None
    claims_json: str

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Claims:
        sub = payload.get("sub")
        return cls(
            role=str(payload["role"]),
            exp=int(payload["exp"]),
            sub=str(sub) if sub is not None else None,
            claims_json=json.dumps(payload, sort_keys=True, separators=(",", ":")),
        )


class TokenVerifier:
    """Verify tokens against the project's JWKS (signing keys by `kid`, the legacy secret as an `oct` key)."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self._keys = jwt.PyJWKSet.from_dict(jwks).keys

    def verify(self, token: object, now_secs: float) -> Claims:
        """Check the signature and that the token carries `role` and an unexpired `exp`.

        Raises TokenRejected with the code and message supabase/realtime uses (realtime_channel.ex `join`).
        """
        if not isinstance(token, str) or token.count(".") != 2:
            raise TokenRejected("MalformedJWT", "The token provided is not a valid JWT")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise TokenRejected("MalformedJWT", "The token provided is not a valid JWT") from error
        algorithm, kid = header.get("alg"), header.get("kid")
        candidates = [
            key
            for key in self._keys
            if key.algorithm_name == algorithm and (kid is None or key.key_id in (None, kid))
        ]
        if algorithm == "none" or not candidates:
            raise TokenRejected("JwtSignatureError", "Failed to validate JWT signature")
        payload: dict[str, Any] | None = None
        for key in candidates:
            try:
                payload = jwt.decode(
                    token,
                    key.key,
                    algorithms=[str(algorithm)],
                    options={
                        "verify_exp": False,
                        "verify_aud": False,
                        "verify_iat": False,
                        "verify_nbf": False,
                    },
                )
                break
            except (jwt.InvalidSignatureError, jwt.InvalidAlgorithmError):
                continue
            except jwt.PyJWTError as error:
                raise TokenRejected("MalformedJWT", "The token provided is not a valid JWT") from error
        if payload is None:
            raise TokenRejected("JwtSignatureError", "Failed to validate JWT signature")
        role, exp = payload.get("role"), payload.get("exp")
        if not isinstance(role, str) or not role or not isinstance(exp, int) or isinstance(exp, bool):
            raise TokenRejected("InvalidJWTToken", "Fields `role` and `exp` are required in JWT")
        if exp <= now_secs:
            raise TokenRejected("InvalidJWTToken", f"Token has expired {int(now_secs - exp)} seconds ago")
        if role not in ISSUED_ROLES:
            raise TokenRejected("InvalidJWTToken", f"the role '{role}' is not one this project issues")
        return Claims.from_payload(payload)
