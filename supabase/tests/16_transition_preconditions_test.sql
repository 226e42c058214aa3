-- What the transition functions refuse: a signal moving backwards, a fill its order does not allow, a paper
-- book or cash the fill does not produce, a change beyond a position's protection; client order ids per user
-- with no function telling whether another user's id exists; counters set by the database only.
begin;
select plan(36);

select tests.create_user('e0000000-0000-4000-8000-000000000001', 'e@example.com');
select tests.create_user('f0000000-0000-4000-8000-000000000001', 'f@example.com');
select tests.create_machine('e0000000-0000-4000-8000-000000000001', 'machine-e');
select tests.create_machine('f0000000-0000-4000-8000-000000000001', 'machine-f');
insert into public.fly_machines (user_id, machine_id, status, destroyed_at)
values ('e0000000-0000-4000-8000-000000000001', 'machine-e-old', 'destroyed', now());
select tests.create_trader('e0000000-0000-4000-8000-000000000001', 'e trader', 'e1000000-0000-4000-8000-000000000001');
select tests.create_trader('f0000000-0000-4000-8000-000000000001', 'f trader', 'f1000000-0000-4000-8000-000000000001');
insert into public.signals (id, trader_id, user_id, symbol, status, trigger_price, closed_at) values
  ('e2000000-0000-4000-8000-000000000001', 'e1000000-0000-4000-8000-000000000001',
   'e0000000-0000-4000-8000-000000000001', 'BTCUSDT', 'watching', 100, null),
  ('e2000000-0000-4000-8000-000000000002', 'e1000000-0000-4000-8000-000000000001',
   'e0000000-0000-4000-8000-000000000001', 'ETHUSDT', 'closed', 10, now()),
  ('f2000000-0000-4000-8000-000000000001', 'f1000000-0000-4000-8000-000000000001',
   'f0000000-0000-4000-8000-000000000001', 'BTCUSDT', 'new', 100, null);

-- Signals ------------------------------------------------------------------------------------------------
select tests.authenticate_as_machine('e0000000-0000-4000-8000-000000000001', 'machine-e');
select is(public.trading_create_signal('e2000000-0000-4000-8000-000000000009', 'e1000000-0000-4000-8000-000000000001',
  'SOLUSDT', 150), 'created', 'a machine creates a signal through trading_create_signal');
select is(public.trading_create_signal('e2000000-0000-4000-8000-000000000009', 'e1000000-0000-4000-8000-000000000001',
  'SOLUSDT', 150), 'created', 'the same signal again is the one created');
select is(public.trading_create_signal('e2000000-0000-4000-8000-00000000000a', 'e1000000-0000-4000-8000-000000000001',
  'SOLUSDT', 151), 'already_live', 'a second live signal for the trader and symbol is already live');
select throws_ok($$select public.trading_create_signal(gen_random_uuid(), 'f1000000-0000-4000-8000-000000000001',
  'SOLUSDT', 1)$$, 'P0002', 'no trader f1000000-0000-4000-8000-000000000001',
  'another user''s trader is no trader of this machine''s');
select throws_ok($$select public.trading_set_signal('e2000000-0000-4000-8000-000000000001', 'new')$$, 'PT409', null,
  'a signal never goes back to new');
select throws_ok($$select public.trading_set_signal('e2000000-0000-4000-8000-000000000002', 'watching')$$, 'PT409', null,
  'a closed signal never reopens');
select throws_ok($$select public.trading_set_signal('e2000000-0000-4000-8000-000000000001', 'position_open')$$, 'PT409',
  null, 'position_open needs an open position (a fill moves it there)');
select is((public.trading_set_signal('e2000000-0000-4000-8000-000000000001', 'closed', 'stale', null, 'new')
  ->> 'changed')::boolean, false, 'a close meant for a new signal leaves a watching one alone');
select is((select status::text from public.signals where id = 'e2000000-0000-4000-8000-000000000001'), 'watching',
  'it is still watching');

-- Orders and fills ---------------------------------------------------------------------------------------
select throws_ok($$select public.trading_record_order('{"client_order_id": "tmnoprice",
  "signal_id": "e2000000-0000-4000-8000-000000000001", "type": "paper", "side": "BUY", "order_type": "MARKET",
  "symbol": "BTCUSDT", "quantity": "1"}'::jsonb)$$, '22023', null,
  'an order is recorded with the price it allows');
select throws_ok($$select public.trading_record_order('{"client_order_id": "tmwrongsym",
  "signal_id": "e2000000-0000-4000-8000-000000000001", "type": "paper", "side": "BUY", "order_type": "MARKET",
  "symbol": "ETHUSDT", "price": "10", "quantity": "1"}'::jsonb)$$, '22023', null,
  'an order is for its signal''s symbol');
select public.trading_record_order('{"client_order_id": "tmbuy", "signal_id": "e2000000-0000-4000-8000-000000000001",
  "type": "paper", "side": "BUY", "order_type": "MARKET", "symbol": "BTCUSDT", "price": "100", "quantity": "2",
  "intent": {"kind": "open", "position_id": "e4000000-0000-4000-8000-000000000001"}}'::jsonb);

