"""Users, identities, sessions and refresh tokens in the real `auth` schema, the way GoTrue keeps them.

One connection, one statement batch at a time (sign-ups and sign-ins are rare next to data traffic); each
operation is one transaction, so a sign-up writes the user, its identity and its first session together and
the `on_auth_user_created` trigger makes `public.users` in the same transaction.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

SCHEMA_SQL = Path(__file__).with_name("schema.sql")
INSTANCE_ID = uuid.UUID(int=0)
_USER_COLUMNS = (
    "id, aud, role, email, encrypted_password, email_confirmed_at, phone, phone_confirmed_at, confirmed_at, "
    "last_sign_in_at, raw_app_meta_data, raw_user_meta_data, created_at, updated_at, is_anonymous"
)

Row = dict[str, Any]


@dataclass(frozen=True)
class Refreshed:
    """What a refresh-token grant produced: the user, its session and the refresh token to hand out."""

    user: Row
    session_id: uuid.UUID
    refresh_token: str


class RefreshTokenNotFound(Exception):
    pass


class RefreshTokenAlreadyUsed(Exception):
    pass


def new_refresh_token() -> str:
    return secrets.token_urlsafe(16)


class AuthStore:
    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._conn: psycopg.AsyncConnection[Row] | None = None
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[psycopg.AsyncConnection[Row]]:
        async with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = await psycopg.AsyncConnection.connect(self._conninfo, row_factory=dict_row)
            try:
                async with self._conn.transaction():
                    yield self._conn
            except psycopg.OperationalError:
                # A dropped connection (e.g. `dev reset`) is replaced on the next call.
                await self._conn.close()
                self._conn = None
                raise

    async def apply_schema(self) -> None:
        async with self._transaction() as conn:
            await conn.execute(SCHEMA_SQL.read_bytes())

    # Users ------------------------------------------------------------------------------------------------
    async def user_by_email(self, email: str) -> Row | None:
        async with self._transaction() as conn:
            cursor = await conn.execute(
                f"select {_USER_COLUMNS} from auth.users where lower(email) = lower(%s) and not is_sso_user",
                (email,),
            )
            return await cursor.fetchone()

    async def user_by_id(self, user_id: uuid.UUID) -> Row | None:
        async with self._transaction() as conn:
            return await _user(conn, user_id)

    async def create_user(
        self, email: str, password_hash: str, user_metadata: dict[str, Any], ip: str | None, user_agent: str
    ) -> tuple[Row, uuid.UUID, str] | None:
        """Sign a confirmed email user up with a first session; None when the email is taken."""
        user_id = uuid.uuid4()
        identity_data = {
            "sub": str(user_id),
            "email": email,
            "email_verified": False,
            "phone_verified": False,
        }
        async with self._transaction() as conn:
            cursor = await conn.execute(
                "insert into auth.users (instance_id, id, aud, role, email, encrypted_password,"
                " email_confirmed_at, last_sign_in_at, raw_app_meta_data, raw_user_meta_data, created_at,"
                " updated_at) values (%s, %s, 'authenticated', 'authenticated', %s, %s, now(), now(), %s, %s,"
                " now(), now())"
                " on conflict do nothing returning id",
                (
                    INSTANCE_ID,
                    user_id,
                    email,
                    password_hash,
                    Jsonb({"provider": "email", "providers": ["email"]}),
                    Jsonb({**identity_data, **user_metadata}),
                ),
            )
            if await cursor.fetchone() is None:
                return None
            await conn.execute(
                "insert into auth.identities (provider_id, user_id, identity_data, provider, last_sign_in_at,"
                " created_at, updated_at) values (%s, %s, %s, 'email', now(), now(), now())",
                (str(user_id), user_id, Jsonb(identity_data)),
            )
            session_id, refresh_token = await _new_session(conn, user_id, ip, user_agent)
            user = await _user(conn, user_id)
        assert user is not None
        return user, session_id, refresh_token

    async def sign_in(
        self, user_id: uuid.UUID, ip: str | None, user_agent: str
    ) -> tuple[Row, uuid.UUID, str]:
        async with self._transaction() as conn:
            await conn.execute("update auth.users set last_sign_in_at = now() where id = %s", (user_id,))
            await conn.execute(
                "update auth.identities set last_sign_in_at = now()"
                " where user_id = %s and provider = 'email'",
                (user_id,),
            )
            session_id, refresh_token = await _new_session(conn, user_id, ip, user_agent)
            user = await _user(conn, user_id)
        assert user is not None
        return user, session_id, refresh_token

    async def update_user(
        self,
        user_id: uuid.UUID,
        *,
        email: str | None,
        password_hash: str | None,
        user_metadata: dict[str, Any] | None,
        keep_session: uuid.UUID | None,
    ) -> Row:
        """Apply the changes; a new password signs every other session out (as GoTrue does)."""
        async with self._transaction() as conn:
            if email is not None:
                await conn.execute(
                    "update auth.users set email = %s, email_confirmed_at = now(), updated_at = now()"
                    " where id = %s",
                    (email, user_id),
                )
                await conn.execute(
                    "update auth.identities"
                    " set identity_data = identity_data || jsonb_build_object('email', %s::text),"
                    " updated_at = now() where user_id = %s and provider = 'email'",
                    (email, user_id),
                )
            if password_hash is not None:
                await conn.execute(
                    "update auth.users set encrypted_password = %s, updated_at = now() where id = %s",
                    (password_hash, user_id),
                )
                await conn.execute(
                    "delete from auth.sessions where user_id = %s and id is distinct from %s",
                    (user_id, keep_session),
                )
            if user_metadata is not None:
                await conn.execute(
                    "update auth.users set raw_user_meta_data = %s, updated_at = now() where id = %s",
                    (Jsonb(user_metadata), user_id),
                )
            user = await _user(conn, user_id)
        assert user is not None
        return user

    async def identities(self, user_id: uuid.UUID) -> list[Row]:
        async with self._transaction() as conn:
            cursor = await conn.execute(
                "select id, provider_id, user_id, identity_data, provider, last_sign_in_at, created_at,"
                " updated_at, email from auth.identities where user_id = %s order by created_at",
                (user_id,),
            )
            return await cursor.fetchall()

    # Sessions ---------------------------------------------------------------------------------------------
    async def session_exists(self, session_id: uuid.UUID) -> bool:
        async with self._transaction() as conn:
            cursor = await conn.execute("select 1 from auth.sessions where id = %s", (session_id,))
            return await cursor.fetchone() is not None

    async def refresh(self, token: str, reuse_interval_secs: int) -> Refreshed:
        """Rotate `token`: revoke it and issue its child. A revoked token used again outside the reuse
        interval revokes its whole session (token theft detection, supabase/auth token_refresh.go)."""
        async with self._transaction() as conn:
            cursor = await conn.execute(
                "select r.token, r.revoked, r.updated_at, r.session_id, s.user_id from auth.refresh_tokens r"
                " join auth.sessions s on s.id = r.session_id where r.token = %s for update of r",
                (token,),
            )
            row = await cursor.fetchone()
            if row is None:
                raise RefreshTokenNotFound
            reused = False
            refresh_token = ""
            session_id: uuid.UUID = row["session_id"]
            user_id: uuid.UUID = row["user_id"]
            if row["revoked"]:
                recent = row["updated_at"] + timedelta(seconds=reuse_interval_secs) > datetime.now(UTC)
                child = await conn.execute(
                    "select token from auth.refresh_tokens where parent = %s and not revoked", (token,)
                )
                active_child = await child.fetchone()
                if not (recent and active_child):
                    # Committed before the error is raised: the session stays revoked.
                    await conn.execute("delete from auth.sessions where id = %s", (session_id,))
                    reused = True
                else:
                    refresh_token = str(active_child["token"])
            else:
                await conn.execute(
                    "update auth.refresh_tokens set revoked = true, updated_at = now() where token = %s",
                    (token,),
                )
                refresh_token = new_refresh_token()
                await conn.execute(
                    "insert into auth.refresh_tokens (instance_id, token, user_id, revoked, created_at,"
                    " updated_at, parent, session_id) values (%s, %s, %s, false, now(), now(), %s, %s)",
                    (INSTANCE_ID, refresh_token, str(user_id), token, session_id),
                )
            if reused:
                user = None
            else:
                await conn.execute(
                    "update auth.sessions set refreshed_at = now() at time zone 'utc', updated_at = now()"
                    " where id = %s",
                    (session_id,),
                )
                user = await _user(conn, user_id)
        if reused:
            raise RefreshTokenAlreadyUsed
        if user is None:
            raise RefreshTokenNotFound
        return Refreshed(user, session_id, refresh_token)

    async def sign_out(self, user_id: uuid.UUID, session_id: uuid.UUID | None, scope: str) -> None:
        async with self._transaction() as conn:
            if scope == "local":
                await conn.execute("delete from auth.sessions where id = %s", (session_id,))
            elif scope == "others":
                await conn.execute(
                    "delete from auth.sessions where user_id = %s and id is distinct from %s",
                    (user_id, session_id),
                )
            else:
                await conn.execute("delete from auth.sessions where user_id = %s", (user_id,))


async def _user(conn: psycopg.AsyncConnection[Row], user_id: uuid.UUID) -> Row | None:
    cursor = await conn.execute(f"select {_USER_COLUMNS} from auth.users where id = %s", (user_id,))
    return await cursor.fetchone()


async def _new_session(
    conn: psycopg.AsyncConnection[Row], user_id: uuid.UUID, ip: str | None, user_agent: str
) -> tuple[uuid.UUID, str]:
    session_id = uuid.uuid4()
    refresh_token = new_refresh_token()
    await conn.execute(
        "insert into auth.sessions (id, user_id, created_at, updated_at, aal, ip, user_agent)"
        " values (%s, %s, now(), now(), 'aal1', %s, %s)",
        (session_id, user_id, ip, user_agent[:512]),
    )
    await conn.execute(
        "insert into auth.refresh_tokens (instance_id, token, user_id, revoked, created_at, updated_at,"
        " session_id) values (%s, %s, %s, false, now(), now(), %s)",
        (INSTANCE_ID, refresh_token, str(user_id), session_id),
    )
    return session_id, refresh_token
