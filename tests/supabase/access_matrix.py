"""Who may do what through the API: the allowed list for every table, view and function PostgREST serves.

tests/supabase/test_access_matrix.py reads the catalog and fails on a served table, view, column grant or
function without an entry here, on a grant the entries do not imply, and on any attempt that ends other than
as listed. It aims every attempt at the rows of one user (the owner, "alice") with six credentials:

    anon               the anon key, no JWT
    user               alice's session
    other_user         another user's session (bob), aiming at alice's rows
    machine            the token of alice's live machine
    other_machine      the token of bob's live machine, aiming at alice's rows
    destroyed_machine  the token of alice's destroyed machine

A role listed for a verb must succeed on alice's row; every other role must be refused (by a grant, RLS or
PostgREST's pre-request hook). Rows every signed-in user shares (prices, budgets) have no owner, so
`other_user` reads them too. A function's callers must get a 2xx answer with the sample arguments; others
are refused, and one that takes alice's ids answers exactly as for ids nobody has. Realtime delivers a
change of alice's row only to the roles that may select it.

Every Edge Function (supabase/functions/*/index.ts) is called as every role too, with a valid body (functions
check the body before the caller): its callers get past its checks of who calls for whom (the probe then
names nothing they can act on, or only reads), every other role gets 401 or 403 with the
{error: {code, message}} body, nobody gets a 5xx.

To add a table: an entry with `sample` (SQL run as postgres that creates, or selects, the owner's row:
`%(owner)s` is the owner's id, `%(<relation>)s` the primary key of an earlier relation's sample row,
`%(machine_id)s` the owner's live Fly machine id) and its access; to add a function: its identity signature
as Postgres prints it, its callers and sample arguments (`{name}` is replaced by those values, and by what
`setup` returns, run as postgres before each call); to add an Edge Function: its callers and a probe body
that changes nothing for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Role(StrEnum):
    ANON = "anon"
    USER = "user"
    OTHER_USER = "other_user"
    MACHINE = "machine"
    OTHER_MACHINE = "other_machine"
    DESTROYED_MACHINE = "destroyed_machine"


# The database role each credential acts as.
DB_ROLES: dict[Role, str] = {
    Role.ANON: "anon",
    Role.USER: "authenticated",
    Role.OTHER_USER: "authenticated",
    Role.MACHINE: "trader_machine",
    Role.OTHER_MACHINE: "trader_machine",
    Role.DESTROYED_MACHINE: "trader_machine",
}

USER = frozenset({Role.USER})
USER_AND_MACHINE = frozenset({Role.USER, Role.MACHINE})
SIGNED_IN = frozenset({Role.USER, Role.OTHER_USER})
MACHINES = frozenset({Role.MACHINE, Role.OTHER_MACHINE})
NOBODY: frozenset[Role] = frozenset()


@dataclass(frozen=True)
class Access:
    """Who may use a verb, and the columns a column-level grant gives them (None: the whole table)."""

    roles: frozenset[Role] = NOBODY
    columns: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Relation:
    sample: str
    owner: str | None = "user_id"  # the column naming the owning user; None: rows every signed-in user shares
    select: Access = Access()
    insert: Access = Access()
    update: Access = Access()
    delete: Access = Access()


@dataclass(frozen=True)
class Function:
    callers: frozenset[Role]
    args: dict[str, Any] = field(default_factory=dict)
    setup: str | None = None  # SQL returning one row whose columns become placeholders


@dataclass(frozen=True)
class EdgeFunction:
    callers: frozenset[Role]
    probe: dict[str, Any] = field(default_factory=dict)  # `{name}` placeholders as for Function.args
    # When any probe a caller passes with would do the work (destroy), the test showing that callers may.
    callers_shown_in: str | None = None


def own(select: frozenset[Role] = USER) -> Access:
    return Access(select)


TRADER_COLUMNS = (
    "name",
    "description",
    "signal_code",
    "ai_instructions",
    "timeframes",
    "check_interval",
    "reanalysis_interval",
    "symbols",
    "risk",
    "status",
    "error_message",
    "trading_mode",
)
TRADER_UPDATE_COLUMNS = (*TRADER_COLUMNS, "default_stop_loss_percent", "default_take_profit_percent")
BACKTEST_COLUMNS = (
    "trader_id",
    "trader_name",
    "symbols",
    "market_from",
    "market_to",
    "ai",
    "fee_rate",
    "slippage_rate",
    "starting_balance_usd",
    "final_equity_usd",
    "net_pnl_usd",
    "trades",
    "win_rate",
    "max_drawdown_percent",
    "sharpe",
    "exposure",
    "report",
)
PREFERENCE_COLUMNS = ("kinds", "quiet_hours_start", "quiet_hours_end", "time_zone", "webhook_url")

RELATIONS: dict[str, Relation] = {
    "users": Relation(
        "select * from public.users where id = %(owner)s",
        owner="id",
        select=own(USER_AND_MACHINE),
        update=Access(
            USER,
            (
                "paper_trading_enabled",
                "real_trading_enabled",
                "paper_starting_balance_usd",
                "preferred_region",
            ),
        ),
    ),
    "fly_machines": Relation(
        "select * from public.fly_machines where user_id = %(owner)s and status <> 'destroyed'",
        select=own(USER_AND_MACHINE),
    ),
    "traders": Relation(
        "insert into public.traders (user_id, name, signal_code, ai_instructions, timeframes, check_interval,"
        " reanalysis_interval) values (%(owner)s, 'matrix',"
        " 'def check_signal(symbol, ticker, klines):' || chr(10) || '    return False', 'Be careful.',"
        " '{5m}', '5m_close', '15m') returning *",
        select=own(USER_AND_MACHINE),
        insert=Access(USER, ("id", "user_id", *TRADER_COLUMNS)),
        update=Access(USER, TRADER_UPDATE_COLUMNS),
        delete=Access(USER),
    ),
    "signals": Relation(
        "insert into public.signals (trader_id, user_id, symbol, status, trigger_price, closed_at)"
        " values (%(traders)s, %(owner)s, 'BTCUSDT', 'closed', 100, now()) returning *",
        select=own(USER_AND_MACHINE),
    ),
    "positions": Relation(
        "insert into public.positions (signal_id, user_id, symbol, side, entry_price, size, status,"
        " exit_price, pnl, closed_at)"
        " values (%(signals)s, %(owner)s, 'BTCUSDT', 'long', 100, 0, 'closed', 110, 10, now())"
        " returning *",
        select=own(USER_AND_MACHINE),
    ),
    "trades": Relation(
        "insert into public.trades (position_id, signal_id, user_id, type, side, symbol, price, quantity,"
        " status, client_order_id)"
        " values (%(positions)s, %(signals)s, %(owner)s, 'paper', 'BUY', 'BTCUSDT', 100, 1,"
        " 'filled', 'tm' || left(md5(random()::text), 30)) returning *",
        select=own(USER_AND_MACHINE),
    ),
    "analysis_history": Relation(
        "insert into public.analysis_history (signal_id, trader_id, user_id, decision, reasoning)"
        " values (%(signals)s, %(traders)s, %(owner)s, 'watch', 'Waiting for volume.') returning *",
        select=own(USER_AND_MACHINE),
    ),
    "paper_accounts": Relation(
        "insert into public.paper_accounts (user_id, balance_usd, starting_balance_usd)"
        " values (%(owner)s, 10000, 10000) returning *",
        select=own(),
    ),
    "ai_token_budgets": Relation(
        "select * from public.ai_token_budgets where tier = 'free'", owner=None, select=own(SIGNED_IN)
    ),
    "ai_usage_daily": Relation(
        "insert into public.ai_usage_daily (user_id, usage_date, prompt_tokens)"
        " values (%(owner)s, current_date, 1) returning *",
        select=own(),
    ),
    "notifications": Relation(
        "insert into public.notifications (user_id, kind, title) values (%(owner)s, 'signal_new', 'matrix')"
        " returning *",
        select=own(USER_AND_MACHINE),
        update=Access(USER, ("read_at",)),
    ),
    "notification_preferences": Relation(
        "insert into public.notification_preferences (user_id, kinds) values (%(owner)s, '{}') returning *",
        select=own(),
        insert=Access(USER, ("user_id", *PREFERENCE_COLUMNS)),
        update=Access(USER, PREFERENCE_COLUMNS),
        delete=Access(USER),
    ),
    "notification_deliveries": Relation(
        "insert into public.notification_deliveries (notification_id, user_id, channel, status)"
        " values (%(notifications)s, %(owner)s, 'webhook', 'skipped') returning *",
        select=own(),
    ),
    "operator_alerts": Relation(
        "insert into public.operator_alerts (kind, subject, message, recovered_at)"
        " values ('gemini_failing', 'matrix-' || gen_random_uuid(), 'matrix', now()) returning *",
        owner=None,
    ),
    "operator_alert_events": Relation(
        "insert into public.operator_alert_events (alert_id, event) values (%(operator_alerts)s, 'recovered')"
        " returning *",
        owner=None,
    ),
    "machine_logs": Relation(
        "insert into public.machine_logs (id, user_id, machine_id, logged_at, level, logger, message)"
        " values (gen_random_uuid(), %(owner)s, %(machine_id)s, now(), 'INFO', 'matrix', 'x') returning *",
        select=own(),
    ),
    "fly_machine_prices": Relation(
        "select * from public.fly_machine_prices where cpu_kind = 'shared'", owner=None, select=own(SIGNED_IN)
    ),
    "ai_model_prices": Relation(
        "select * from public.ai_model_prices where model = 'gemini-2.5-flash'",
        owner=None,
        select=own(SIGNED_IN),
    ),
    "machine_usage": Relation(
        "insert into public.machine_usage (user_id, fly_machine_row_id, machine_id, cpu_kind, cpus,"
        " memory_mb, usd_per_second, started_at, ended_at)"
        " values (%(owner)s, %(fly_machines)s, %(machine_id)s, 'shared', 1, 256, 0,"
        " now() - interval '1 hour', now()) returning *",
        select=own(),
    ),
    "cost_budgets": Relation(
        "insert into public.cost_budgets (user_id, monthly_budget_usd) values (%(owner)s, 100) returning *",
        select=own(),
        insert=Access(USER, ("user_id", "monthly_budget_usd")),
        update=Access(USER, ("monthly_budget_usd",)),
        delete=Access(USER),
    ),
    "machine_resizes": Relation(
        "insert into public.machine_resizes (fly_machine_row_id, user_id, machine_id, from_cpus,"
        " from_memory_mb, to_cpus, to_memory_mb, reason, status, finished_at)"
        " values (%(fly_machines)s, %(owner)s,"
        " %(machine_id)s, 1, 256, 2, 512, 'matrix', 'applied', now()) returning *",
        select=own(),
    ),
    # A user saves the report of a backtest the CLI ran of one of their traders (the database sets id and
    # user_id); nobody edits one.
    "backtests": Relation(
        "insert into public.backtests (user_id, trader_id, trader_name, symbols, market_from, market_to, ai,"
        " fee_rate, slippage_rate, starting_balance_usd, final_equity_usd, net_pnl_usd, trades,"
        " max_drawdown_percent, exposure, report) values (%(owner)s, %(traders)s, 'matrix', '{BTCUSDT}',"
        " now() - interval '1 day', now(), 'off', 0.001, 0, 10000, 10000, 0, 0, 0, 0, '{}') returning *",
        select=own(),
        insert=Access(USER, BACKTEST_COLUMNS),
        delete=Access(USER),
    ),
    "user_costs_month_to_date": Relation(
        "select * from public.user_costs_month_to_date where user_id = %(owner)s", select=own()
    ),
}

# A new signal of the owner's trader and a pending paper order on it (symbols are per call, so signals of
# repeated calls are not live twice for one symbol).
_PENDING_ORDER = (
    "with symbol as (select 'X' || upper(left(md5(random()::text), 6)) || 'USDT' as name),"
    " signal as (insert into public.signals (trader_id, user_id, symbol, trigger_price)"
    " select %(traders)s, %(owner)s, name, 100 from symbol returning id, symbol),"
    " trade as (insert into public.trades (signal_id, user_id, type, side, order_type, symbol, price,"
    " quantity, status, client_order_id, intent)"
    " select id, %(owner)s, 'paper', 'BUY', 'MARKET', symbol, 100, 1, 'pending',"
    " 'tm' || left(md5(random()::text), 30),"
    " jsonb_build_object('kind', 'open', 'position_id', gen_random_uuid())"
    " from signal returning client_order_id, signal_id, intent ->> 'position_id' as position_id)"
    " select client_order_id as order_cid, signal_id::text as order_signal, position_id as order_position"
    " from trade"
)
_OPEN_POSITION = (
    "with signal as (insert into public.signals (trader_id, user_id, symbol, status, trigger_price)"
    " values (%(traders)s, %(owner)s, 'X' || upper(left(md5(random()::text), 6)) || 'USDT', 'position_open',"
    " 100)"
    " returning id, symbol)"
    " insert into public.positions (signal_id, user_id, symbol, side, entry_price, size)"
    " select id, %(owner)s, symbol, 'long', 100, 1 from signal returning id::text as open_position"
)
_FRESH = (
    "select gen_random_uuid()::text as fresh_id, 'tm' || left(md5(random()::text), 30) as fresh_cid,"
    " 'X' || upper(left(md5(random()::text), 6)) || 'USDT' as fresh_symbol"
)

_MARKET_ORDER = {
    "client_order_id": "{fresh_cid}",
    "signal_id": "{signals}",
    "type": "paper",
    "side": "BUY",
    "order_type": "MARKET",
    "symbol": "BTCUSDT",
    "price": "100",
    "quantity": "1",
}
# Fills the pending order _PENDING_ORDER makes, opening its position.
_FILL = {
    "client_order_id": "{order_cid}",
    "price": "100",
    "quantity": "1",
    "fee": "0",
    "fee_asset": "USDT",
    "expected_size": "0",
    "signal_status": "position_open",
    "paper_balance_delta": "-100",
    "position": {
        "id": "{order_position}",
        "signal_id": "{order_signal}",
        "side": "long",
        "entry_price": "100",
        "size": "1",
        "realized_pnl": "0",
        "fees_paid": "0",
        "status": "open",
        "metadata": {"cost_basis": "100", "entry_cost_total": "100"},
    },
}
_POSITION_CHANGE = {"position_id": "{open_position}", "changes": {"stop_loss": "90"}}

FUNCTIONS: dict[str, Function] = {
    # The signed-in user's own settings and figures.
    "binance_keys_status()": Function(SIGNED_IN),
    "set_binance_keys(api_key text, secret_key text)": Function(
        SIGNED_IN, {"api_key": "AKIAmatrixApiKey0001xyz9", "secret_key": "MatrixSecretBinanceSecret77"}
    ),
    "delete_binance_keys()": Function(SIGNED_IN),
    "telegram_bot_status()": Function(SIGNED_IN),
    "set_telegram_bot(bot_token text, chat_id text)": Function(
        SIGNED_IN, {"bot_token": "123456:ABCdefGHIjklMNOpqrSTUvwxYZ012345", "chat_id": "987654"}
    ),
    "delete_telegram_bot()": Function(SIGNED_IN),
    "ai_tokens_usd(model text, prompt_tokens bigint, completion_tokens bigint, on_date date)": Function(
        SIGNED_IN, {"model": "gemini-2.5-flash", "prompt_tokens": 1000, "completion_tokens": 100}
    ),
    "machine_usd_per_second(cpu_kind text, cpus integer, memory_mb integer, on_date date)": Function(
        SIGNED_IN, {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256}
    ),
    "schema_version()": Function(SIGNED_IN | MACHINES),
    # The machine: its own heartbeat, logs and reports; money and lifecycle through the transitions.
    "record_machine_heartbeat(status machine_status, version text)": Function(
        MACHINES, {"status": "running", "version": "matrix"}
    ),
    "record_machine_logs(lines jsonb)": Function(
        MACHINES,
        {
            "lines": [
                {
                    "id": "{fresh_id}",
                    "logged_at": "2026-01-01T00:00:00Z",
                    "level": "INFO",
                    "logger": "matrix",
                    "message": "x",
                }
            ]
        },
        setup=_FRESH,
    ),
    "report_service_health(service text, ok boolean, detail text)": Function(
        MACHINES, {"service": "binance", "ok": True}
    ),
    "report_trader_error(trader_id uuid, error_message text)": Function(
        frozenset({Role.MACHINE}), {"trader_id": "{traders}", "error_message": "matrix"}
    ),
    "trading_paper_balance()": Function(MACHINES),
    "trading_create_signal(signal_id uuid, trader_id uuid, symbol text, trigger_price numeric)": Function(
        frozenset({Role.MACHINE}),
        {
            "signal_id": "{fresh_id}",
            "trader_id": "{traders}",
            "symbol": "{fresh_symbol}",
            "trigger_price": "100",
        },
        setup=_FRESH,
    ),
    "trading_set_signal(signal_id uuid, status signal_status, close_reason text, refusal text, "
    "expected_status signal_status)": Function(
        frozenset({Role.MACHINE}), {"signal_id": "{signals}", "refusal": "matrix"}
    ),
    "trading_record_order(trade jsonb)": Function(
        frozenset({Role.MACHINE}), {"trade": _MARKET_ORDER}, setup=_FRESH
    ),
    "trading_record_orders(calls jsonb)": Function(
        frozenset({Role.MACHINE}), {"calls": [{"trade": _MARKET_ORDER}]}, setup=_FRESH
    ),
    "trading_mark_order(client_order_id text, status order_status, binance_order_id bigint, "
    "error_message text)": Function(
        frozenset({Role.MACHINE}),
        {"client_order_id": "{order_cid}", "status": "cancelled"},
        setup=_PENDING_ORDER,
    ),
    "trading_apply_fill(fill jsonb)": Function(
        frozenset({Role.MACHINE}), {"fill": _FILL}, setup=_PENDING_ORDER
    ),
    "trading_apply_fills(calls jsonb)": Function(
        frozenset({Role.MACHINE}), {"calls": [{"fill": _FILL}]}, setup=_PENDING_ORDER
    ),
    "trading_update_position(position_id uuid, changes jsonb)": Function(
        frozenset({Role.MACHINE}), _POSITION_CHANGE, setup=_OPEN_POSITION
    ),
    "trading_update_positions(calls jsonb)": Function(
        frozenset({Role.MACHINE}), {"calls": [_POSITION_CHANGE]}, setup=_OPEN_POSITION
    ),
    # service_role only (the Edge Functions and pg_cron).
    "decrypt_binance_keys(user_id uuid)": Function(NOBODY, {"user_id": "{owner}"}),
    "next_machine_token_generation(machine_id text)": Function(NOBODY, {"machine_id": "{machine_id}"}),
    "begin_machine_resize(machine_row_id uuid, to_cpus integer, to_memory_mb integer, reason text, "
    "cooldown_secs integer)": Function(
        NOBODY, {"machine_row_id": "{fly_machines}", "to_cpus": 2, "to_memory_mb": 512, "reason": "matrix"}
    ),
    "finish_machine_resize(resize_id uuid, status machine_resize_status, error text)": Function(
        NOBODY, {"resize_id": "{machine_resizes}", "status": "failed"}
    ),
    "claim_machine_sizing(machine_row_id uuid, min_interval_secs integer)": Function(
        NOBODY, {"machine_row_id": "{fly_machines}", "min_interval_secs": 0}
    ),
    "reserve_ai_tokens(user_id uuid, tokens bigint)": Function(NOBODY, {"user_id": "{owner}", "tokens": 1}),
    "settle_ai_tokens(user_id uuid, usage_date date, reserved_tokens bigint, prompt_tokens bigint, "
    "completion_tokens bigint, model text)": Function(
        NOBODY,
        {
            "user_id": "{owner}",
            "usage_date": "2026-01-01",
            "reserved_tokens": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
        },
    ),
    "set_service_alert_threshold(service text, alert_after_secs integer)": Function(
        NOBODY, {"service": "binance", "alert_after_secs": 60}
    ),
    "raise_operator_alert(kind operator_alert_kind, subject text, message text)": Function(
        NOBODY, {"kind": "gemini_failing", "subject": "matrix", "message": "x"}
    ),
    "resolve_operator_alert(kind operator_alert_kind, subject text)": Function(
        NOBODY, {"kind": "gemini_failing", "subject": "matrix"}
    ),
    "claim_notification_deliveries(max_deliveries integer, lease_secs integer)": Function(NOBODY),
    "finish_notification_delivery(delivery_id uuid, outcome text, error text, retry_after_secs integer, "
    "provider_message_id text, max_attempts integer)": Function(
        NOBODY, {"delivery_id": "{notification_deliveries}", "outcome": "delivered"}
    ),
}

# Edge Functions. service_role-only ones list nobody: none of the six credentials may call them.
_NOBODYS = "00000000-0000-4000-8000-000000000022"
_MARKET = {
    "symbol": "BTCUSDT",
    "timestamp": 1767225600,
    "ticker": {"lastPrice": "100"},
    "klines": {"5m": [[1767225600000, "100", "101", "99", "100", "10"]]},
}
EDGE_FUNCTIONS: dict[str, EdgeFunction] = {
    "ping": EdgeFunction(frozenset({Role.ANON}) | SIGNED_IN | MACHINES),
    # A trader nobody has: the caller's answer is a 404.
    "ask": EdgeFunction(SIGNED_IN, {"question": "Why?", "traderId": _NOBODYS}),
    "generate-strategy": EdgeFunction(SIGNED_IN, {"description": "Buy when RSI(14) on 5m is below 30."}),
    # Alice's closed signal: her machine's answer is a 409; bob's machine may not name her trader. Its
    # backtest form (no row named: each user judges their own backtest's signals, on their own AI budget)
    # is the users' alone: supabase/functions/tests/analyze-signal.test.ts shows who may call it.
    "analyze-signal": EdgeFunction(
        frozenset({Role.MACHINE}), {"traderId": "{traders}", "signalId": "{signals}", "marketData": _MARKET}
    ),
    "check-machine-health": EdgeFunction(USER, {"userIds": ["{owner}"]}),
    # Alice has a live machine: provisioning answers with it.
    "provision-machine": EdgeFunction(USER, {"userId": "{owner}", "region": "iad"}),
    "destroy-machine": EdgeFunction(
        USER,
        {"userId": "{owner}", "reason": "user_request"},
        callers_shown_in="tests/supabase/test_lifecycle_functions.py",
    ),
    # Alice's machine row names a machine Fly does not have: her restart ends at Fly's 404.
    "restart-machine": EdgeFunction(USER, {"userId": "{owner}"}),
    # Takes a machine credential, which none of the six tokens is.
    "machine-token": EdgeFunction(NOBODY, {"machineId": "{machine_id}"}),
    "notify": EdgeFunction(NOBODY),
    # service_role sizes anyone's; a machine (empty body) only its own, which Fly does not have here: its
    # /metrics is unreachable and nothing changes. A machine naming users is refused (test_scale_machines).
    "scale-machines": EdgeFunction(MACHINES, {}),
    "update-machines": EdgeFunction(
        NOBODY, {"image": "registry.fly.io/trademind:matrix", "userIds": ["{owner}"]}
    ),
}