create function pg_temp.entry(price text, quantity text, size text, cost text, delta text,
                              position_id text default 'e4000000-0000-4000-8000-000000000001')
returns jsonb language sql as $$
  select jsonb_build_object('client_order_id', 'tmbuy', 'price', price, 'quantity', quantity, 'fee', '0',
    'fee_asset', 'USDT', 'expected_size', '0', 'signal_status', 'position_open', 'paper_balance_delta', delta,
    'position', jsonb_build_object('id', position_id, 'signal_id', 'e2000000-0000-4000-8000-000000000001',
      'side', 'long', 'entry_price', price, 'size', size, 'realized_pnl', '0', 'fees_paid', '0', 'status', 'open',
      'metadata', jsonb_build_object('cost_basis', cost, 'entry_cost_total', cost)))
$$;
select throws_ok($$select public.trading_apply_fill(pg_temp.entry('99', '2', '2', '198', '-198'))$$, '22023',
  'paper order tmbuy (BUY at 100) allows a fill from 100 to 105.00, not 99',
  'a paper BUY never fills better than its reference price');
select throws_ok($$select public.trading_apply_fill(pg_temp.entry('106', '2', '2', '212', '-212'))$$, '22023', null,
  'nor further than the slippage the database allows');
select throws_ok($$select public.trading_apply_fill(pg_temp.entry('100', '3', '3', '300', '-300'))$$, '22023', null,
  'a fill is never more than the order''s quantity');
select throws_ok($$select public.trading_apply_fill(pg_temp.entry('100', '2', '20', '200', '-200'))$$, '22023',
  'the position''s size is 20, the book says 2', 'the position follows from the fill, not from the caller');
select throws_ok($$select public.trading_apply_fill(pg_temp.entry('100', '2', '2', '200', '1000000'))$$, '22023',
  'the paper balance change is 1000000, the book says -200', 'the paper balance is never set by the caller');
select throws_ok($$select public.trading_apply_fill(pg_temp.entry('100', '2', '2', '200', '-200',
  'e4000000-0000-4000-8000-0000000000ff'))$$, '22023', null, 'an entry opens the position its order was recorded for');
select is((public.trading_apply_fill(pg_temp.entry('100.05', '2', '2', '200.1', '-200.1')) ->> 'paper_balance')::numeric,
  9799.9::numeric, 'a fill within the order''s price opens the position and pays for it');

select public.trading_record_order('{"client_order_id": "tmsell", "signal_id": "e2000000-0000-4000-8000-000000000001",
  "position_id": "e4000000-0000-4000-8000-000000000001", "type": "paper", "side": "SELL", "order_type": "MARKET",
  "symbol": "BTCUSDT", "price": "110", "quantity": "2"}'::jsonb);
create function pg_temp.close(realized text, delta text) returns jsonb language sql as $$
  select jsonb_build_object('client_order_id', 'tmsell', 'price', '110', 'quantity', '2', 'fee', '0.22',
    'fee_asset', 'USDT', 'expected_size', '2', 'realized_pnl', realized, 'signal_status', 'closed',
    'signal_close_reason', 'position closed: take_profit', 'paper_balance_delta', delta,
    'position', jsonb_build_object('id', 'e4000000-0000-4000-8000-000000000001',
      'signal_id', 'e2000000-0000-4000-8000-000000000001', 'side', 'long', 'entry_price', '100.05', 'size', '0',
      'realized_pnl', realized, 'fees_paid', '0.22', 'status', 'closed', 'exit_price', '110',
      'close_reason', 'take_profit', 'metadata', jsonb_build_object('cost_basis', '0', 'entry_cost_total', '200.1')))
$$;
select throws_ok($$select public.trading_apply_fill(pg_temp.close('1000', '1199.78'))$$, '22023', null,
  'a close realises what the book says, not what the caller claims');
select is((public.trading_apply_fill(pg_temp.close('19.9', '219.78')) ->> 'paper_balance')::numeric, 10019.68::numeric,
  'the close returns the cost plus the realised PnL, less the fee');
select results_eq($$select status::text, size, pnl, pnl_percent from public.positions
                     where id = 'e4000000-0000-4000-8000-000000000001'$$,
  $$values ('closed'::text, 0::numeric, 19.68::numeric, 9.83508246::numeric)$$,
  'the closed position''s PnL is the database''s');
select is((select status::text from public.signals where id = 'e2000000-0000-4000-8000-000000000001'), 'closed',
  'the signal closed with its position');
select throws_ok($$select public.trading_update_position('e4000000-0000-4000-8000-000000000001', '{"stop_loss": "1"}')$$,
  'PT409', null, 'a closed position''s protection does not move');

