-- Core schema: users, fly_machines, traders, signals, positions, trades, analysis_history.
--
-- Enums here are mirrored by StrEnums in the worker (a test compares the two). Every row the worker writes
-- carries an id the worker generated, so ids have defaults only for rows created elsewhere. Child tables
-- reference their parent by (id, user_id), so a row can never point at another user's parent.
-- Money and quantities are unconstrained numeric: the executor keeps them exact as Decimal.

create schema if not exists private;
revoke all on schema private from public;

-- Enums --------------------------------------------------------------------------------------------------
create type public.user_tier as enum ('free', 'pro', 'elite', 'power');
create type public.subscription_status as enum ('active', 'cancelled', 'past_due');
create type public.machine_status as enum
  ('provisioning', 'starting', 'running', 'stopping', 'stopped', 'error', 'destroyed');
create type public.trader_status as enum ('active', 'paused', 'error');
create type public.signal_status as enum ('new', 'watching', 'position_open', 'closed');
create type public.position_side as enum ('long', 'short');
create type public.position_status as enum ('open', 'closed');
create type public.trading_mode as enum ('paper', 'real');
create type public.order_side as enum ('BUY', 'SELL');
create type public.order_type as enum ('MARKET', 'LIMIT', 'STOP_LOSS_LIMIT', 'TAKE_PROFIT_LIMIT');
create type public.order_status as enum ('pending', 'partially_filled', 'filled', 'cancelled', 'failed');
create type public.analysis_decision as enum (
  'no_trade', 'watch', 'open_long', 'open_short', 'close', 'partial_close',
  'scale_in', 'scale_out', 'update_stop_loss', 'update_take_profit', 'flip_position'
);

-- Validators used by CHECK constraints (immutable, so Postgres may use them there) ---------------------
-- Binance kline intervals a trader may subscribe to.
create function private.is_timeframe_list(timeframes text[]) returns boolean
language sql immutable
set search_path = ''
as $$
  select cardinality(timeframes) between 1 and 8
     and array_position(timeframes, null) is null
     and timeframes <@ array['1m', '3m', '5m', '15m', '30m', '1h', '2h', '4h', '6h', '8h', '12h', '1d']
$$;

