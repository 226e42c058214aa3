-- Row level security, rule by rule, for each role: user A vs user B, A's machine vs B's rows, anon,
-- service_role. Each role is assumed exactly as PostgREST does (SET ROLE + request.jwt.claims).
begin;
select plan(72);

-- Fixture (as the superuser) --------------------------------------------------------------------------
select tests.create_user('a0000000-0000-4000-8000-000000000001', 'a@example.com');
select tests.create_user('b0000000-0000-4000-8000-000000000001', 'b@example.com');
select tests.create_trader('a0000000-0000-4000-8000-000000000001', 'A', 'a0000000-0000-4000-8000-0000000000a1');
select tests.create_trader('b0000000-0000-4000-8000-000000000001', 'B', 'b0000000-0000-4000-8000-0000000000b1');
select tests.create_trading_history('a0000000-0000-4000-8000-000000000001', 'a0000000-0000-4000-8000-0000000000a1');
select tests.create_trading_history('b0000000-0000-4000-8000-000000000001', 'b0000000-0000-4000-8000-0000000000b1');
select tests.create_machine('a0000000-0000-4000-8000-000000000001', 'machine-a');
select tests.create_machine('b0000000-0000-4000-8000-000000000001', 'machine-b');

-- authenticated: user A ---------------------------------------------------------------------------------
select tests.authenticate_as('a0000000-0000-4000-8000-000000000001');

select results_eq('select id from public.users', $$values ('a0000000-0000-4000-8000-000000000001'::uuid)$$,
  'user: reads only its own users row');
select results_eq('select machine_id from public.fly_machines', $$values ('machine-a')$$,
  'user: reads only its own machine');
select results_eq('select name from public.traders', $$values ('A')$$, 'user: reads only its own traders');
select is((select count(*) from public.signals where user_id <> 'a0000000-0000-4000-8000-000000000001'), 0::bigint,
  'user: reads none of B''s signals');
select is((select count(*) from public.signals), 1::bigint, 'user: reads its own signal');
select is((select count(*) from public.positions), 1::bigint, 'user: reads only its own position');
select is((select count(*) from public.trades), 1::bigint, 'user: reads only its own trade');
select is((select count(*) from public.analysis_history), 1::bigint, 'user: reads only its own analysis');

select lives_ok($$update public.users set paper_trading_enabled = false, paper_starting_balance_usd = 5000
                  where id = 'a0000000-0000-4000-8000-000000000001'$$, 'user: changes its own trading settings');
update public.users set paper_starting_balance_usd = 1 where id = 'b0000000-0000-4000-8000-000000000001';
select throws_ok($$update public.users set tier = 'power' where id = 'a0000000-0000-4000-8000-000000000001'$$,
  '42501', null, 'user: cannot change its own tier');
select throws_ok($$update public.users set subscription_status = 'active'$$, '42501', null,
  'user: cannot change its subscription status');
select throws_ok($$insert into public.users (id) values ('c0000000-0000-4000-8000-000000000001')$$, '42501', null,
  'user: cannot create users rows');
select throws_ok($$delete from public.users$$, '42501', null, 'user: cannot delete users rows');

select lives_ok($$select tests.insert_row('public.traders', jsonb_build_object(
    'id', 'a0000000-0000-4000-8000-0000000000a2', 'user_id', 'a0000000-0000-4000-8000-000000000001',
    'name', 'A2', 'signal_code', 'def check_signal(s, t, k): return True', 'ai_instructions', 'x',
    'timeframes', array['1h'], 'check_interval', '1h_close', 'reanalysis_interval', '1h'))$$,
  'user: creates a trader of its own');
select throws_ok($$select tests.insert_row('public.traders', jsonb_build_object(
    'user_id', 'b0000000-0000-4000-8000-000000000001', 'name', 'planted',
    'signal_code', 'def check_signal(s, t, k): return True', 'ai_instructions', 'x',
    'timeframes', array['1h'], 'check_interval', '1h_close', 'reanalysis_interval', '1h'))$$,
  '42501', 'new row violates row-level security policy for table "traders"', 'user: cannot create a trader for B');
select lives_ok($$update public.traders set status = 'paused' where id = 'a0000000-0000-4000-8000-0000000000a1'$$,
  'user: pauses its own trader');
update public.traders set status = 'paused' where id = 'b0000000-0000-4000-8000-0000000000b1';
delete from public.traders where id = 'b0000000-0000-4000-8000-0000000000b1';
select throws_ok($$update public.traders set user_id = 'b0000000-0000-4000-8000-000000000001'$$, '42501', null,
  'user: cannot hand a trader to another user');
