-- Local development data: two users (each with a trader) so the API's per-user isolation is visible.
-- Signing a user up is an insert into auth.users; the sign-up trigger creates the public.users row.

insert into auth.users (id, aud, role, email, raw_app_meta_data, raw_user_meta_data, email_confirmed_at)
values
  ('00000000-0000-4000-8000-000000000001', 'authenticated', 'authenticated', 'demo@trademind.local',
   '{"provider": "email"}', '{"name": "Demo Trader"}', now()),
  ('00000000-0000-4000-8000-000000000002', 'authenticated', 'authenticated', 'rival@trademind.local',
   '{"provider": "email"}', '{"name": "Rival Trader"}', now());

update public.users set tier = 'pro', subscription_status = 'active'
 where id in ('00000000-0000-4000-8000-000000000001', '00000000-0000-4000-8000-000000000002');

insert into public.traders
  (id, user_id, name, description, signal_code, ai_instructions, timeframes, check_interval,
   reanalysis_interval, symbols)
values
  ('00000000-0000-4000-8000-0000000000a1', '00000000-0000-4000-8000-000000000001',
   'RSI dip buyer',
   'Buy BTC and ETH when the 1m RSI drops below 30 while the 5m trend is up.',
   $code$
def check_signal(symbol, ticker, klines):
    one_minute = klines["1m"]
    five_minute = klines["5m"]
    if len(get_closes(one_minute)) < 50 or len(get_closes(five_minute)) < 50:
        return False
    return get_latest_rsi(one_minute, 14) < 30 and get_latest_ema(five_minute, 20) > get_latest_ema(five_minute, 50)
$code$,
   'Judge whether the oversold dip is a buying opportunity within an uptrend. Prefer no_trade when volume is '
   'thin or the 5m trend is rolling over. For an entry, put the stop below the recent swing low and the '
   'target at about twice the risk.',
   array['1m', '5m'], '1m_close', '5m', array['BTCUSDT', 'ETHUSDT']),
  ('00000000-0000-4000-8000-0000000000b1', '00000000-0000-4000-8000-000000000002',
   'Breakout follower',
   'Go long when price closes above the 20-period Donchian high on the 5m chart.',
   $code$
def check_signal(symbol, ticker, klines):
    k = klines["5m"]
    upper, middle, lower = get_latest_donchian_channels(k, 20)
    return get_closes(k)[-1] >= upper
$code$,
   'Confirm the breakout with rising volume; avoid entries far above the channel.',
   array['5m'], '5m_close', '15m', array['BTCUSDT']);

-- What pg_cron's calls to Edge Functions read (migration 20261205042000): the local gateway and the Supabase
-- CLI's well-known local service_role key. A hosted project stores its own (see README, Deploy).
select vault.create_secret('http://127.0.0.1:54321', 'project_url', 'gateway URL for pg_net calls to Edge Functions')
 where not exists (select from vault.secrets where name = 'project_url');
select vault.create_secret(
  'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZS1kZW1vIiwicm9sZSI6InNlcnZpY2Vfcm9sZSIsImV4cCI6MTk4MzgxMjk5Nn0.'
  'EGIM96RAZx35lJzdJsyH-qQwv8Hdp7fsn3W0YpN81IU',
  'service_role_key', 'service_role key for pg_net calls to Edge Functions')
 where not exists (select from vault.secrets where name = 'service_role_key');
