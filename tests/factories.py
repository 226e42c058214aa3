"""Builders for test data, written straight to Postgres as the platform (sign-up) would."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg

from devstack.config import MACHINE_SECRET_DEV_KEY
from devstack.keys import mint_jwt
from worker.market.messages import Ticker

SIGNAL_CODE = "def check_signal(symbol, ticker, klines):\n    return False\n"


@dataclass(frozen=True)
class AppUser:
    id: uuid.UUID
    email: str

    @property
    def jwt(self) -> str:
        return mint_jwt("authenticated", self.id, extra_claims={"email": self.email})

    def machine_jwt(self, machine_id: str, generation: int = 1) -> str:
        """A trader_machine token as provisioning mints it; honoured only while `machine_id`'s row is live
        at `generation` (create_machine makes one)."""
        return mint_jwt(
            "trader_machine",
            self.id,
            extra_claims={"machine_id": machine_id, "machine_gen": generation},
        )


def create_user(db: psycopg.Connection[Any], tier: str = "pro") -> AppUser:
    """Sign a user up (auth.users insert; the trigger creates public.users)."""
    user = AppUser(uuid.uuid4(), f"user-{uuid.uuid4().hex[:12]}@example.com")
    db.execute(
        "insert into auth.users (id, aud, role, email) values (%s, 'authenticated', 'authenticated', %s)",
        (user.id, user.email),
    )
    db.execute("update public.users set tier = %s where id = %s", (tier, user.id))
    return user


def delete_user(db: psycopg.Connection[Any], user: AppUser) -> None:
    db.execute("delete from auth.users where id = %s", (user.id,))


def create_machine(
    db: psycopg.Connection[Any],
    user: AppUser,
    machine_id: str | None = None,
    *,
    status: str = "running",
) -> str:
    """A live machine row of `user` at token generation 1, as provision-machine leaves it; its id.

    The database honours `user.machine_jwt(id)` only while this row is live (not destroyed, same generation).
    """
    machine_id = machine_id or f"m-{uuid.uuid4().hex[:12]}"
    db.execute(
        "insert into public.fly_machines (user_id, machine_id, status) values (%s, %s, %s::machine_status)",
        (user.id, machine_id, status),
    )
    return machine_id


def machine_credential(machine_id: str, generation: int = 1) -> str:
    """The MACHINE_CREDENTIAL of a machine version, derived as _shared/machine_tokens.ts does."""
    message = f"machine-credential:{machine_id}:{generation}".encode()
    digest = hmac.new(MACHINE_SECRET_DEV_KEY.encode(), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def live_machine(db: psycopg.Connection[Any], user: AppUser) -> str:
    """The id of `user`'s live machine, created (create_machine) when there is none."""
    row = db.execute(
        "select machine_id from public.fly_machines where user_id = %s and status <> 'destroyed'", (user.id,)
    ).fetchone()
    return str(row[0]) if row else create_machine(db, user)


def create_trader(db: psycopg.Connection[Any], user: AppUser, name: str = "test trader") -> uuid.UUID:
    row = db.execute(
        "insert into public.traders (user_id, name, signal_code, ai_instructions, timeframes, check_interval,"
        " reanalysis_interval, symbols) values (%s, %s, %s, 'Be careful.', array['1m'], '1m_close', '5m',"
        " array['BTCUSDT']) returning id",
        (user.id, name, SIGNAL_CODE),
    ).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


@dataclass(frozen=True)
class MachineUser:
    """A user with a live machine row, and that machine's token."""

    user: AppUser
    machine_id: str

    @property
    def token(self) -> str:
        return self.user.machine_jwt(self.machine_id)


def ticker(symbol: str, price: Decimal | str, at_ms: int) -> Ticker:
    """A 24 h ticker whose every price is `price` (the market as a test sets it)."""
    value, zero = Decimal(price), Decimal(0)
    return Ticker(symbol, value, value, value, value, zero, zero, value, value, zero, zero, at_ms)


def trader_state(db: psycopg.Connection[Any], trader_id: uuid.UUID | str) -> tuple[str, str | None]:
    """A trader's status and error message as the database holds them."""
    row = db.execute("select status::text, error_message from public.traders where id = %s", (trader_id,))
    found = row.fetchone()
    assert found is not None
    return found[0], found[1]


def trade_for_real(db: psycopg.Connection[Any], user: AppUser, trader_id: uuid.UUID) -> None:
    """Put a trader in real mode as its user would: stored keys (placeholder ciphertext: the worker under test
    gets its keys from its settings), an active subscription, then traders.trading_mode = 'real'."""
    db.execute(
        "insert into private.binance_credentials"
        " (user_id, api_key_encrypted, secret_key_encrypted, api_key_hint)"
        " values (%s, '\\x00', '\\x00', 'test…keys') on conflict (user_id) do nothing",
        (user.id,),
    )
    db.execute("update public.users set subscription_status = 'active' where id = %s", (user.id,))
    db.execute("update public.traders set trading_mode = 'real' where id = %s", (trader_id,))