select throws_ok($$update public.traders set signal_code_version = 7$$, '42501', null,
  'user: cannot set signal_code_version');
select lives_ok($$delete from public.traders where id = 'a0000000-0000-4000-8000-0000000000a2'$$,
  'user: deletes its own trader');

select throws_ok($$insert into public.signals (trader_id, user_id, symbol, trigger_price)
                   values ('a0000000-0000-4000-8000-0000000000a1', 'a0000000-0000-4000-8000-000000000001', 'SOLUSDT', 1)$$,
  '42501', null, 'user: cannot create signals');
select throws_ok($$update public.signals set status = 'watching'$$, '42501', null, 'user: cannot update signals');
select throws_ok($$update public.positions set stop_loss = 1$$, '42501', null, 'user: cannot update positions');
select throws_ok($$insert into public.trades (signal_id, user_id, type, side, symbol, quantity, status, client_order_id)
                   select id, user_id, 'paper', 'BUY', symbol, 1, 'pending', 'tm-user' from public.signals$$,
  '42501', null, 'user: cannot create trades');
select throws_ok($$delete from public.trades$$, '42501', null, 'user: cannot delete trades');
select throws_ok($$insert into public.analysis_history (signal_id, trader_id, user_id, decision, reasoning)
                   select id, trader_id, user_id, 'watch', 'x' from public.signals$$,
  '42501', null, 'user: cannot write analyses');
select throws_ok($$update public.fly_machines set status = 'stopped'$$, '42501', null,
  'user: cannot change its machine');
select throws_ok($$select * from private.binance_credentials$$, '42501', null,
  'user: cannot reach the credentials table');
select throws_ok($$select * from public.decrypt_binance_keys('a0000000-0000-4000-8000-000000000001')$$, '42501', null,
  'user: cannot decrypt keys, not even its own');
select throws_ok($$select public.report_trader_error('a0000000-0000-4000-8000-0000000000a1', 'x')$$, '42501', null,
  'user: cannot use the machine-only error report');

select tests.clear_authentication();
select is((select paper_starting_balance_usd from public.users where id = 'b0000000-0000-4000-8000-000000000001'),
  10000::numeric, 'user: its update of B''s settings changed nothing');
select is((select status::text from public.traders where id = 'b0000000-0000-4000-8000-0000000000b1'), 'active',
  'user: its update and delete of B''s trader changed nothing');

-- trader_machine: A's machine ----------------------------------------------------------------------------
select tests.authenticate_as_machine('a0000000-0000-4000-8000-000000000001', 'machine-a');

select results_eq('select name from public.traders', $$values ('A')$$, 'machine: reads only its user''s traders');
select results_eq('select id from public.users', $$values ('a0000000-0000-4000-8000-000000000001'::uuid)$$,
  'machine: reads only its user''s settings');
select results_eq('select machine_id from public.fly_machines', $$values ('machine-a')$$,
  'machine: reads only its own machine row');
select is((select count(*) from public.signals), 1::bigint, 'machine: reads only its user''s signals');
select is((select count(*) from public.positions), 1::bigint, 'machine: reads only its user''s positions');
select is((select count(*) from public.trades), 1::bigint, 'machine: reads only its user''s trades');
select is((select count(*) from public.analysis_history), 1::bigint, 'machine: reads only its user''s analyses');

select throws_ok($$update public.traders set name = 'hijacked'$$, '42501', null, 'machine: cannot edit traders');
select throws_ok($$delete from public.traders$$, '42501', null, 'machine: cannot delete traders');
select throws_ok($$update public.users set real_trading_enabled = true$$, '42501', null,
  'machine: cannot change its user''s settings');

-- Money and lifecycle move only through the trading_* functions (09 and 16 test those): no direct writes,
-- not even for its own user.
select throws_ok($$insert into public.signals (id, trader_id, user_id, symbol, trigger_price)
                   values ('a0000000-0000-4000-8000-0000000000e1', 'a0000000-0000-4000-8000-0000000000a1',
                           'a0000000-0000-4000-8000-000000000001', 'SOLUSDT', 150)$$,
  '42501', null, 'machine: cannot insert a signal, not even its user''s');
select throws_ok($$update public.signals set status = 'new'$$, '42501', null,
  'machine: cannot move a signal''s status by hand');
select throws_ok($$delete from public.signals$$, '42501', null, 'machine: cannot delete signals');
select throws_ok($$insert into public.positions (signal_id, user_id, symbol, side, entry_price, size)
                   select id, user_id, symbol, 'long', 1, 1 from public.signals$$,
  '42501', null, 'machine: cannot open a position by hand');
