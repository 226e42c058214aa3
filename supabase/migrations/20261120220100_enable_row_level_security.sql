-- Row level security and explicit grants for every public table.
--
-- Roles (JWT `role` claim, chosen by PostgREST):
--   anon            nothing at all.
--   authenticated   an end user (sub = user id): manages its own traders, reads its own rows everywhere
--                   else, edits a few of its own settings; never writes signals, positions or trades.
--   trader_machine  a user's worker machine (sub = user id, machine_id = its Fly machine id): reads that
--                   user's traders and settings, writes that user's signals, positions and trades, and only
--                   its own fly_machines row.
--   service_role    Edge Functions; BYPASSRLS, full grants.
-- Grants are revoked and re-granted explicitly so the result does not depend on the project's default
-- privileges. Policies use (select auth.uid()) so it is evaluated once per statement.

do $$
begin
  if not exists (select from pg_roles where rolname = 'trader_machine') then
    create role trader_machine nologin noinherit;
  end if;
end
$$;
grant trader_machine to authenticator;
alter role trader_machine set statement_timeout = '8s';
grant usage on schema public, extensions, auth to trader_machine;

-- The Fly machine id a trader_machine JWT was minted for.
create function private.jwt_machine_id() returns text
language sql stable
set search_path = ''
as $$
  select auth.jwt() ->> 'machine_id'
$$;
-- Policies and CHECK constraints reference private functions by oid, so the API roles need no usage on the
-- schema, only execute (which PUBLIC keeps for these harmless helpers).

revoke all on table public.users, public.fly_machines, public.traders, public.signals, public.positions,
  public.trades, public.analysis_history from public, anon, authenticated, service_role, trader_machine;

alter table public.users enable row level security;
alter table public.fly_machines enable row level security;
alter table public.traders enable row level security;
alter table public.signals enable row level security;
alter table public.positions enable row level security;
alter table public.trades enable row level security;
alter table public.analysis_history enable row level security;

grant all on table public.users, public.fly_machines, public.traders, public.signals, public.positions,
  public.trades, public.analysis_history to service_role;

-- users ----------------------------------------------------------------------------------------------
-- Tier and subscription come from billing (service_role); a user may change only its trading settings.
grant select on public.users to authenticated, trader_machine;
grant update (paper_trading_enabled, real_trading_enabled, paper_starting_balance_usd, preferred_region)
  on public.users to authenticated;

create policy "users read their own row" on public.users
  for select to authenticated using ((select auth.uid()) = id);
create policy "users update their own settings" on public.users
  for update to authenticated using ((select auth.uid()) = id) with check ((select auth.uid()) = id);
create policy "machines read their user's row" on public.users
  for select to trader_machine using ((select auth.uid()) = id);

-- fly_machines -------------------------------------------------------------------------------------------
grant select on public.fly_machines to authenticated, trader_machine;
grant update (status, last_heartbeat, version, error_message) on public.fly_machines to trader_machine;

create policy "users read their own machines" on public.fly_machines
  for select to authenticated using ((select auth.uid()) = user_id);
create policy "machines read their own row" on public.fly_machines
  for select to trader_machine
  using ((select auth.uid()) = user_id and machine_id = (select private.jwt_machine_id()));
-- A machine reports its own state; provisioning and destruction belong to the lifecycle functions.
create policy "machines update their own row" on public.fly_machines
  for update to trader_machine
  using ((select auth.uid()) = user_id and machine_id = (select private.jwt_machine_id()))
  with check (
    (select auth.uid()) = user_id and machine_id = (select private.jwt_machine_id())
    and status in ('starting', 'running', 'stopping', 'stopped', 'error')
  );

-- traders ----------------------------------------------------------------------------------------------
grant select, insert, delete on public.traders to authenticated;
grant update (name, description, signal_code, ai_instructions, timeframes, check_interval,
  reanalysis_interval, symbols, risk, status, error_message) on public.traders to authenticated;
grant select on public.traders to trader_machine;

