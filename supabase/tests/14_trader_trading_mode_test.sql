-- traders.trading_mode: real only with stored Binance keys and a paid, active plan (PT403 otherwise, naming
-- what is missing); deleting the keys puts real traders back on paper.
begin;
select plan(8);

select tests.create_user('a0000000-0000-4000-8000-000000000001', 'a@example.com', 'pro');
select tests.create_user('b0000000-0000-4000-8000-000000000001', 'b@example.com', 'free');
update public.users set subscription_status = 'active' where id in
  ('a0000000-0000-4000-8000-000000000001', 'b0000000-0000-4000-8000-000000000001');
select tests.create_trader('a0000000-0000-4000-8000-000000000001', 'a trader', 'a1000000-0000-4000-8000-000000000001');
select tests.create_trader('b0000000-0000-4000-8000-000000000001', 'b trader', 'b1000000-0000-4000-8000-000000000001');

select is((select trading_mode::text from public.traders where id = 'a1000000-0000-4000-8000-000000000001'), 'paper',
  'a new trader trades on paper');

select tests.authenticate_as('a0000000-0000-4000-8000-000000000001');
select throws_ok($$update public.traders set trading_mode = 'real' where id = 'a1000000-0000-4000-8000-000000000001'$$,
  'PT403', 'real trading needs Binance API keys: store them first (trademind keys set)',
  'real mode without keys is refused, saying what is missing');
select public.set_binance_keys('abcdefghijklmnop1234', 'secretsecretsecret1234');
select lives_ok($$update public.traders set trading_mode = 'real' where id = 'a1000000-0000-4000-8000-000000000001'$$,
  'with keys on a paid active plan a trader may trade for real');

select tests.authenticate_as('b0000000-0000-4000-8000-000000000001');
select public.set_binance_keys('abcdefghijklmnop1234', 'secretsecretsecret1234');
select throws_like($$update public.traders set trading_mode = 'real' where id = 'b1000000-0000-4000-8000-000000000001'$$,
  'real trading needs a paid plan%free (active)', 'the free plan trades on paper only, even with keys');
select throws_ok($$insert into public.traders (user_id, name, signal_code, ai_instructions, timeframes, check_interval,
    reanalysis_interval, trading_mode) values ('b0000000-0000-4000-8000-000000000001', 'x', 'x', 'x', array['1m'], '1m',
    '5m', 'real')$$, 'PT403', null, 'the same rule holds when a trader is created');

select tests.clear_authentication();
update public.users set subscription_status = 'cancelled' where id = 'a0000000-0000-4000-8000-000000000001';
select tests.authenticate_as('a0000000-0000-4000-8000-000000000001');
select throws_like($$update public.traders set trading_mode = 'real' where id = 'a1000000-0000-4000-8000-000000000001'$$,
  '%pro (cancelled)', 'a cancelled subscription cannot switch a trader to real');
select lives_ok($$update public.traders set trading_mode = 'paper' where id = 'a1000000-0000-4000-8000-000000000001'$$,
  'going back to paper is always allowed');

select tests.clear_authentication();
update public.users set subscription_status = 'active' where id = 'a0000000-0000-4000-8000-000000000001';
update public.traders set trading_mode = 'real' where id = 'a1000000-0000-4000-8000-000000000001';
select tests.authenticate_as('a0000000-0000-4000-8000-000000000001');
select public.delete_binance_keys();
select results_eq($$select trading_mode::text from public.traders where id = 'a1000000-0000-4000-8000-000000000001'$$,
  $$values ('paper'::text)$$, 'deleting the keys puts real traders back on paper');

select * from finish();
rollback;
