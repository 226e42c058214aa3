-- The worker's events notify the trader in the same transaction: new signal, position opened and closed (with
-- reason and PnL), failed order, trader stopped by an error; exactly once each.
begin;
select plan(6);

select tests.create_user('a1830000-0000-4000-8000-000000000001', 't-a@example.com');
insert into public.traders (id, user_id, name, signal_code, ai_instructions, timeframes, check_interval, reanalysis_interval)
values ('a1830000-0000-4000-8000-0000000000f1', 'a1830000-0000-4000-8000-000000000001', 'Dip buyer',
        'def check_signal(symbol, ticker, klines):\n    return False\n', 'x', '{1h}', '1h_close', '1h');
insert into public.signals (id, trader_id, user_id, symbol, trigger_price)
values ('a1830000-0000-4000-8000-0000000000f2', 'a1830000-0000-4000-8000-0000000000f1',
        'a1830000-0000-4000-8000-000000000001', 'BTCUSDT', 42000);
insert into public.positions (id, signal_id, user_id, symbol, side, entry_price, size, stop_loss, take_profit)
values ('a1830000-0000-4000-8000-0000000000f3', 'a1830000-0000-4000-8000-0000000000f2',
        'a1830000-0000-4000-8000-000000000001', 'BTCUSDT', 'long', 42000, 0.01, 41000, 44000);
update public.positions set status = 'closed', size = 0, exit_price = 44000, pnl = 20, pnl_percent = 4.76,
       closed_at = now(), close_reason = 'take_profit'
 where id = 'a1830000-0000-4000-8000-0000000000f3';
update public.positions set close_reason = 'take_profit' where id = 'a1830000-0000-4000-8000-0000000000f3';
insert into public.trades (user_id, signal_id, type, side, symbol, quantity, status, client_order_id, error_message)
values ('a1830000-0000-4000-8000-000000000001', 'a1830000-0000-4000-8000-0000000000f2', 'paper', 'BUY', 'BTCUSDT',
        0.01, 'failed', 'tm-test-failed-1', 'insufficient balance');
update public.traders set status = 'error', error_message = 'signal code stopped: timeout'
 where id = 'a1830000-0000-4000-8000-0000000000f1';

select results_eq(
  $$select kind::text, title from public.notifications where user_id = 'a1830000-0000-4000-8000-000000000001'
     order by kind$$,
  $$values ('position_closed', 'Closed long BTCUSDT: take_profit'), ('position_opened', 'Opened long BTCUSDT'),
           ('signal_new', 'New signal: BTCUSDT'), ('trade_failed', 'BUY BTCUSDT order failed'),
           ('trader_error', 'Trader stopped: Dip buyer')$$,
  'each event notifies once (a later update of the closed position does not repeat it)');
select is((select body from public.notifications where kind = 'position_closed'
            and user_id = 'a1830000-0000-4000-8000-000000000001'), 'Exit 44000, PnL 20.00 (4.76%).',
  'the close says the PnL');
select is((select body from public.notifications where kind = 'trade_failed'
            and user_id = 'a1830000-0000-4000-8000-000000000001'), 'insufficient balance', 'the failure says why');
select is((select body from public.notifications where kind = 'trader_error'
            and user_id = 'a1830000-0000-4000-8000-000000000001'), 'signal code stopped: timeout',
  'the trader error says why');
select is((select data ->> 'symbol' from public.notifications where kind = 'signal_new'
            and user_id = 'a1830000-0000-4000-8000-000000000001'), 'BTCUSDT', 'the data carries the ids and symbol');

update public.traders set error_message = 'still broken' where id = 'a1830000-0000-4000-8000-0000000000f1';
select is((select count(*) from public.notifications where kind = 'trader_error'
            and user_id = 'a1830000-0000-4000-8000-000000000001'), 1::bigint, 'a trader already in error is not re-announced');

select * from finish();
rollback;
