"""An outage of the exchange, end to end: a real worker on the Fly stand-in follows BTCUSDT from the stack's
exchange simulator; the simulator is stopped, the worker reports Binance unreachable through the gateway,
the database opens exactly one operator alert once the outage outlasts its threshold (set to seconds here
through the operator's RPC; 5 minutes by default), the operator's Telegram gets it once; the simulator comes
back and the worker's first success records exactly one recovery."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import psycopg
import pytest

from devstack import keys
from devstack.config import OPERATOR_TELEGRAM_DEV_BOT_TOKEN, TELEGRAM_PORT
from devstack.fly.client import FlyStandInClient
from devstack.stack import DevStack
from tests.factories import create_trader
from tests.supabase.test_lifecycle_functions import Fleet, wait_healthy

THRESHOLD_SECS = 4
DEFAULT_THRESHOLD_SECS = 300


@pytest.fixture
def fleet(stack: DevStack, db: psycopg.Connection[Any]) -> Iterator[Fleet]:
    with FlyStandInClient() as fly:
        users = Fleet(stack, db, fly)
        try:
            yield users
        finally:
            users.cleanup()


def _set_threshold(stack: DevStack, secs: int) -> None:
    response = httpx.post(
        f"{stack.config.api_url}/rest/v1/rpc/set_service_alert_threshold",
        json={"service": "binance", "alert_after_secs": secs},
        headers={"apikey": keys.ANON_KEY, "Authorization": f"Bearer {keys.SERVICE_ROLE_KEY}"},
    )
    assert response.status_code == 204, response.text


def _wait(
    db: psycopg.Connection[Any], query: str, args: tuple[Any, ...], what: str, timeout_secs: float
) -> Any:
    deadline = time.monotonic() + timeout_secs
    while time.monotonic() < deadline:
        row = db.execute(query, args).fetchone()
        if row is not None and row[0] is not None:
            return row[0]
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_secs:.0f}s waiting for {what}")


def _operator_messages(alert_message: str) -> list[str]:
    response = httpx.get(
        f"http://127.0.0.1:{TELEGRAM_PORT}/_control/messages",
        params={"token": OPERATOR_TELEGRAM_DEV_BOT_TOKEN},
    )
    response.raise_for_status()
    return [m["text"] for m in response.json()["messages"] if alert_message in m["text"]]


def test_an_exchange_outage_raises_one_alert_and_one_recovery(
    stack: DevStack, db: psycopg.Connection[Any], fleet: Fleet
) -> None:
    ((user, machine_id),) = fleet.provisioned(1)
    create_trader(db, user, "follows BTCUSDT")
    # The worker repeats a continuing failure every second (a minute by default), so the alert opens within
    # a second of the threshold rather than at the minutely cron job.
    config = fleet.fly.get(machine_id)["config"]
    config["env"] = {**config["env"], "BINANCE_HEALTH_REPEAT_SECS": "1"}
    started = db.execute("select now()").fetchone()[0]  # type: ignore[index]
    assert fleet.fly.update(machine_id, {"config": config}).status_code == 200
    wait_healthy(fleet.fly, machine_id)
    _set_threshold(stack, THRESHOLD_SECS)
    try:
        # The restarted worker's first answer from the exchange clears whatever an earlier run left failing.
        _wait(db, "select last_ok_at > %s or null from private.service_health where service = 'binance'",
              (started,), "the worker to report Binance reachable", 60)  # fmt: skip
        assert stack.registry.stop("exchange")
        stopped = time.monotonic()
        try:
            alert_id = _wait(
                db,
                "select id from public.operator_alerts where kind = 'binance_unreachable'"
                " and recovered_at is null and opened_at > %s",
                (started,),
                "the alert",
                60,
            )
            alerted_after_secs = time.monotonic() - stopped
            time.sleep(3)  # the worker keeps reporting the failure: no second alert
        finally:
            stack.up()
        recovered_at: datetime = _wait(
            db,
            "select recovered_at from public.operator_alerts where id = %s",
            (alert_id,),
            "the recovery",
            60,
        )
        recovered_after_secs = time.monotonic() - stopped
        message = db.execute(
            "select message from public.operator_alerts where id = %s", (alert_id,)
        ).fetchone()
        assert message is not None
        _wait(db, "select bool_and(status = 'delivered') or null from public.notification_deliveries d"
                  " join public.operator_alert_events e on e.id = d.alert_event_id"
                  " where e.alert_id = %s and d.channel = 'telegram' having count(*) = 2",
              (alert_id,), "the operator's Telegram deliveries", 30)  # fmt: skip
    finally:
        _set_threshold(stack, DEFAULT_THRESHOLD_SECS)

    alerts = db.execute(
        "select id from public.operator_alerts where kind = 'binance_unreachable' and opened_at > %s",
        (started,),
    ).fetchall()
    assert alerts == [(alert_id,)], "one alert for the outage"
    events = db.execute(
        "select event::text from public.operator_alert_events where alert_id = %s order by created_at",
        (alert_id,),
    ).fetchall()
    assert events == [("fired",), ("recovered",)]
    assert THRESHOLD_SECS <= alerted_after_secs < THRESHOLD_SECS + 15, alerted_after_secs
    assert recovered_at is not None and recovered_after_secs > alerted_after_secs
    # What failed: the streams or a REST call (the market clock asks the exchange's time every second).
    assert re.match(r"binance failing since .* \(last error: (streams|REST) ", message[0]), message[0]
    texts = _operator_messages(message[0])
    assert sorted(text.split("\n")[0] for text in texts) == [
        "binance_unreachable fired: binance",
        "binance_unreachable recovered: binance",
    ], "the operator hears of the outage once and of its end once"