-- Client order ids are per user, and no function tells whether another user's id exists ------------------
select tests.authenticate_as_machine('f0000000-0000-4000-8000-000000000001', 'machine-f');
select is((public.trading_record_order('{"client_order_id": "tmbuy", "signal_id": "f2000000-0000-4000-8000-000000000001",
  "type": "paper", "side": "BUY", "order_type": "MARKET", "symbol": "BTCUSDT", "price": "100", "quantity": "1"}'::jsonb)
  ->> 'status'), 'pending', 'another user records its own order under an id E already used');
select is((select count(*) from public.trades where client_order_id = 'tmbuy'), 1::bigint, 'and sees only its own');
create function pg_temp.refusal(statement text) returns text language plpgsql as $$
begin
  execute statement;
  return 'no error';
exception when others then
  return sqlstate || ': ' || regexp_replace(sqlerrm, '[0-9a-f-]{36}|tm[a-z]+', '<id>', 'g');
end
$$;
select is(pg_temp.refusal($$select public.trading_apply_fill('{"client_order_id": "tmsell", "price": "1", "quantity": "1"}')$$),
  pg_temp.refusal($$select public.trading_apply_fill('{"client_order_id": "tmnowhere", "price": "1", "quantity": "1"}')$$),
  'filling another user''s order id answers as for an id nobody has');
select is(pg_temp.refusal($$select public.trading_mark_order('tmsell', 'cancelled')$$),
  pg_temp.refusal($$select public.trading_mark_order('tmnowhere', 'cancelled')$$),
  'so does marking it');
select is(pg_temp.refusal($$select public.trading_record_order('{"client_order_id": "tmx", "type": "paper", "side": "SELL",
    "order_type": "MARKET", "symbol": "BTCUSDT", "price": "1", "quantity": "1",
    "position_id": "e4000000-0000-4000-8000-000000000001"}')$$),
  pg_temp.refusal($$select public.trading_record_order('{"client_order_id": "tmx", "type": "paper", "side": "SELL",
    "order_type": "MARKET", "symbol": "BTCUSDT", "price": "1", "quantity": "1",
    "position_id": "e4000000-0000-4000-8000-0000000000ee"}')$$),
  'and an order against another user''s position');
select is(pg_temp.refusal($$select public.trading_set_signal('e2000000-0000-4000-8000-000000000001', 'closed')$$),
  pg_temp.refusal($$select public.trading_set_signal('e2000000-0000-4000-8000-0000000000ee', 'closed')$$),
  'and moving another user''s signal');

-- Positions: only the protection changes by hand ---------------------------------------------------------
select tests.clear_authentication();
insert into public.positions (id, signal_id, user_id, symbol, side, entry_price, size, metadata)
values ('f4000000-0000-4000-8000-000000000001', 'f2000000-0000-4000-8000-000000000001',
        'f0000000-0000-4000-8000-000000000001', 'BTCUSDT', 'long', 100, 1, '{"cost_basis": "100"}');
select tests.authenticate_as_machine('f0000000-0000-4000-8000-000000000001', 'machine-f');
select throws_ok($$select public.trading_update_position('f4000000-0000-4000-8000-000000000001',
  '{"metadata": {"cost_basis": "1"}}')$$, '22023', null, 'a position''s cost basis is the ledger''s');
select throws_ok($$select public.trading_update_position('f4000000-0000-4000-8000-000000000001',
  '{"realized_pnl": "1000"}')$$, '22023', null, 'so is its PnL');
select is((public.trading_update_position('f4000000-0000-4000-8000-000000000001',
  '{"stop_loss": "95", "metadata": {"protection": {"generation": 1}}}') -> 'metadata' ->> 'cost_basis'), '100',
  'its protection moves');

-- A destroyed machine's token, and the user, move nothing ---------------------------------------------------
select tests.authenticate_as_machine('e0000000-0000-4000-8000-000000000001', 'machine-e-old');
select throws_ok($$select public.trading_paper_balance()$$, '42501', null,
  'a destroyed machine''s token calls no transition');

-- Counters are the database's -------------------------------------------------------------------------------
select tests.authenticate_as('e0000000-0000-4000-8000-000000000001');
select throws_ok($$insert into public.traders (user_id, name, signal_code, ai_instructions, timeframes, check_interval,
                                               reanalysis_interval, signal_code_version)
                   values ('e0000000-0000-4000-8000-000000000001', 'maxed', 'x', 'x', '{1h}', '1h', '1h', 2147483647)$$,
  '42501', null, 'a user cannot set signal_code_version on insert');
select throws_ok($$insert into public.cost_budgets (user_id, monthly_budget_usd, updated_at)
                   values ('e0000000-0000-4000-8000-000000000001', 10, '2000-01-01')$$,
  '42501', null, 'nor the timestamps of its own settings');
select tests.clear_authentication();
insert into public.traders (user_id, name, signal_code, ai_instructions, timeframes, check_interval,
                            reanalysis_interval, signal_code_version)
values ('e0000000-0000-4000-8000-000000000001', 'maxed', 'x', 'x', '{1h}', '1h', '1h', 2147483647);
select is((select signal_code_version from public.traders where name = 'maxed'), 1,
  'a trader starts at signal_code_version 1 whoever inserts it');

select * from finish();
rollback;
