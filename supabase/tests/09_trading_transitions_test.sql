-- Trading transitions: one transaction each, idempotent on worker ids, only for the machine's own user
-- (16_transition_preconditions_test.sql tests what each refuses).
begin;
select plan(17);

select tests.create_user('c0000000-0000-4000-8000-000000000001', 'c@example.com');
select tests.create_user('d0000000-0000-4000-8000-000000000001', 'd@example.com');
select tests.create_machine('c0000000-0000-4000-8000-000000000001', 'machine-c');
select tests.create_trader('c0000000-0000-4000-8000-000000000001', 'c trader', 'c1000000-0000-4000-8000-000000000001');
select tests.create_trader('d0000000-0000-4000-8000-000000000001', 'd trader', 'd1000000-0000-4000-8000-000000000001');
insert into public.signals (id, trader_id, user_id, symbol, trigger_price) values
  ('c2000000-0000-4000-8000-000000000001', 'c1000000-0000-4000-8000-000000000001',
   'c0000000-0000-4000-8000-000000000001', 'BTCUSDT', 40000),
  ('c2000000-0000-4000-8000-000000000002', 'c1000000-0000-4000-8000-000000000001',
   'c0000000-0000-4000-8000-000000000001', 'ETHUSDT', 2000),
  ('d2000000-0000-4000-8000-000000000001', 'd1000000-0000-4000-8000-000000000001',
   'd0000000-0000-4000-8000-000000000001', 'BTCUSDT', 40000);