create policy "users read their own traders" on public.traders
  for select to authenticated using ((select auth.uid()) = user_id);
create policy "users create their own traders" on public.traders
  for insert to authenticated with check ((select auth.uid()) = user_id);
create policy "users update their own traders" on public.traders
  for update to authenticated using ((select auth.uid()) = user_id) with check ((select auth.uid()) = user_id);
create policy "users delete their own traders" on public.traders
  for delete to authenticated using ((select auth.uid()) = user_id);
create policy "machines read their user's traders" on public.traders
  for select to trader_machine using ((select auth.uid()) = user_id);

-- signals, positions, trades: read by the user, written by the user's machine ---------------------------
grant select on public.signals, public.positions, public.trades to authenticated;
grant select, insert, update on public.signals, public.positions, public.trades to trader_machine;

create policy "users read their own signals" on public.signals
  for select to authenticated using ((select auth.uid()) = user_id);
create policy "machines read their user's signals" on public.signals
  for select to trader_machine using ((select auth.uid()) = user_id);
create policy "machines create their user's signals" on public.signals
  for insert to trader_machine with check ((select auth.uid()) = user_id);
create policy "machines update their user's signals" on public.signals
  for update to trader_machine using ((select auth.uid()) = user_id) with check ((select auth.uid()) = user_id);

create policy "users read their own positions" on public.positions
  for select to authenticated using ((select auth.uid()) = user_id);
create policy "machines read their user's positions" on public.positions
  for select to trader_machine using ((select auth.uid()) = user_id);
create policy "machines create their user's positions" on public.positions
  for insert to trader_machine with check ((select auth.uid()) = user_id);
create policy "machines update their user's positions" on public.positions
  for update to trader_machine using ((select auth.uid()) = user_id) with check ((select auth.uid()) = user_id);

create policy "users read their own trades" on public.trades
  for select to authenticated using ((select auth.uid()) = user_id);
create policy "machines read their user's trades" on public.trades
  for select to trader_machine using ((select auth.uid()) = user_id);
create policy "machines create their user's trades" on public.trades
  for insert to trader_machine with check ((select auth.uid()) = user_id);
create policy "machines update their user's trades" on public.trades
  for update to trader_machine using ((select auth.uid()) = user_id) with check ((select auth.uid()) = user_id);

-- analysis_history: written by analyze-signal (service_role); read by the user and its machine ---------
grant select on public.analysis_history to authenticated, trader_machine;

create policy "users read their own analyses" on public.analysis_history
  for select to authenticated using ((select auth.uid()) = user_id);
create policy "machines read their user's analyses" on public.analysis_history
  for select to trader_machine using ((select auth.uid()) = user_id);

-- Functions ----------------------------------------------------------------------------------------------
-- Postgres grants EXECUTE to PUBLIC by default; say exactly who may call what.
revoke execute on function public.schema_version() from public, anon;
grant execute on function public.schema_version() to authenticated, trader_machine, service_role;

-- The sandbox reports a trader whose code cannot run; that is the only trader write a machine may make.
create function public.report_trader_error(trader_id uuid, error_message text) returns void
language plpgsql
security definer
set search_path = ''
as $$
begin
  if auth.role() is distinct from 'trader_machine' then
    raise exception 'only a trader machine may report trader errors' using errcode = '42501';
  end if;
  if error_message is null or char_length(btrim(error_message)) = 0 then
    raise exception 'error_message must not be empty' using errcode = '22023';
  end if;
  update public.traders t
     set status = 'error', error_message = left(report_trader_error.error_message, 2000)
   where t.id = report_trader_error.trader_id and t.user_id = auth.uid();
  if not found then
    raise exception 'trader % not found', report_trader_error.trader_id using errcode = 'P0002';
  end if;
end
$$;
revoke execute on function public.report_trader_error(uuid, text) from public, anon, authenticated, service_role;
grant execute on function public.report_trader_error(uuid, text) to trader_machine;
