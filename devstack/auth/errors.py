"""Supabase Auth's error answers: the status, the `error_code` clients branch on, and the message."""

from __future__ import annotations

from typing import Any

# Clients that send `X-Supabase-Api-Version: 2024-01-01` (supabase-js, supabase-py) get {code, message};
# older ones {code: <status>, error_code, msg} (supabase/auth internal/api/errors.go HandleResponseError).
API_VERSION_HEADER = "X-Supabase-Api-Version"
API_VERSION_2024_01_01 = "2024-01-01"


class AuthError(Exception):
    """An error GoTrue would answer with; `reasons` only for weak_password."""

    def __init__(self, status: int, code: str, message: str, reasons: list[str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.reasons = reasons

    def body(self, api_version: str | None) -> dict[str, Any]:
        body: dict[str, Any]
        if api_version is not None and api_version >= API_VERSION_2024_01_01:
            body = {"code": self.code, "message": self.message}
        else:
            body = {"code": self.status, "error_code": self.code, "msg": self.message}
        if self.reasons is not None:
            body["weak_password"] = {"reasons": self.reasons}
        return body


def invalid_credentials() -> AuthError:
    return AuthError(400, "invalid_credentials", "Invalid login credentials")


def validation_failed(message: str) -> AuthError:
    return AuthError(400, "validation_failed", message)


def bad_jwt(detail: str) -> AuthError:
    return AuthError(403, "bad_jwt", f"invalid JWT: unable to parse or verify signature, {detail}")
