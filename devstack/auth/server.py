"""Supabase Auth's public API for the local stack: sign-up, password and refresh-token grants, the user,
sign-out and the JWKS, answering as GoTrue does, so supabase-py's and supabase-js's auth clients work
unchanged.

Routes (the gateway strips `/auth/v1`): `POST /signup`, `POST /token?grant_type=password|refresh_token`,
`GET|PUT /user`, `POST /logout?scope=global|local|others`, `GET /.well-known/jwks.json`, `GET /health`,
`GET /settings`. Email sign-ups are confirmed at once (the CLI's local default: no email confirmations).
Access tokens are ES256 with Supabase Auth's claims; refresh tokens rotate on every use and a reused one
revokes its session. `/signup` and the password grant share one rate limit per client address, the refresh
grant another (`[auth.rate_limit]` sign_in_sign_ups and token_refresh, per 5 minutes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import bcrypt
import jwt
from aiohttp import web

from devstack.auth import errors
from devstack.auth.errors import API_VERSION_HEADER, AuthError
from devstack.auth.signing_keys import SigningKey, jwks
from devstack.auth.store import AuthStore, RefreshTokenAlreadyUsed, RefreshTokenNotFound, Row

logger = logging.getLogger(__name__)

RATE_WINDOW_SECS = 300.0
BCRYPT_COST = 10  # GoTrue's cost
MAX_BODY_BYTES = 64 * 1024
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
_CHARACTER_SETS = {
    "letters_digits": ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789"),
    "lower_upper_letters_digits": ("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789"),
    "lower_upper_letters_digits_symbols": (
        "abcdefghijklmnopqrstuvwxyz",
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "0123456789",
        "!@#$%^&*()_+-=[]{};'\\:\"|<>?,./`~",
    ),
}


@dataclass(frozen=True)
class AuthSettings:
    """What `[auth]` in supabase/config.toml says, plus where the stand-in lives."""

    issuer: str
    jwt_expiry_secs: int = 3600
    refresh_token_reuse_interval_secs: int = 10
    minimum_password_length: int = 6
    password_requirements: str = ""
    sign_in_sign_ups_per_5_min: int = 30
    token_refreshes_per_5_min: int = 150
    legacy_jwt_secret: str | None = None


class RateLimiter:
    """A token bucket per client address: `limit` requests per 5 minutes, bursting up to `limit`."""

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = float(limit)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, key: str) -> bool:
        now = self._clock()
        tokens, last = self._buckets.get(key, (self._limit, now))
        tokens = min(self._limit, tokens + (now - last) * self._limit / RATE_WINDOW_SECS)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        return True


class AuthApi:
    def __init__(self, store: AuthStore, keys: list[SigningKey], settings: AuthSettings) -> None:
        self.store = store
        self.keys = keys
        self.settings = settings
        self.sign_in_limiter = RateLimiter(settings.sign_in_sign_ups_per_5_min)
        self.refresh_limiter = RateLimiter(settings.token_refreshes_per_5_min)
        self._keys_by_kid = {key.kid: key for key in keys}

    # Routes -----------------------------------------------------------------------------------------------
    async def signup(self, request: web.Request) -> web.Response:
        self._limit(self.sign_in_limiter, request)
        body = await _json_body(request)
        email = _email(body.get("email"), "To signup, please provide your email")
        password = body.get("password")
        if not isinstance(password, str) or not password:
            raise errors.validation_failed("Signup requires a valid password")
        self._check_strength(password)
        data = body.get("data") or {}
        if not isinstance(data, dict):
            raise errors.validation_failed("data must be a JSON object")
        password_hash = await _hash(password)
        created = await self.store.create_user(
            email, password_hash, data, _client_ip(request), _user_agent(request)
        )
        if created is None:
            raise AuthError(422, "user_already_exists", "User already registered")
        user, session_id, refresh_token = created
        return await self._session_response(user, session_id, refresh_token, "password")

    async def token(self, request: web.Request) -> web.Response:
        grant_type = request.query.get("grant_type", "")
        if grant_type == "password":
            self._limit(self.sign_in_limiter, request)
            return await self._password_grant(request)
        if grant_type == "refresh_token":
            self._limit(self.refresh_limiter, request)
            return await self._refresh_grant(request)
        raise AuthError(400, "validation_failed", "unsupported_grant_type")

    async def get_user(self, request: web.Request) -> web.Response:
        user, _ = await self._authenticated_user(request)
        return await self._user_response(user)

    async def put_user(self, request: web.Request) -> web.Response:
        user, claims = await self._authenticated_user(request)
        body = await _json_body(request)
        email = None
        if body.get("email") is not None:
            email = _email(body["email"], "email must be a string")
            if email == user["email"]:
                email = None
            elif (other := await self.store.user_by_email(email)) is not None and other["id"] != user["id"]:
                raise AuthError(
                    422, "email_exists", "A user with this email address has already been registered"
                )
        password_hash = None
        if body.get("password") is not None:
            password = body["password"]
            if not isinstance(password, str) or not password:
                raise errors.validation_failed("Password update requires a valid password")
            self._check_strength(password)
            if user["encrypted_password"] and await _verify(password, user["encrypted_password"]):
                raise AuthError(
                    422, "same_password", "New password should be different from the old password."
                )
            password_hash = await _hash(password)
        metadata = None
        if body.get("data") is not None:
            data = body["data"]
            if not isinstance(data, dict):
                raise errors.validation_failed("data must be a JSON object")
            # GoTrue merges: a key set to null is removed.
            metadata = dict(user["raw_user_meta_data"] or {})
            for key, value in data.items():
                if value is None:
                    metadata.pop(key, None)
                else:
                    metadata[key] = value
        session_id = _uuid_or_none(claims.get("session_id"))
        updated = await self.store.update_user(
            user["id"],
            email=email,
            password_hash=password_hash,
            user_metadata=metadata,
            keep_session=session_id,
        )
        return await self._user_response(updated)

    async def logout(self, request: web.Request) -> web.Response:
        scope = request.query.get("scope", "global")
        if scope not in ("global", "local", "others"):
            raise errors.validation_failed(f"Unsupported logout scope {scope!r}")
        claims = self._verify_jwt(request)
        user_id = _uuid_or_none(claims.get("sub"))
        if user_id is not None:
            await self.store.sign_out(user_id, _uuid_or_none(claims.get("session_id")), scope)
        return web.Response(status=204)

    async def jwks(self, _: web.Request) -> web.Response:
        return web.json_response(jwks(self.keys), headers={"Cache-Control": "public, max-age=600"})

    async def health(self, _: web.Request) -> web.Response:
        return web.json_response(
            {
                "version": "devstack",
                "name": "GoTrue",
                "description": "GoTrue is a user registration and authentication API",
            }
        )

    async def settings_route(self, _: web.Request) -> web.Response:
        return web.json_response(
            {
                "external": {"email": True, "phone": False, "anonymous_users": False},
                "disable_signup": False,
                "mailer_autoconfirm": True,
                "phone_autoconfirm": False,
                "sms_provider": "",
                "saml_enabled": False,
            }
        )

    # Grants -----------------------------------------------------------------------------------------------
    async def _password_grant(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        email, password = body.get("email"), body.get("password")
        if not isinstance(email, str) or not email or not isinstance(password, str) or not password:
            raise errors.invalid_credentials()
        user = await self.store.user_by_email(email.strip())
        # Hash even for an unknown email, so timing does not tell which emails exist.
        stored = user["encrypted_password"] if user and user["encrypted_password"] else _DUMMY_HASH
        if not await _verify(password, stored) or user is None:
            raise errors.invalid_credentials()
        user, session_id, refresh_token = await self.store.sign_in(
            user["id"], _client_ip(request), _user_agent(request)
        )
        return await self._session_response(user, session_id, refresh_token, "password")

    async def _refresh_grant(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        token = body.get("refresh_token")
        if not isinstance(token, str) or not token:
            raise AuthError(400, "refresh_token_not_found", "Invalid Refresh Token: Refresh Token Not Found")
        try:
            refreshed = await self.store.refresh(token, self.settings.refresh_token_reuse_interval_secs)
        except RefreshTokenNotFound:
            raise AuthError(
                400, "refresh_token_not_found", "Invalid Refresh Token: Refresh Token Not Found"
            ) from None
        except RefreshTokenAlreadyUsed:
            raise AuthError(
                400, "refresh_token_already_used", "Invalid Refresh Token: Already Used"
            ) from None
        return await self._session_response(
            refreshed.user, refreshed.session_id, refreshed.refresh_token, "password"
        )

    # Tokens -----------------------------------------------------------------------------------------------
    def access_token(self, user: Row, session_id: uuid.UUID, method: str) -> tuple[str, int]:
        now = int(time.time())
        expires_at = now + self.settings.jwt_expiry_secs
        claims = {
            "iss": self.settings.issuer,
            "sub": str(user["id"]),
            "aud": user["aud"] or "authenticated",
            "exp": expires_at,
            "iat": now,
            "email": user["email"] or "",
            "phone": user["phone"] or "",
            "app_metadata": user["raw_app_meta_data"] or {},
            "user_metadata": user["raw_user_meta_data"] or {},
            "role": user["role"] or "authenticated",
            "aal": "aal1",
            "amr": [{"method": method, "timestamp": now}],
            "session_id": str(session_id),
            "is_anonymous": bool(user["is_anonymous"]),
        }
        return self.keys[0].sign(claims), expires_at

    def _verify_jwt(self, request: web.Request) -> dict[str, Any]:
        """Verify the bearer token with the project's keys (and the legacy secret while it is trusted)."""
        authorization = request.headers.get("Authorization", "")
        if not authorization.lower().startswith("bearer ") or not authorization[7:].strip():
            raise AuthError(401, "no_authorization", "This endpoint requires a valid Bearer token")
        token = authorization[7:].strip()
        try:
            header = jwt.get_unverified_header(token)
            algorithm = header.get("alg")
            if algorithm == "ES256" and header.get("kid") in self._keys_by_kid:
                key: Any = self._keys_by_kid[header["kid"]].public_jwk
                claims = jwt.decode(
                    token,
                    jwt.PyJWK(key).key,
                    algorithms=["ES256"],
                    options={"verify_aud": False, "require": ["exp"]},
                )
            elif algorithm == "HS256" and self.settings.legacy_jwt_secret:
                claims = jwt.decode(
                    token,
                    self.settings.legacy_jwt_secret,
                    algorithms=["HS256"],
                    options={"verify_aud": False, "require": ["exp"]},
                )
            else:
                raise errors.bad_jwt("unknown signing key or algorithm")
        except jwt.ExpiredSignatureError:
            raise errors.bad_jwt("token has invalid claims: token is expired") from None
        except jwt.PyJWTError as error:
            raise errors.bad_jwt(str(error)) from None
        return dict(claims)

    async def _authenticated_user(self, request: web.Request) -> tuple[Row, dict[str, Any]]:
        claims = self._verify_jwt(request)
        user_id = _uuid_or_none(claims.get("sub"))
        if user_id is None:
            raise errors.bad_jwt("invalid claim: missing sub claim")
        user = await self.store.user_by_id(user_id)
        if user is None:
            raise AuthError(403, "user_not_found", "User from sub claim in JWT does not exist")
        session_id = _uuid_or_none(claims.get("session_id"))
        if session_id is not None and not await self.store.session_exists(session_id):
            raise AuthError(403, "session_not_found", "Session from session_id claim in JWT does not exist")
        return user, claims

    # Answers ----------------------------------------------------------------------------------------------
    async def _session_response(
        self, user: Row, session_id: uuid.UUID, refresh_token: str, method: str
    ) -> web.Response:
        access_token, expires_at = self.access_token(user, session_id, method)
        body = {
            "access_token": access_token,
            "token_type": "bearer",
            "expires_in": self.settings.jwt_expiry_secs,
            "expires_at": expires_at,
            "refresh_token": refresh_token,
            "user": await self._user_json(user),
        }
        return web.json_response(body, dumps=_dumps)

    async def _user_response(self, user: Row) -> web.Response:
        return web.json_response(await self._user_json(user), dumps=_dumps)

    async def _user_json(self, user: Row) -> dict[str, Any]:
        identities = [
            {
                "identity_id": str(identity["id"]),
                "id": identity["provider_id"],
                "user_id": str(identity["user_id"]),
                "identity_data": identity["identity_data"],
                "provider": identity["provider"],
                "last_sign_in_at": identity["last_sign_in_at"],
                "created_at": identity["created_at"],
                "updated_at": identity["updated_at"],
                "email": identity["email"],
            }
            for identity in await self.store.identities(user["id"])
        ]
        return {
            "id": str(user["id"]),
            "aud": user["aud"] or "authenticated",
            "role": user["role"] or "authenticated",
            "email": user["email"] or "",
            "email_confirmed_at": user["email_confirmed_at"],
            "phone": user["phone"] or "",
            "confirmed_at": user["confirmed_at"],
            "last_sign_in_at": user["last_sign_in_at"],
            "app_metadata": user["raw_app_meta_data"] or {},
            "user_metadata": user["raw_user_meta_data"] or {},
            "identities": identities,
            "created_at": user["created_at"],
            "updated_at": user["updated_at"],
            "is_anonymous": bool(user["is_anonymous"]),
        }

    # Checks -----------------------------------------------------------------------------------------------
    def _limit(self, limiter: RateLimiter, request: web.Request) -> None:
        if not limiter.allow(_client_ip(request) or "unknown"):
            raise AuthError(429, "over_request_rate_limit", "Request rate limit reached")

    def _check_strength(self, password: str) -> None:
        minimum = self.settings.minimum_password_length
        if len(password) < minimum:
            raise AuthError(
                422, "weak_password", f"Password should be at least {minimum} characters.", reasons=["length"]
            )
        sets = _CHARACTER_SETS.get(self.settings.password_requirements)
        if sets and not all(any(c in charset for c in password) for charset in sets):
            raise AuthError(
                422,
                "weak_password",
                f"Password should contain at least one character of each: {', '.join(sets)}.",
                reasons=["characters"],
            )


