-- backtests: saved by the user who ran them (for their own traders, or for an unsaved strategy), read only
-- by them, never changed, deletable; the machine role cannot touch them. Traders carry the strategy's
-- default stop and target.
begin;
select plan(13);

select tests.create_user('a0000000-0000-4000-8000-000000000001', 'a@example.com');
select tests.create_user('b0000000-0000-4000-8000-000000000001', 'b@example.com');
select tests.create_machine('a0000000-0000-4000-8000-000000000001', 'machine-a');
select tests.create_trader('a0000000-0000-4000-8000-000000000001', 'mine', 'a1000000-0000-4000-8000-000000000001');
select tests.create_trader('b0000000-0000-4000-8000-000000000001', 'theirs', 'b1000000-0000-4000-8000-000000000001');

prepare saved(uuid) as
  insert into public.backtests (trader_id, trader_name, symbols, market_from, market_to, ai, fee_rate,
    slippage_rate, starting_balance_usd, final_equity_usd, net_pnl_usd, trades, win_rate, max_drawdown_percent,
    sharpe, exposure, report)
  values ($1, 'RSI dip', '{BTCUSDT}', '2021-04-04T20:00:00Z', '2023-12-30T19:00:00Z', 'off', 0.001, 0.0005,
    10000, 9800.5, -199.5, 12, 0.25, 4.2, -0.3, 0.1, '{"trade_list": []}')
  returning user_id::text;

select tests.authenticate_as('a0000000-0000-4000-8000-000000000001');
select results_eq($$execute saved('a1000000-0000-4000-8000-000000000001')$$,
  $$values ('a0000000-0000-4000-8000-000000000001'::text)$$, 'a user saves a backtest of their trader, as themselves');
select results_eq($$execute saved(null)$$, $$values ('a0000000-0000-4000-8000-000000000001'::text)$$,
  'and of a strategy not saved as a trader');
select throws_ok($$execute saved('b1000000-0000-4000-8000-000000000001')$$, '42501', null,
  'not of another user''s trader');
select throws_ok($$insert into public.backtests (user_id, trader_name, symbols, market_from, market_to, ai,
    fee_rate, slippage_rate, starting_balance_usd, final_equity_usd, net_pnl_usd, trades, max_drawdown_percent,
    exposure, report) values ('b0000000-0000-4000-8000-000000000001', 'x', '{BTCUSDT}', now(), now() + interval '1 day',
    'off', 0, 0, 1, 1, 0, 0, 0, 0, '{}')$$, '42501', null, 'nor in another user''s name');
select throws_ok($$update public.backtests set net_pnl_usd = 1000000$$, '42501', null,
  'a saved result is never changed');
select is((select count(*) from public.backtests), 2::bigint, 'the user reads their backtests');

select tests.authenticate_as('b0000000-0000-4000-8000-000000000001');
select is((select count(*) from public.backtests), 0::bigint, 'another user reads none of them');
select tests.authenticate_as_machine('a0000000-0000-4000-8000-000000000001', 'machine-a');
select throws_ok($$select count(*) from public.backtests$$, '42501', null, 'the user''s machine reads none');
select tests.authenticate_as_anon();
select throws_ok($$select count(*) from public.backtests$$, '42501', null, 'anon reads none');

select tests.authenticate_as('a0000000-0000-4000-8000-000000000001');
delete from public.backtests where trader_id is null;
select is((select count(*) from public.backtests), 1::bigint, 'the user deletes a backtest of theirs');

select results_eq(format($$select default_stop_loss_percent, default_take_profit_percent from public.traders
                           where id = %L$$, 'a1000000-0000-4000-8000-000000000001'),
  $$values (2::numeric, 4::numeric)$$, 'a strategy stops out at 2% and takes profit at 4% unless told');
update public.traders set default_stop_loss_percent = 1.5, default_take_profit_percent = 6 where id = 'a1000000-0000-4000-8000-000000000001';
select results_eq(format('select default_stop_loss_percent from public.traders where id = %L', 'a1000000-0000-4000-8000-000000000001'),
  $$values (1.5::numeric)$$, 'the user sets their strategy''s stop and target');
select throws_ok(format('update public.traders set default_stop_loss_percent = 0 where id = %L', 'a1000000-0000-4000-8000-000000000001'),
  '23514', null, 'a stop of 0% is refused');

select * from finish();
rollback;
