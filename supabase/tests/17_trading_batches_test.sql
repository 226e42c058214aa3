-- Batched trading transitions: each element runs the single transition, in order, in one transaction; one
-- refused element refuses the whole batch; only the machine role may call them.
begin;
select plan(11);

select tests.create_user('b6000000-0000-4000-8000-000000000001', 'b6@example.com');
select tests.create_machine('b6000000-0000-4000-8000-000000000001', 'machine-b6');
select tests.create_trader('b6000000-0000-4000-8000-000000000001', 'b6 trader', 'b6100000-0000-4000-8000-000000000001');
insert into public.signals (id, trader_id, user_id, symbol, trigger_price) values
  ('b6200000-0000-4000-8000-000000000001', 'b6100000-0000-4000-8000-000000000001',
   'b6000000-0000-4000-8000-000000000001', 'BTCUSDT', 40000),
  ('b6200000-0000-4000-8000-000000000002', 'b6100000-0000-4000-8000-000000000001',
   'b6000000-0000-4000-8000-000000000001', 'ETHUSDT', 2000);

select tests.authenticate_as_machine('b6000000-0000-4000-8000-000000000001', 'machine-b6');
select is(jsonb_path_query_array(public.trading_record_orders('[
  {"trade": {"client_order_id": "tmbatch1", "signal_id": "b6200000-0000-4000-8000-000000000001", "type": "paper",
             "side": "BUY", "order_type": "MARKET", "symbol": "BTCUSDT", "price": "40000", "quantity": "0.01",
             "intent": {"kind": "open"}}},
  {"trade": {"client_order_id": "tmbatch2", "signal_id": "b6200000-0000-4000-8000-000000000002", "type": "paper",
             "side": "BUY", "order_type": "MARKET", "symbol": "ETHUSDT", "price": "2000", "quantity": "0.1",
             "intent": {"kind": "open"}}}
  ]'::jsonb), '$[*].client_order_id'), '["tmbatch1", "tmbatch2"]'::jsonb,
  'a batch records every order, its rows in the order of the calls');
select is(jsonb_path_query_array(public.trading_record_orders('[
  {"trade": {"client_order_id": "tmbatch2", "signal_id": "b6200000-0000-4000-8000-000000000002", "type": "paper",
             "side": "BUY", "order_type": "MARKET", "symbol": "ETHUSDT", "price": "1", "quantity": "5"}}]'::jsonb),
  '$[*].quantity'), '[0.1]'::jsonb, 'an order recorded before comes back as it was recorded');
select is(public.trading_record_orders('[]'::jsonb), '[]'::jsonb, 'an empty batch does nothing');

select throws_ok($$select public.trading_record_orders('[
  {"trade": {"client_order_id": "tmbatch3", "signal_id": "b6200000-0000-4000-8000-000000000001", "type": "paper",
             "side": "BUY", "order_type": "MARKET", "symbol": "BTCUSDT", "price": "40000", "quantity": "0.01",
             "intent": {"kind": "open"}}},
  {"trade": {"client_order_id": "tmbatch4", "signal_id": "b6200000-0000-4000-8000-000000000001", "type": "paper",
             "side": "BUY", "order_type": "MARKET", "symbol": "BTCUSDT", "quantity": "0.01"}}
  ]'::jsonb)$$, '22023', null, 'one refused call refuses the whole batch');
select is((select count(*) from public.trades where client_order_id = 'tmbatch3'), 0::bigint,
  'and the call before it in the batch did not stay recorded');

select is(jsonb_path_query_array(public.trading_apply_fills('[
  {"fill": {"client_order_id": "tmbatch1", "price": "40000", "quantity": "0.01", "fee": "0", "fee_asset": "USDT",
            "expected_size": "0", "signal_status": "position_open", "paper_balance_delta": "-400",
            "position": {"id": "b6400000-0000-4000-8000-000000000001",
                         "signal_id": "b6200000-0000-4000-8000-000000000001", "symbol": "BTCUSDT", "side": "long",
                         "type": "paper", "entry_price": "40000", "size": "0.01", "realized_pnl": "0",
                         "fees_paid": "0", "status": "open",
                         "metadata": {"cost_basis": "400", "entry_cost_total": "400"}}}},
  {"fill": {"client_order_id": "tmbatch2", "price": "2000", "quantity": "0.1", "fee": "0", "fee_asset": "USDT",
            "expected_size": "0", "signal_status": "position_open", "paper_balance_delta": "-200",
            "position": {"id": "b6400000-0000-4000-8000-000000000002",
                         "signal_id": "b6200000-0000-4000-8000-000000000002", "symbol": "ETHUSDT", "side": "long",
                         "type": "paper", "entry_price": "2000", "size": "0.1", "realized_pnl": "0",
                         "fees_paid": "0", "status": "open",
                         "metadata": {"cost_basis": "200", "entry_cost_total": "200"}}}}
  ]'::jsonb), '$[*].applied'), '[true, true]'::jsonb, 'a batch applies every fill');
select is(public.trading_paper_balance(), 9400::numeric, 'the cash moved once for each fill');
select is(jsonb_path_query_array(public.trading_apply_fills('[
  {"fill": {"client_order_id": "tmbatch1", "price": "40000", "quantity": "0.01", "fee": "0", "fee_asset": "USDT",
            "expected_size": "0", "paper_balance_delta": "-400",
            "position": {"id": "b6400000-0000-4000-8000-000000000001", "side": "long", "entry_price": "40000",
                         "size": "0.01", "realized_pnl": "0", "fees_paid": "0", "status": "open"}}}]'::jsonb),
  '$[*].applied'), '[false]'::jsonb, 'a fill applied before is not applied again');

select is(jsonb_path_query_array(public.trading_update_positions('[
  {"position_id": "b6400000-0000-4000-8000-000000000001", "changes": {"trailing_stop_reference_price": "40500"}},
  {"position_id": "b6400000-0000-4000-8000-000000000002", "changes": {"stop_loss": "1900"}}
  ]'::jsonb), '$[*].id'),
  '["b6400000-0000-4000-8000-000000000001", "b6400000-0000-4000-8000-000000000002"]'::jsonb,
  'a batch of position updates changes each position');

select tests.authenticate_as('b6000000-0000-4000-8000-000000000001');
select throws_ok($$select public.trading_record_orders('[]'::jsonb)$$, '42501', null,
  'a user cannot call the batched transitions');
select tests.authenticate_as_anon();
select throws_ok($$select public.trading_apply_fills('[]'::jsonb)$$, '42501', null, 'anon cannot call them either');

select * from finish();
rollback;
