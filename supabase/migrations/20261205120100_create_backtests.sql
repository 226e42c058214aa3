-- backtests: the results of `trademind backtest` (a strategy replayed over the recorded market through the
-- worker's own signal run and trading), saved by the user who ran it and read only by them; the console
-- lists them. A row is a finished result: it is never changed, only deleted.
--
-- The headline figures are columns (the console sorts and shows them); `report` holds the whole report
-- (per-symbol table, every trade), bounded in size. The machine role has no privilege here, so the
-- live-machine policies of 20261205020000 do not apply.

create table public.backtests (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null default auth.uid() references public.users (id) on delete cascade,
  -- The saved trader it tested (none for a strategy tested from a description before it was saved).
  trader_id uuid references public.traders (id) on delete set null,
  trader_name text not null,
  symbols text[] not null,
  market_from timestamptz not null,
  market_to timestamptz not null,
  ai text not null,
  fee_rate numeric not null,
  slippage_rate numeric not null,
  starting_balance_usd numeric not null,
  final_equity_usd numeric not null,
  net_pnl_usd numeric not null,
  trades integer not null,
  win_rate numeric,
  max_drawdown_percent numeric not null,
  sharpe double precision,
  exposure numeric not null,
  report jsonb not null,
  created_at timestamptz not null default now(),
  constraint backtests_trader_name_length check (char_length(btrim(trader_name)) between 1 and 100),
  constraint backtests_symbols_valid check (private.is_symbol_list(symbols)),
  constraint backtests_window check (market_to > market_from),
  constraint backtests_ai_valid check (ai in ('off', 'standin', 'gemini')),
  constraint backtests_rates_valid
    check (fee_rate >= 0 and fee_rate < 1 and slippage_rate >= 0 and slippage_rate < 1),
  constraint backtests_balance_positive check (starting_balance_usd > 0 and final_equity_usd >= 0),
  constraint backtests_trades_valid check (trades >= 0),
  constraint backtests_win_rate_range check (win_rate is null or (win_rate >= 0 and win_rate <= 1)),
  constraint backtests_exposure_range check (exposure >= 0 and exposure <= 1),
  constraint backtests_drawdown_range check (max_drawdown_percent >= 0 and max_drawdown_percent <= 100),
  constraint backtests_report_object check (jsonb_typeof(report) = 'object'),
  constraint backtests_report_size check (pg_column_size(report) <= 4194304)
);
create index backtests_user_id_created_at_idx on public.backtests (user_id, created_at desc);
create index backtests_trader_id_idx on public.backtests (trader_id);

revoke all on table public.backtests from public, anon, authenticated, service_role, trader_machine;
alter table public.backtests enable row level security;
grant all on table public.backtests to service_role;
grant select, delete on public.backtests to authenticated;
grant insert (trader_id, trader_name, symbols, market_from, market_to, ai, fee_rate, slippage_rate,
  starting_balance_usd, final_equity_usd, net_pnl_usd, trades, win_rate, max_drawdown_percent, sharpe,
  exposure, report) on public.backtests to authenticated;

create policy "users read their own backtests" on public.backtests
  for select to authenticated using ((select auth.uid()) = user_id);
create policy "users save backtests of their own traders" on public.backtests
  for insert to authenticated with check (
    (select auth.uid()) = user_id
    and (trader_id is null
         or exists (select from public.traders t where t.id = trader_id and t.user_id = (select auth.uid())))
  );
create policy "users delete their own backtests" on public.backtests
  for delete to authenticated using ((select auth.uid()) = user_id);