select tests.authenticate_as_machine('c0000000-0000-4000-8000-000000000001', 'machine-c');
select is(public.trading_paper_balance(), 10000::numeric, 'the paper account starts at the user''s starting balance');
select is((public.trading_record_order('{"client_order_id": "tmentry1",
  "signal_id": "c2000000-0000-4000-8000-000000000001", "type": "paper", "side": "BUY", "order_type": "MARKET",
  "symbol": "BTCUSDT", "price": "40000", "quantity": "0.01", "intent": {"kind": "open"}}'::jsonb) ->> 'status'), 'pending',
  'an order is recorded pending, with its reference price, before it is sent');
select is((public.trading_record_order('{"client_order_id": "tmentry1",
  "signal_id": "c2000000-0000-4000-8000-000000000001", "type": "paper", "side": "BUY", "order_type": "MARKET",
  "symbol": "BTCUSDT", "price": "1", "quantity": "5"}'::jsonb) ->> 'quantity'), '0.01',
  'recording the same client_order_id again returns the first row');

select is((public.trading_apply_fill('{"client_order_id": "tmentry1", "price": "40000", "quantity": "0.01",
  "fee": "0.4", "fee_asset": "USDT", "expected_size": "0", "signal_status": "position_open",
  "paper_balance_delta": "-400.4",
  "position": {"id": "c4000000-0000-4000-8000-000000000001", "signal_id": "c2000000-0000-4000-8000-000000000001",
   "symbol": "BTCUSDT", "side": "long", "type": "paper", "entry_price": "40000", "size": "0.01",
   "stop_loss": "39000", "take_profit": "42000", "realized_pnl": "0", "fees_paid": "0.4", "status": "open",
   "metadata": {"cost_basis": "400", "entry_cost_total": "400"}}}'::jsonb) ->> 'applied')::boolean, true,
  'a fill opens the position');
select is((public.trading_apply_fill('{"client_order_id": "tmentry1", "price": "40000", "quantity": "0.01",
  "fee": "0.4", "fee_asset": "USDT", "expected_size": "0", "paper_balance_delta": "-400.4",
  "position": {"id": "c4000000-0000-4000-8000-000000000001", "signal_id": "c2000000-0000-4000-8000-000000000001",
   "symbol": "BTCUSDT", "side": "long", "type": "paper", "entry_price": "40000", "size": "0.01",
   "realized_pnl": "0", "fees_paid": "0.4", "status": "open"}}'::jsonb) ->> 'applied')::boolean, false,
  'the same fill again changes nothing');
select is(public.trading_paper_balance(), 9599.6::numeric, 'the cash moved once, exactly');
select results_eq($$select status::text from public.signals where id = 'c2000000-0000-4000-8000-000000000001'$$,
  $$values ('position_open'::text)$$, 'the signal moved with the fill');

select public.trading_record_order('{"client_order_id": "tmreduce1",
  "signal_id": "c2000000-0000-4000-8000-000000000001", "position_id": "c4000000-0000-4000-8000-000000000001",
  "type": "paper", "side": "SELL", "order_type": "MARKET", "symbol": "BTCUSDT", "price": "41000",
  "quantity": "0.005"}'::jsonb);
select throws_ok($$select public.trading_apply_fill('{"client_order_id": "tmreduce1", "price": "41000",
  "quantity": "0.005", "expected_size": "0.02",
  "position": {"id": "c4000000-0000-4000-8000-000000000001", "side": "long", "entry_price": "40000",
   "size": "0.005", "realized_pnl": "5", "fees_paid": "0.4", "status": "open"}}'::jsonb)$$, 'PT409', null,
  'a fill computed from a stale size is refused');
select throws_ok($$select public.trading_set_signal('c2000000-0000-4000-8000-000000000001', 'closed', 'no')$$,
  'PT409', null, 'a signal with an open position is not closed by hand');
select is((public.trading_mark_order('tmreduce1', 'failed', null, 'Filter failure: LOT_SIZE') ->> 'status'), 'failed',
  'a failed order keeps the venue''s message');
select is((public.trading_update_position('c4000000-0000-4000-8000-000000000001', '{"stop_loss": "39500"}'::jsonb)
  ->> 'stop_loss')::numeric, 39500::numeric, 'levels move on an open position');

-- An entry the paper balance cannot pay for.
select public.trading_record_order('{"client_order_id": "tmtoobig", "signal_id": "c2000000-0000-4000-8000-000000000002",
  "type": "paper", "side": "BUY", "order_type": "MARKET", "symbol": "ETHUSDT", "price": "2000", "quantity": "5"}'::jsonb);
select throws_ok($$select public.trading_apply_fill('{"client_order_id": "tmtoobig", "price": "2000", "quantity": "5",
  "fee": "0", "fee_asset": "USDT", "expected_size": "0", "paper_balance_delta": "-10000",
  "position": {"id": "c4000000-0000-4000-8000-000000000002", "signal_id": "c2000000-0000-4000-8000-000000000002",
   "side": "long", "entry_price": "2000", "size": "5", "realized_pnl": "0", "fees_paid": "0", "status": "open",
   "metadata": {"cost_basis": "10000", "entry_cost_total": "10000"}}}'::jsonb)$$, 'PT402', null,
  'the paper balance never goes below zero');

-- Another user's rows are out of reach, even through the functions.
select throws_ok($$select public.trading_set_signal('d2000000-0000-4000-8000-000000000001', 'closed', 'x')$$,
  'P0002', null, 'a machine cannot touch another user''s signal');
select throws_ok($$select public.trading_record_order('{"client_order_id": "tmother",
  "signal_id": "d2000000-0000-4000-8000-000000000001", "type": "paper", "side": "BUY", "order_type": "MARKET",
  "symbol": "BTCUSDT", "price": "40000", "quantity": "1"}'::jsonb)$$, 'P0002', null,
  'an order cannot point at another user''s signal');

select tests.authenticate_as('c0000000-0000-4000-8000-000000000001');
select throws_ok($$select public.trading_paper_balance()$$, '42501', null, 'a user cannot call the transitions');
select throws_ok($$select transitions.apply_fill('{}'::jsonb)$$, '42501', null,
  'nor their implementations (a schema PostgREST does not serve)');
select tests.authenticate_as_anon();
select throws_ok($$select public.trading_apply_fill('{}'::jsonb)$$, '42501', null, 'anon cannot call them either');

select * from finish();
rollback;
