-- Schema shape: tables, RLS everywhere, enums, triggers, realtime publication, schema_version().
begin;
select plan(27);

select tables_are('public',
  array['users', 'fly_machines', 'traders', 'signals', 'positions', 'trades', 'analysis_history',
        'ai_token_budgets', 'ai_usage_daily', 'paper_accounts', 'machine_logs', 'notifications',
        'notification_preferences', 'notification_deliveries', 'operator_alerts', 'operator_alert_events',
        'fly_machine_prices', 'ai_model_prices', 'machine_usage', 'cost_budgets', 'machine_resizes', 'backtests'],
  'public has exactly the product tables (a new one must be added here, with its RLS tests)');

select ok(
  (select bool_and(c.relrowsecurity) from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where n.nspname = 'public' and c.relkind = 'r'),
  'row level security is enabled on every public table');
select ok(
  (select c.relrowsecurity from pg_class c where c.oid = 'private.binance_credentials'::regclass),
  'row level security is enabled on private.binance_credentials');

select enum_has_labels('public', 'user_tier', array['free', 'pro', 'elite', 'power'], 'user_tier labels');
select enum_has_labels('public', 'machine_status',
  array['provisioning', 'starting', 'running', 'stopping', 'stopped', 'error', 'destroyed'], 'machine_status labels');
select enum_has_labels('public', 'signal_status', array['new', 'watching', 'position_open', 'closed'],
  'signal_status labels follow the signal lifecycle');
select enum_has_labels('public', 'analysis_decision', array[
  'no_trade', 'watch', 'open_long', 'open_short', 'close', 'partial_close',
  'scale_in', 'scale_out', 'update_stop_loss', 'update_take_profit', 'flip_position'],
  'analysis_decision has the eleven decisions');
select enum_has_labels('public', 'order_status',
  array['pending', 'partially_filled', 'filled', 'cancelled', 'failed'], 'order_status labels');

select col_is_unique('public', 'trades', array['user_id', 'client_order_id'],
  'trades.client_order_id is unique per user (not across users: no collisions, no oracle)');
select col_not_null('public', 'trades', 'client_order_id', 'every trade carries our client order id');
select has_column('public', 'traders', 'risk', 'traders have risk settings');
select has_column('public', 'positions', 'trailing_stop_percent', 'positions have a trailing stop distance');
select has_column('public', 'positions', 'trailing_stop_reference_price', 'positions track the trailing reference');
select has_column('public', 'positions', 'metadata', 'positions have metadata');
select hasnt_column('public', 'users', 'binance_api_key', 'no Binance key column in the exposed users table');

select is(public.schema_version(), 2, 'schema_version() is 2');

-- Sign-up trigger.
insert into auth.users (id, email) values ('10000000-0000-4000-8000-000000000001', 'signup@example.com');
select results_eq(
  $$select email, tier::text, paper_trading_enabled, real_trading_enabled, paper_starting_balance_usd
      from public.users where id = '10000000-0000-4000-8000-000000000001'$$,
  $$values ('signup@example.com'::text, 'free'::text, true, false, 10000::numeric)$$,
  'signing up creates a free users row with paper trading on and 10,000 USD of paper money');
update auth.users set email = 'renamed@example.com' where id = '10000000-0000-4000-8000-000000000001';
select is((select email from public.users where id = '10000000-0000-4000-8000-000000000001'),
  'renamed@example.com', 'an email change in auth.users reaches public.users');

-- updated_at and signal_code_version triggers.
select tests.create_trader('10000000-0000-4000-8000-000000000001', 'versioned');
update public.traders set updated_at = '2000-01-01', name = 'renamed' where name = 'versioned';
select ok((select updated_at > now() - interval '1 minute' from public.traders where name = 'renamed'),
  'updating a trader refreshes updated_at');
select is((select signal_code_version from public.traders where name = 'renamed'), 1,
  'a change that leaves signal_code alone keeps the version');
update public.traders set signal_code = signal_code || chr(10) || '# v2' where name = 'renamed';
select is((select signal_code_version from public.traders where name = 'renamed'), 2,
  'changing signal_code bumps signal_code_version');
update public.traders set signal_code_version = 99 where name = 'renamed';
select is((select signal_code_version from public.traders where name = 'renamed'), 2,
  'signal_code_version cannot be set by hand');

-- Realtime.
select set_eq(
  $$select tablename::text from pg_publication_tables where pubname = 'supabase_realtime'$$,
  array['traders', 'signals', 'positions', 'trades', 'analysis_history', 'fly_machines', 'machine_logs',
        'notifications'],
  'the tables workers and the console follow are published to supabase_realtime');
select is((select relreplident::text from pg_class where oid = 'public.traders'::regclass), 'f',
  'traders has REPLICA IDENTITY FULL, so deletes carry user_id');

-- Platform bootstrap pieces the migrations rely on.
select is(current_setting('wal_level'), 'logical', 'wal_level is logical (Realtime decodes the WAL)');
select has_extension('pg_cron', 'pg_cron is installed');
select function_returns('auth', 'uid', 'uuid', 'auth.uid() returns uuid');

select * from finish();
rollback;