select throws_ok($$update public.positions set stop_loss = 140, realized_pnl = 1000000$$, '42501', null,
  'machine: cannot update a position by hand');
select throws_ok($$delete from public.positions$$, '42501', null, 'machine: cannot delete positions');
select throws_ok($$insert into public.trades (signal_id, user_id, type, side, symbol, price, quantity, status,
                                              client_order_id)
                   select id, user_id, 'paper', 'BUY', symbol, 1, 3, 'filled', 'tm-sol-1' from public.signals$$,
  '42501', null, 'machine: cannot record a filled trade by hand');
select throws_ok($$update public.trades set price = 1$$, '42501', null, 'machine: cannot reprice a trade');
select throws_ok($$delete from public.trades$$, '42501', null, 'machine: cannot delete trades');
select throws_ok($$select * from public.paper_accounts$$, '42501', null,
  'machine: reads the paper balance only through trading_paper_balance()');
select throws_ok($$insert into public.paper_accounts (user_id, balance_usd, starting_balance_usd)
                   values ('a0000000-0000-4000-8000-000000000001', 1000000, 1000000)$$,
  '42501', null, 'machine: cannot open a paper account by hand');
select throws_ok($$update public.paper_accounts set balance_usd = 1000000$$, '42501', null,
  'machine: cannot set the paper balance');
select throws_ok($$insert into public.analysis_history (signal_id, trader_id, user_id, decision, reasoning)
                   select id, trader_id, user_id, 'watch', 'x' from public.signals$$,
  '42501', null, 'machine: cannot write analyses (analyze-signal does)');
select throws_ok($$insert into public.notifications (user_id, kind, title)
                   values ('a0000000-0000-4000-8000-000000000001', 'signal_new', 'x')$$,
  '42501', null, 'machine: cannot write notifications (triggers on its events do)');
select throws_ok($$update public.fly_machines set last_heartbeat = '2099-01-01' where machine_id = 'machine-a'$$,
  '42501', null, 'machine: cannot date its own heartbeat (record_machine_heartbeat uses the database clock)');
select throws_ok($$update public.fly_machines set status = 'destroyed', destroyed_at = now() where machine_id = 'machine-a'$$,
  '42501', null, 'machine: cannot mark itself destroyed');
select throws_ok($$update public.fly_machines set memory_mb = 4096$$, '42501', null,
  'machine: cannot resize itself');

select lives_ok($$select public.report_trader_error('a0000000-0000-4000-8000-0000000000a1', 'line 3: name ''os'' is not defined')$$,
  'machine: reports its user''s trader as errored');
select throws_ok($$select public.report_trader_error('b0000000-0000-4000-8000-0000000000b1', 'sabotage')$$,
  'P0002', null, 'machine: cannot error B''s trader');

-- The same user's token for another machine id sees no machine row.
select tests.authenticate_as_machine('a0000000-0000-4000-8000-000000000001', 'machine-other');
select is((select count(*) from public.fly_machines), 0::bigint, 'machine: another machine id sees no machine row');

select tests.clear_authentication();
select is((select status::text || ':' || error_message from public.traders where id = 'a0000000-0000-4000-8000-0000000000a1'),
  'error:line 3: name ''os'' is not defined', 'machine: the error report set status and message');

-- anon --------------------------------------------------------------------------------------------------
select tests.authenticate_as_anon();
select throws_ok('select * from public.users', '42501', null, 'anon: no users');
select throws_ok('select * from public.fly_machines', '42501', null, 'anon: no machines');
select throws_ok('select * from public.traders', '42501', null, 'anon: no traders');
select throws_ok('select * from public.signals', '42501', null, 'anon: no signals');
select throws_ok('select * from public.positions', '42501', null, 'anon: no positions');
select throws_ok('select * from public.trades', '42501', null, 'anon: no trades');
select throws_ok('select * from public.analysis_history', '42501', null, 'anon: no analyses');
select throws_ok('select public.schema_version()', '42501', null, 'anon: cannot call schema_version()');
select throws_ok('select * from public.binance_keys_status()', '42501', null, 'anon: cannot call key RPCs');

-- service_role ----------------------------------------------------------------------------------------------
select tests.authenticate_as_service_role();
select is((select count(*) from public.traders where user_id in ('a0000000-0000-4000-8000-000000000001',
  'b0000000-0000-4000-8000-000000000001')), 2::bigint, 'service_role: reads every user''s traders');

select * from finish();
rollback;