-- Timer intervals: a fixed clock, or '<timeframe>_close' (right after that timeframe's candle closes).
create function private.is_timer_interval(timer_interval text) returns boolean
language sql immutable
set search_path = ''
as $$
  select timer_interval = any (array[
    '1s', '5s', '10s', '15s', '30s', '1m', '3m', '5m', '15m', '30m', '1h', '2h', '4h', '6h', '12h', '1d',
    '1m_close', '3m_close', '5m_close', '15m_close', '30m_close', '1h_close', '2h_close', '4h_close',
    '6h_close', '8h_close', '12h_close', '1d_close'
  ])
$$;

-- NULL means "the default universe"; otherwise 1..500 distinct Binance symbols such as BTCUSDT.
create function private.is_symbol_list(symbols text[]) returns boolean
language sql immutable
set search_path = ''
as $$
  select symbols is null or (
    cardinality(symbols) between 1 and 500
    and array_position(symbols, null) is null
    and array_to_string(symbols, ',') ~ '^[A-Z0-9]{2,20}(,[A-Z0-9]{2,20})*$'
    and cardinality(symbols) = (select count(distinct s) from unnest(symbols) as s)
  )
$$;

-- Risk settings: exactly these keys, each a number in range.
create function private.is_trader_risk(risk jsonb) returns boolean
language sql immutable
set search_path = ''
as $$
  select case
    when jsonb_typeof(risk) <> 'object' then false
    when (risk - array['max_position_size_usd', 'max_open_positions', 'daily_loss_limit_usd']) <> '{}'::jsonb then false
    when jsonb_typeof(risk -> 'max_position_size_usd') is distinct from 'number' then false
    when jsonb_typeof(risk -> 'max_open_positions') is distinct from 'number' then false
    when jsonb_typeof(risk -> 'daily_loss_limit_usd') is distinct from 'number' then false
    else (risk ->> 'max_position_size_usd')::numeric > 0
     and (risk ->> 'max_open_positions')::numeric between 1 and 100
     and (risk ->> 'max_open_positions')::numeric = trunc((risk ->> 'max_open_positions')::numeric)
     and (risk ->> 'daily_loss_limit_usd')::numeric >= 0
  end
$$;

-- users ----------------------------------------------------------------------------------------------
-- One row per auth.users row, created by the sign-up trigger below. Binance keys are not here: they live
-- encrypted in private.binance_credentials, out of the API's reach.
create table public.users (
  id uuid primary key references auth.users (id) on delete cascade,
  email text,
  tier public.user_tier not null default 'free',
  subscription_status public.subscription_status,
  paper_trading_enabled boolean not null default true,
  real_trading_enabled boolean not null default false,
  paper_starting_balance_usd numeric not null default 10000,
  preferred_region text not null default 'iad',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint users_email_format check (email is null or email ~ '^[^@\s]+@[^@\s]+$'),
  constraint users_paper_starting_balance_positive check (paper_starting_balance_usd > 0),
  constraint users_preferred_region_format check (preferred_region ~ '^[a-z]{3}$')
);
create unique index users_email_key on public.users (lower(email));
create index users_tier_idx on public.users (tier);

-- fly_machines -------------------------------------------------------------------------------------------
create table public.fly_machines (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references public.users (id) on delete cascade,
  machine_id text not null unique,
  status public.machine_status not null default 'provisioning',
  ip_address inet,
  region text,
  memory_mb integer,
  version text,
  error_message text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  last_heartbeat timestamptz,
  destroyed_at timestamptz,
  constraint fly_machines_machine_id_format check (machine_id ~ '^[a-zA-Z0-9_-]{1,64}$'),
  constraint fly_machines_memory_mb_positive check (memory_mb is null or memory_mb > 0),
  constraint fly_machines_region_format check (region is null or region ~ '^[a-z]{3}$'),
  constraint fly_machines_destroyed_at_matches_status
    check ((status = 'destroyed') = (destroyed_at is not null))
);
-- At most one machine per user that is not destroyed: provisioning is idempotent per user.
create unique index fly_machines_one_live_per_user on public.fly_machines (user_id) where status <> 'destroyed';
create index fly_machines_user_id_idx on public.fly_machines (user_id);
create index fly_machines_status_idx on public.fly_machines (status);

-- traders ----------------------------------------------------------------------------------------------
create table public.traders (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references public.users (id) on delete cascade,
  name text not null,
  description text,
  signal_code text not null,
  -- Bumped whenever signal_code changes, so the worker compiles each version once.
  signal_code_version integer not null default 1,
  ai_instructions text not null,
  timeframes text[] not null,
  check_interval text not null,
  reanalysis_interval text not null,
  symbols text[],
  risk jsonb not null
    default '{"max_position_size_usd": 100, "max_open_positions": 3, "daily_loss_limit_usd": 50}'::jsonb,
  status public.trader_status not null default 'active',
  error_message text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint traders_id_user_id_key unique (id, user_id),
  constraint traders_name_length check (char_length(btrim(name)) between 1 and 100),
  constraint traders_description_length check (description is null or char_length(description) <= 4000),
  constraint traders_signal_code_length check (char_length(signal_code) between 1 and 100000),
  constraint traders_signal_code_version_positive check (signal_code_version >= 1),
  constraint traders_ai_instructions_length check (char_length(ai_instructions) between 1 and 20000),
  constraint traders_timeframes_valid check (private.is_timeframe_list(timeframes)),
  constraint traders_check_interval_valid check (private.is_timer_interval(check_interval)),
  constraint traders_reanalysis_interval_valid check (private.is_timer_interval(reanalysis_interval)),
  constraint traders_symbols_valid check (private.is_symbol_list(symbols)),
  constraint traders_risk_valid check (private.is_trader_risk(risk)),
  constraint traders_error_message_matches_status
    check ((status = 'error') = (error_message is not null))
);
create index traders_user_id_idx on public.traders (user_id);
create index traders_status_idx on public.traders (status);

-- signals ------------------------------------------------------------------------------------------------
create table public.signals (
  id uuid primary key default gen_random_uuid(),
  trader_id uuid not null,
  user_id uuid not null references public.users (id) on delete cascade,
  symbol text not null,
  "timestamp" timestamptz not null default now(),
  status public.signal_status not null default 'new',
  trigger_price numeric not null,
  current_price numeric,
  closed_at timestamptz,
  close_reason text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint signals_id_user_id_key unique (id, user_id),
  constraint signals_trader_fkey foreign key (trader_id, user_id)
    references public.traders (id, user_id) on delete cascade,
  constraint signals_symbol_format check (symbol ~ '^[A-Z0-9]{2,20}$'),
  constraint signals_trigger_price_positive check (trigger_price > 0),
  constraint signals_current_price_positive check (current_price is null or current_price > 0),
  constraint signals_closed_at_matches_status check ((status = 'closed') = (closed_at is not null)),
  constraint signals_close_reason_length check (close_reason is null or char_length(close_reason) <= 500)
);
-- One live signal per trader and symbol: the scheduler must not re-signal while one is in flight.
create unique index signals_one_live_per_trader_symbol on public.signals (trader_id, symbol)
  where status <> 'closed';
create index signals_trader_id_idx on public.signals (trader_id);
create index signals_user_id_idx on public.signals (user_id);
create index signals_status_idx on public.signals (status);
create index signals_symbol_idx on public.signals (symbol);
create index signals_timestamp_idx on public.signals ("timestamp" desc);

-- positions ----------------------------------------------------------------------------------------------
create table public.positions (
  id uuid primary key default gen_random_uuid(),
  signal_id uuid not null,
  user_id uuid not null references public.users (id) on delete cascade,
  symbol text not null,
  side public.position_side not null,
  type public.trading_mode not null default 'paper',
  entry_price numeric not null,
  -- Base-asset quantity currently held (0 once closed).
  size numeric not null,
  stop_loss numeric,
  stop_loss_order_id bigint,
  take_profit numeric,
  take_profit_order_id bigint,
  -- Trailing stop: distance as a fraction of price, optional activation price, and the best price seen
  -- since activation (high-water mark for longs, low-water mark for shorts).
  trailing_stop_percent numeric,
  trailing_stop_activation_price numeric,
  trailing_stop_reference_price numeric,
  status public.position_status not null default 'open',
  exit_price numeric,
  realized_pnl numeric not null default 0,
  fees_paid numeric not null default 0,
  pnl numeric,
  pnl_percent numeric,
  metadata jsonb not null default '{}'::jsonb,
  opened_at timestamptz not null default now(),
  closed_at timestamptz,
  close_reason text,
  updated_at timestamptz not null default now(),
  constraint positions_id_user_id_key unique (id, user_id),
  constraint positions_signal_fkey foreign key (signal_id, user_id)
    references public.signals (id, user_id) on delete cascade,
  constraint positions_symbol_format check (symbol ~ '^[A-Z0-9]{2,20}$'),
  constraint positions_entry_price_positive check (entry_price > 0),
  constraint positions_size_valid check ((status = 'open' and size > 0) or (status = 'closed' and size = 0)),
  constraint positions_stop_loss_positive check (stop_loss is null or stop_loss > 0),
  constraint positions_take_profit_positive check (take_profit is null or take_profit > 0),
  constraint positions_stop_below_target check (
    stop_loss is null or take_profit is null
    or (side = 'long' and stop_loss < take_profit)
    or (side = 'short' and stop_loss > take_profit)
  ),
  constraint positions_trailing_stop_percent_range
    check (trailing_stop_percent is null or (trailing_stop_percent > 0 and trailing_stop_percent < 1)),
  constraint positions_trailing_stop_activation_price_positive
    check (trailing_stop_activation_price is null or trailing_stop_activation_price > 0),
  constraint positions_trailing_stop_reference_price_positive
    check (trailing_stop_reference_price is null or trailing_stop_reference_price > 0),
  constraint positions_fees_paid_nonnegative check (fees_paid >= 0),
  constraint positions_exit_price_positive check (exit_price is null or exit_price > 0),
  constraint positions_closed_fields_match_status check (
    (status = 'closed') = (closed_at is not null)
    and (status = 'open' or (exit_price is not null and pnl is not null))
  ),
  constraint positions_metadata_object check (jsonb_typeof(metadata) = 'object')
);
-- A signal has at most one open position at a time.
create unique index positions_one_open_per_signal on public.positions (signal_id) where status = 'open';
create index positions_signal_id_idx on public.positions (signal_id);
create index positions_user_id_idx on public.positions (user_id);
create index positions_status_idx on public.positions (status);
create index positions_symbol_idx on public.positions (symbol);

-- trades (one row per order we send, paper or real) ------------------------------------------------------
create table public.trades (
  id uuid primary key default gen_random_uuid(),
  -- NULL only for an order that failed before any position existed (e.g. a rejected entry).
  position_id uuid,
  signal_id uuid,
  user_id uuid not null references public.users (id) on delete cascade,
  type public.trading_mode not null,
  side public.order_side not null,
  order_type public.order_type not null default 'MARKET',
  symbol text not null,
  price numeric,
  quantity numeric not null,
  status public.order_status not null,
  -- Our id for the order, recorded before it is sent; the exchange echoes it, so a retry can look it up.
  client_order_id text not null unique,
  binance_order_id bigint,
  fee numeric not null default 0,
  fee_asset text,
  error_message text,
  executed_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint trades_position_fkey foreign key (position_id, user_id)
    references public.positions (id, user_id) on delete cascade,
  constraint trades_signal_fkey foreign key (signal_id, user_id)
    references public.signals (id, user_id) on delete cascade,
  constraint trades_has_parent check (position_id is not null or signal_id is not null),
  constraint trades_symbol_format check (symbol ~ '^[A-Z0-9]{2,20}$'),
  -- Binance's newClientOrderId rule.
  constraint trades_client_order_id_format check (client_order_id ~ '^[.A-Z:/a-z0-9_-]{1,36}$'),
  constraint trades_price_positive check (price is null or price > 0),
  constraint trades_quantity_positive check (quantity > 0),
  constraint trades_fee_nonnegative check (fee >= 0),
  constraint trades_filled_has_price check (status not in ('filled', 'partially_filled') or price is not null),
  constraint trades_failed_has_error check (status <> 'failed' or error_message is not null),
  constraint trades_real_fields check (type = 'real' or binance_order_id is null)
);
create index trades_position_id_idx on public.trades (position_id);
create index trades_signal_id_idx on public.trades (signal_id);
create index trades_user_id_idx on public.trades (user_id);
create index trades_type_idx on public.trades (type);
create index trades_executed_at_idx on public.trades (executed_at desc);

-- analysis_history (written by the analyze-signal function) -------------------------------------------
create table public.analysis_history (
  id uuid primary key default gen_random_uuid(),
  signal_id uuid not null,
  trader_id uuid not null,
  user_id uuid not null references public.users (id) on delete cascade,
  "timestamp" timestamptz not null default now(),
  decision public.analysis_decision not null,
  reasoning text not null,
  confidence integer,
  market_data jsonb,
  metadata jsonb,
  model text,
  prompt_tokens integer,
  completion_tokens integer,
  constraint analysis_history_signal_fkey foreign key (signal_id, user_id)
    references public.signals (id, user_id) on delete cascade,
  constraint analysis_history_trader_fkey foreign key (trader_id, user_id)
    references public.traders (id, user_id) on delete cascade,
  constraint analysis_history_confidence_range check (confidence is null or confidence between 0 and 100),
  constraint analysis_history_reasoning_not_blank check (char_length(btrim(reasoning)) > 0),
  constraint analysis_history_tokens_nonnegative
    check (coalesce(prompt_tokens, 0) >= 0 and coalesce(completion_tokens, 0) >= 0),
  constraint analysis_history_metadata_object check (metadata is null or jsonb_typeof(metadata) = 'object')
);
create index analysis_history_signal_id_idx on public.analysis_history (signal_id);
create index analysis_history_trader_id_idx on public.analysis_history (trader_id);
create index analysis_history_user_id_idx on public.analysis_history (user_id);
create index analysis_history_timestamp_idx on public.analysis_history ("timestamp" desc);

-- Triggers -----------------------------------------------------------------------------------------------
create function private.set_updated_at() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.updated_at := now();
  return new;
end
$$;

create trigger users_set_updated_at before update on public.users
  for each row execute function private.set_updated_at();
create trigger fly_machines_set_updated_at before update on public.fly_machines
  for each row execute function private.set_updated_at();
create trigger traders_set_updated_at before update on public.traders
  for each row execute function private.set_updated_at();
create trigger signals_set_updated_at before update on public.signals
  for each row execute function private.set_updated_at();
create trigger positions_set_updated_at before update on public.positions
  for each row execute function private.set_updated_at();
create trigger trades_set_updated_at before update on public.trades
  for each row execute function private.set_updated_at();

create function private.bump_signal_code_version() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if new.signal_code is distinct from old.signal_code then
    new.signal_code_version := old.signal_code_version + 1;
  else
    new.signal_code_version := old.signal_code_version;
  end if;
  return new;
end
$$;

create trigger traders_bump_signal_code_version before update on public.traders
  for each row execute function private.bump_signal_code_version();

-- Sign-up: every auth.users row gets its public.users row (the usual Supabase pattern).
create function private.handle_new_auth_user() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  insert into public.users (id, email) values (new.id, new.email);
  return new;
end
$$;

create function private.handle_auth_user_email_change() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  update public.users set email = new.email where id = new.id;
  return new;
end
$$;

create trigger on_auth_user_created after insert on auth.users
  for each row execute function private.handle_new_auth_user();
create trigger on_auth_user_email_changed after update of email on auth.users
  for each row when (new.email is distinct from old.email)
  execute function private.handle_auth_user_email_change();

-- The worker refuses to start against a schema it was not built for. Bump on every incompatible change.
create function public.schema_version() returns integer
language sql immutable
set search_path = ''
as $$
  select 1
$$;