_DUMMY_HASH = bcrypt.hashpw(b"not-a-password", bcrypt.gensalt(BCRYPT_COST)).decode()


async def _hash(password: str) -> str:
    salt = bcrypt.gensalt(BCRYPT_COST)
    hashed = await asyncio.to_thread(bcrypt.hashpw, password.encode()[:72], salt)
    return hashed.decode()


async def _verify(password: str, stored: str) -> bool:
    try:
        return await asyncio.to_thread(bcrypt.checkpw, password.encode()[:72], stored.encode())
    except ValueError:
        return False


def _email(value: object, missing_message: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise errors.validation_failed(missing_message)
    email = value.strip().lower()
    if len(email) > 255 or not _EMAIL.match(email):
        raise AuthError(400, "email_address_invalid", "Unable to validate email address: invalid format")
    return email


def _uuid_or_none(value: object) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if value is not None else None
    except ValueError:
        return None


def _client_ip(request: web.Request) -> str | None:
    # The gateway sets X-Forwarded-For to the caller's address (GoTrue's RATE_LIMIT_HEADER when hosted).
    forwarded = request.headers.get("X-Forwarded-For", "").split(",")[0].strip()
    return forwarded or request.remote


def _user_agent(request: web.Request) -> str:
    return request.headers.get("User-Agent", "")


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise errors.validation_failed("Request body too large")
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise errors.validation_failed("Request body too large")
    try:
        body = json.loads(raw or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise AuthError(400, "bad_json", "Could not parse request body as JSON") from None
    if not isinstance(body, dict):
        raise AuthError(400, "bad_json", "Could not parse request body as JSON")
    return body


def _dumps(value: Any) -> str:
    return json.dumps(value, default=_json_default)


def _json_default(item: object) -> str:
    isoformat = getattr(item, "isoformat", None)
    return str(isoformat()) if callable(isoformat) else str(item)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    api_version = request.headers.get(API_VERSION_HEADER)
    try:
        response = await handler(request)
    except AuthError as error:
        response = web.json_response(error.body(api_version), status=error.status)
    except web.HTTPException as error:
        code = "not_found" if error.status == 404 else "validation_failed"
        response = web.json_response(
            AuthError(error.status, code, error.reason).body(api_version), status=error.status
        )
    except Exception:
        logger.exception("unexpected failure on %s %s", request.method, request.path)
        response = web.json_response(
            AuthError(
                500, "unexpected_failure", "Unexpected failure, please check server logs for more information"
            ).body(api_version),
            status=500,
        )
    if api_version:
        response.headers[API_VERSION_HEADER] = errors.API_VERSION_2024_01_01
    return response


def create_app(api: AuthApi) -> web.Application:
    app = web.Application(middlewares=[_errors], client_max_size=MAX_BODY_BYTES)
    app.router.add_post("/signup", api.signup)
    app.router.add_post("/token", api.token)
    app.router.add_get("/user", api.get_user)
    app.router.add_put("/user", api.put_user)
    app.router.add_post("/logout", api.logout)
    app.router.add_get("/.well-known/jwks.json", api.jwks)
    app.router.add_get("/health", api.health)
    app.router.add_get("/settings", api.settings_route)

    async def close_store(_: web.Application) -> None:
        with contextlib.suppress(Exception):
            await api.store.close()

    app.on_cleanup.append(close_store)
    return app
