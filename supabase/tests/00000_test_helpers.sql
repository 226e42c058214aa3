-- Test helpers, installed before the other files run (name sorts first; committed, not rolled back).
-- `trademind dev test-db` drops the `tests` schema again when the run ends.
-- Modelled on basejump's supabase-test-helpers: switch role and JWT claims the way PostgREST does.
begin;

create schema if not exists tests;
grant usage on schema tests to anon, authenticated, service_role, trader_machine;

-- A signed-up user (auth.users row; the sign-up trigger creates public.users). Returns its id.
create or replace function tests.create_user(id uuid, email text, tier public.user_tier default 'pro')
returns uuid
language plpgsql
security definer
set search_path = ''
as $$
begin
  insert into auth.users (id, aud, role, email) values (create_user.id, 'authenticated', 'authenticated', email);
  update public.users set tier = create_user.tier where users.id = create_user.id;
  return create_user.id;
end
$$;

-- A minimal valid trader for `owner`. Returns its id.
create or replace function tests.create_trader(owner uuid, name text default 'test trader',
                                               id uuid default gen_random_uuid())
returns uuid
language sql
security definer
set search_path = ''
as $$
  insert into public.traders (id, user_id, name, signal_code, ai_instructions, timeframes, check_interval,
                              reanalysis_interval, symbols)
  values (id, owner, name, 'def check_signal(symbol, ticker, klines):' || chr(10) || '    return False',
          'Be careful.', array['1m', '5m'], '1m_close', '5m', array['BTCUSDT'])
  returning id
$$;

-- Insert one row given as JSON: only the keys present are set, every other column takes its default.
create or replace function tests.insert_row(target regclass, row_values jsonb)
returns void
language plpgsql
as $$
declare
  columns text;
begin
  select string_agg(quote_ident(key), ', ') into columns from jsonb_object_keys(row_values) as key;
  execute format('insert into %s (%s) select %s from jsonb_populate_record(null::%s, $1)',
                 target, columns, columns, target)
    using row_values;
end
$$;

-- A signal, an open position on it and a filled entry trade, all for `owner`. Returns the signal id.
create or replace function tests.create_trading_history(owner uuid, trader uuid, symbol text default 'BTCUSDT')
returns uuid
language plpgsql
security definer
set search_path = ''
as $$
declare
  signal uuid := gen_random_uuid();
  position uuid := gen_random_uuid();
begin
  insert into public.signals (id, trader_id, user_id, symbol, status, trigger_price)
  values (signal, trader, owner, symbol, 'position_open', 42000);
  insert into public.positions (id, signal_id, user_id, symbol, side, entry_price, size, stop_loss, take_profit)
  values (position, signal, owner, symbol, 'long', 42000, 0.01, 41000, 44000);
  insert into public.trades (position_id, signal_id, user_id, type, side, symbol, price, quantity, status,
                             client_order_id)
  values (position, signal, owner, 'paper', 'BUY', symbol, 42000, 0.01, 'filled',
          'tm-' || replace(left(position::text, 30), '-', ''));
  insert into public.analysis_history (signal_id, trader_id, user_id, decision, reasoning, confidence)
  values (signal, trader, owner, 'open_long', 'RSI oversold in an uptrend.', 80);
  return signal;
end
$$;

-- A machine row for `owner`. Returns its Fly machine id.
create or replace function tests.create_machine(owner uuid, machine_id text, status public.machine_status default 'running')
returns text
language sql
security definer
set search_path = ''
as $$
  insert into public.fly_machines (user_id, machine_id, status, region, memory_mb, last_heartbeat)
  values (owner, machine_id, status, 'iad', 256, now())
  returning machine_id
$$;

-- Act as a role with JWT claims, exactly as PostgREST does for a request (transaction-local settings).
create or replace function tests.authenticate_as(user_id uuid)
returns void
language sql
as $$
  select set_config('request.jwt.claims',
                    json_build_object('sub', user_id, 'role', 'authenticated')::text, true),
         set_config('role', 'authenticated', true)
$$;

create or replace function tests.authenticate_as_machine(user_id uuid, machine_id text, generation integer default 1)
returns void
language sql
as $$
  select set_config('request.jwt.claims',
                    json_build_object('sub', user_id, 'role', 'trader_machine', 'machine_id', machine_id,
                                      'machine_gen', generation)::text,
                    true),
         set_config('role', 'trader_machine', true)
$$;

create or replace function tests.authenticate_as_anon()
returns void
language sql
as $$
  select set_config('request.jwt.claims', '{"role": "anon"}', true), set_config('role', 'anon', true)
$$;

create or replace function tests.authenticate_as_service_role()
returns void
language sql
as $$
  select set_config('request.jwt.claims', '{"role": "service_role"}', true),
         set_config('role', 'service_role', true)
$$;

-- Back to the superuser running the test.
create or replace function tests.clear_authentication()
returns void
language sql
as $$
  select set_config('request.jwt.claims', '', true), set_config('role', 'none', true)
$$;

grant execute on all functions in schema tests to anon, authenticated, service_role, trader_machine;
revoke execute on function tests.create_user(uuid, text, public.user_tier), tests.create_trader(uuid, text, uuid),
  tests.create_trading_history(uuid, uuid, text), tests.create_machine(uuid, text, public.machine_status)
  from anon, authenticated, service_role, trader_machine, public;

select plan(3);
select has_function('tests', 'authenticate_as', array['uuid'], 'tests.authenticate_as exists');
select has_function('tests', 'authenticate_as_machine', array['uuid', 'text', 'integer'], 'tests.authenticate_as_machine exists');
select has_function('tests', 'clear_authentication', 'tests.clear_authentication exists');
select * from finish();

commit;
