"""The AI Edge Functions through the local gateway, as the app and the worker call them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from devstack.keys import SERVICE_ROLE_KEY, mint_jwt
from devstack.stack import DevStack
from tests.devstack.test_gemini import load_klines, run_over_history
from tests.factories import AppUser, create_trader
from worker.domain.decision import parse_decision
from worker.sandbox import compile_signal

HOUR_MS = 3_600_000


@pytest.fixture
def functions(stack: DevStack) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=f"{stack.config.api_url}/functions/v1", timeout=60, headers={"apikey": stack.config.anon_key}
    ) as client:
        yield client


def assert_schema_valid(analysis: dict[str, Any]) -> None:
    """The worker's own validator (the same schema file) accepts the analysis."""
    parse_decision(analysis)


def market_data() -> dict[str, Any]:
    """The last 200 real BTCUSDT hours in Binance's kline layout, with indicators as the worker sends them."""
    klines = load_klines("BTCUSDT-1h.csv")
    rows = [
        [int(t), f"{o}", f"{h}", f"{lo}", f"{c}", f"{v}", int(t) + HOUR_MS - 1, "0", 0, "0", "0", "0"]
        for t, o, h, lo, c, v in zip(
            klines.open_time[-200:], klines.open[-200:], klines.high[-200:], klines.low[-200:],
            klines.close[-200:], klines.volume[-200:], strict=True,
        )
    ]  # fmt: skip
    last_close = float(klines.close[-1])
    return {
        "symbol": "BTCUSDT",
        "timestamp": int(klines.open_time[-1]) // 1000 + 3600,
        "ticker": {"lastPrice": str(last_close), "volume24h": "25000.5", "priceChange24h": "-1.2"},
        "klines": {"1h": rows},
        "indicators": {"rsi_1h": 24.0, "macd_1h": {"macd": 12.0, "signal": 8.0, "histogram": 4.0}},
    }


def test_generate_strategy_saves_a_trader_whose_code_runs_on_real_candles_and_provisions_a_machine(
    functions: httpx.Client, db: psycopg.Connection[Any], alice: AppUser
) -> None:
    try:
        response = functions.post(
            "/generate-strategy",
            json={"description": "Buy BTC on the 1h chart when the RSI drops below 30"},
            headers={"Authorization": f"Bearer {alice.jwt}"},
        )

        assert response.status_code == 200, response.text
        body = response.json()
        assert body["success"] is True
        row = db.execute(
            "select user_id, signal_code, timeframes from public.traders where id = %s",
            (body["trader"]["id"],),
        ).fetchone()
        assert row is not None
        assert row[0] == alice.id
        program = compile_signal(row[1], trader_id=body["trader"]["id"])  # the worker's sandbox accepts it
        assert program.trader_id == body["trader"]["id"]
        results = run_over_history(row[1], load_klines("BTCUSDT-1h.csv"), row[2][0])
        assert any(results) and not all(results)
        # The lifecycle function provisioned alice's machine.
        assert body["machine"]["status"] == "provisioned"
        machine = db.execute(
            "select machine_id from public.fly_machines where user_id = %s and status <> 'destroyed'",
            (alice.id,),
        ).fetchone()
        assert machine == (body["machineId"],)
    finally:
        # Stop the worker process the machine runs before the user disappears.
        functions.post(
            "/destroy-machine",
            json={"userId": str(alice.id)},
            headers={"Authorization": f"Bearer {SERVICE_ROLE_KEY}"},
        )


def test_analyze_signal_with_a_machine_jwt_returns_a_valid_decision_and_records_it(
    functions: httpx.Client, db: psycopg.Connection[Any], alice: AppUser
) -> None:
    trader_id = create_trader(db, alice, "analysed")
    signal_id = uuid.uuid4()
    db.execute(
        "insert into public.signals (id, trader_id, user_id, symbol, trigger_price)"
        " values (%s, %s, %s, 'BTCUSDT', 1)",
        (signal_id, trader_id, alice.id),
    )
    db.execute(
        "insert into public.fly_machines (user_id, machine_id, status) values (%s, 'm-alice', 'running')",
        (alice.id,),
    )

    response = functions.post(
        "/analyze-signal",
        json={"traderId": str(trader_id), "signalId": str(signal_id), "marketData": market_data()},
        headers={"Authorization": f"Bearer {alice.machine_jwt('m-alice')}"},
    )

    assert response.status_code == 200, response.text
    analysis = response.json()["analysis"]
    assert_schema_valid(analysis)
    assert analysis["decision"] == "open_long"
    stored = db.execute(
        "select decision::text, confidence, metadata, prompt_tokens > 0 from public.analysis_history"
        " where signal_id = %s",
        (signal_id,),
    ).fetchall()
    assert stored == [(analysis["decision"], analysis["confidence"], analysis["metadata"], True)]


def test_analyze_signal_refuses_a_user_jwt(
    functions: httpx.Client, db: psycopg.Connection[Any], alice: AppUser
) -> None:
    trader_id = create_trader(db, alice, "not for users")

    response = functions.post(
        "/analyze-signal",
        json={"traderId": str(trader_id), "signalId": str(uuid.uuid4()), "marketData": market_data()},
        headers={"Authorization": f"Bearer {alice.jwt}"},
    )

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


def test_a_forged_token_is_refused_at_the_gateway(functions: httpx.Client) -> None:
    forged = mint_jwt(
        "authenticated", uuid.uuid4(), algorithm="HS256", secret="another-secret-that-is-at-least-32-chars"
    )

    response = functions.post(
        "/generate-strategy",
        json={"description": "anything at all"},
        headers={"Authorization": f"Bearer {forged}"},
    )

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_jwt"
