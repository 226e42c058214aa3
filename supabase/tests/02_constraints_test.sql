-- Every CHECK constraint, unique rule and cross-user foreign key rejects what it should and only that.
begin;
select plan(89);

-- Fixture: users A and B, a trader each; A has a signal with an open position and a watching signal.
select tests.create_user('a0000000-0000-4000-8000-000000000001', 'a@example.com');
select tests.create_user('b0000000-0000-4000-8000-000000000001', 'b@example.com');
select tests.create_trader('a0000000-0000-4000-8000-000000000001', 'A', 'a0000000-0000-4000-8000-0000000000a1');
select tests.create_trader('b0000000-0000-4000-8000-000000000001', 'B', 'b0000000-0000-4000-8000-0000000000b1');
insert into public.signals (id, trader_id, user_id, symbol, status, trigger_price) values
  ('a0000000-0000-4000-8000-0000000000c1', 'a0000000-0000-4000-8000-0000000000a1',
   'a0000000-0000-4000-8000-000000000001', 'BTCUSDT', 'position_open', 100),
  ('a0000000-0000-4000-8000-0000000000c2', 'a0000000-0000-4000-8000-0000000000a1',
   'a0000000-0000-4000-8000-000000000001', 'ETHUSDT', 'watching', 10),
  ('b0000000-0000-4000-8000-0000000000c1', 'b0000000-0000-4000-8000-0000000000b1',
   'b0000000-0000-4000-8000-000000000001', 'BTCUSDT', 'position_open', 100),
  ('b0000000-0000-4000-8000-0000000000c2', 'b0000000-0000-4000-8000-0000000000b1',
   'b0000000-0000-4000-8000-000000000001', 'ETHUSDT', 'watching', 10);
insert into public.positions (id, signal_id, user_id, symbol, side, entry_price, size) values
  ('a0000000-0000-4000-8000-0000000000d1', 'a0000000-0000-4000-8000-0000000000c1',
   'a0000000-0000-4000-8000-000000000001', 'BTCUSDT', 'long', 100, 1),
  ('b0000000-0000-4000-8000-0000000000d1', 'b0000000-0000-4000-8000-0000000000c1',
   'b0000000-0000-4000-8000-000000000001', 'BTCUSDT', 'long', 100, 1);
select tests.create_machine('a0000000-0000-4000-8000-000000000001', 'machine-a');

-- Valid rows as JSON, to be broken one field at a time.
create function pg_temp.trader(overrides jsonb default '{}') returns jsonb language sql as $$
  select '{"user_id": "a0000000-0000-4000-8000-000000000001", "name": "t",
           "signal_code": "def check_signal(symbol, ticker, klines): return False",
           "ai_instructions": "Be careful.", "timeframes": ["1m"], "check_interval": "1m",
           "reanalysis_interval": "5m"}'::jsonb || overrides $$;
create function pg_temp.signal(overrides jsonb default '{}') returns jsonb language sql as $$
  select '{"trader_id": "a0000000-0000-4000-8000-0000000000a1", "user_id": "a0000000-0000-4000-8000-000000000001",
           "symbol": "SOLUSDT", "trigger_price": 100}'::jsonb || overrides $$;
create function pg_temp.position(overrides jsonb default '{}') returns jsonb language sql as $$
  select '{"signal_id": "a0000000-0000-4000-8000-0000000000c2", "user_id": "a0000000-0000-4000-8000-000000000001",
           "symbol": "ETHUSDT", "side": "long", "entry_price": 10, "size": 2}'::jsonb || overrides $$;
create function pg_temp.trade(overrides jsonb default '{}') returns jsonb language sql as $$
  select '{"position_id": "a0000000-0000-4000-8000-0000000000d1", "signal_id": "a0000000-0000-4000-8000-0000000000c1",
           "user_id": "a0000000-0000-4000-8000-000000000001", "type": "paper", "side": "BUY", "symbol": "BTCUSDT",
           "price": 100, "quantity": 1, "status": "filled", "client_order_id": "tm-entry-1"}'::jsonb || overrides $$;
create function pg_temp.analysis(overrides jsonb default '{}') returns jsonb language sql as $$
  select '{"signal_id": "a0000000-0000-4000-8000-0000000000c1", "trader_id": "a0000000-0000-4000-8000-0000000000a1",
           "user_id": "a0000000-0000-4000-8000-000000000001", "decision": "watch", "reasoning": "Wait for volume.",
           "confidence": 50}'::jsonb || overrides $$;
create function pg_temp.machine(overrides jsonb default '{}') returns jsonb language sql as $$
  select '{"user_id": "b0000000-0000-4000-8000-000000000001", "machine_id": "machine-b", "status": "running",
           "region": "iad", "memory_mb": 256}'::jsonb || overrides $$;
create function pg_temp.rejects(target text, row_values jsonb, rule text, description text) returns text
language sql as $$
  select throws_like(format('select tests.insert_row(%L, %L)', target, row_values), '%' || rule || '%', description)
$$;

-- users
select throws_like($$update public.users set email = 'not-an-email' where email = 'a@example.com'$$,
  '%users_email_format%', 'users: email must look like an address');
select throws_like($$update public.users set paper_starting_balance_usd = 0 where email = 'a@example.com'$$,
  '%users_paper_starting_balance_positive%', 'users: paper starting balance must be positive');
select throws_like($$update public.users set preferred_region = 'Frankfurt' where email = 'a@example.com'$$,
  '%users_preferred_region_format%', 'users: region is a three-letter Fly region code');
select throws_like($$update public.users set email = 'A@EXAMPLE.COM' where email = 'b@example.com'$$,
  '%users_email_key%', 'users: emails are unique regardless of case');

-- fly_machines
select pg_temp.rejects('public.fly_machines', pg_temp.machine('{"machine_id": "bad id!"}'),
  'fly_machines_machine_id_format', 'fly_machines: machine_id is a Fly id');
select pg_temp.rejects('public.fly_machines', pg_temp.machine('{"memory_mb": 0}'),
  'fly_machines_memory_mb_positive', 'fly_machines: memory must be positive');
select pg_temp.rejects('public.fly_machines', pg_temp.machine('{"region": "IAD1"}'),
  'fly_machines_region_format', 'fly_machines: region is a three-letter code');
select pg_temp.rejects('public.fly_machines', pg_temp.machine('{"status": "destroyed"}'),
  'fly_machines_destroyed_at_matches_status', 'fly_machines: a destroyed machine needs destroyed_at');
select pg_temp.rejects('public.fly_machines', pg_temp.machine('{"destroyed_at": "2026-01-01T00:00:00Z"}'),
  'fly_machines_destroyed_at_matches_status', 'fly_machines: only a destroyed machine has destroyed_at');
select pg_temp.rejects('public.fly_machines',
  pg_temp.machine('{"user_id": "a0000000-0000-4000-8000-000000000001", "machine_id": "machine-a2"}'),
  'fly_machines_one_live_per_user', 'fly_machines: one live machine per user');
select lives_ok(format('select tests.insert_row(%L, %L)', 'public.fly_machines',
  pg_temp.machine('{"user_id": "a0000000-0000-4000-8000-000000000001", "machine_id": "machine-a-old",
                    "status": "destroyed", "destroyed_at": "2026-01-01T00:00:00Z"}')),
  'fly_machines: destroyed machines do not count against the one live machine');
select lives_ok(format('select tests.insert_row(%L, %L)', 'public.fly_machines', pg_temp.machine()),
  'fly_machines: a valid machine is accepted');

-- traders
select pg_temp.rejects('public.traders', pg_temp.trader('{"name": "   "}'), 'traders_name_length',
  'traders: name must not be blank');
select pg_temp.rejects('public.traders', pg_temp.trader(jsonb_build_object('name', repeat('n', 101))),
  'traders_name_length', 'traders: name is at most 100 characters');
select pg_temp.rejects('public.traders', pg_temp.trader(jsonb_build_object('description', repeat('d', 4001))),
  'traders_description_length', 'traders: description is at most 4000 characters');
select pg_temp.rejects('public.traders', pg_temp.trader('{"signal_code": ""}'), 'traders_signal_code_length',
  'traders: signal code must not be empty');
select pg_temp.rejects('public.traders', pg_temp.trader(jsonb_build_object('signal_code', repeat('x', 100001))),
  'traders_signal_code_length', 'traders: signal code is at most 100k characters');
select tests.insert_row('public.traders', pg_temp.trader('{"name": "zeroed", "signal_code_version": 0}'));
select is((select signal_code_version from public.traders where name = 'zeroed'), 1,
  'traders: signal_code_version starts at 1 whatever the insert says (a trigger sets it)');
select pg_temp.rejects('public.traders', pg_temp.trader('{"ai_instructions": ""}'),
  'traders_ai_instructions_length', 'traders: AI instructions must not be empty');
select pg_temp.rejects('public.traders', pg_temp.trader('{"timeframes": []}'), 'traders_timeframes_valid',
  'traders: at least one timeframe');
select pg_temp.rejects('public.traders', pg_temp.trader('{"timeframes": ["1m", "7m"]}'), 'traders_timeframes_valid',
  'traders: timeframes are Binance intervals');
select pg_temp.rejects('public.traders', pg_temp.trader('{"timeframes": ["1m", null]}'), 'traders_timeframes_valid',
  'traders: no null timeframe');
select pg_temp.rejects('public.traders', pg_temp.trader('{"check_interval": "2s"}'), 'traders_check_interval_valid',
  'traders: check_interval is a supported timer');
select pg_temp.rejects('public.traders', pg_temp.trader('{"check_interval": "7m_close"}'),
  'traders_check_interval_valid', 'traders: a candle-close timer names a real timeframe');
select pg_temp.rejects('public.traders', pg_temp.trader('{"reanalysis_interval": "forever"}'),
  'traders_reanalysis_interval_valid', 'traders: reanalysis_interval is a supported timer');
select pg_temp.rejects('public.traders', pg_temp.trader('{"symbols": ["btcusdt"]}'), 'traders_symbols_valid',
  'traders: symbols are upper-case Binance symbols');
select pg_temp.rejects('public.traders', pg_temp.trader('{"symbols": ["BTCUSDT", "BTCUSDT"]}'),
  'traders_symbols_valid', 'traders: symbols are distinct');
select pg_temp.rejects('public.traders', pg_temp.trader('{"symbols": []}'), 'traders_symbols_valid',
  'traders: an empty symbol list is not allowed (NULL means the default universe)');
select pg_temp.rejects('public.traders',
  pg_temp.trader('{"risk": {"max_position_size_usd": 100, "max_open_positions": 3}}'),
  'traders_risk_valid', 'traders: risk needs every setting');
select pg_temp.rejects('public.traders',
  pg_temp.trader('{"risk": {"max_position_size_usd": 100, "max_open_positions": 3, "daily_loss_limit_usd": 5, "yolo": true}}'),
  'traders_risk_valid', 'traders: risk has no unknown settings');
select pg_temp.rejects('public.traders',
  pg_temp.trader('{"risk": {"max_position_size_usd": -1, "max_open_positions": 3, "daily_loss_limit_usd": 5}}'),
  'traders_risk_valid', 'traders: max position size is positive');
select pg_temp.rejects('public.traders',
  pg_temp.trader('{"risk": {"max_position_size_usd": 100, "max_open_positions": 2.5, "daily_loss_limit_usd": 5}}'),
  'traders_risk_valid', 'traders: max open positions is a whole number');
select pg_temp.rejects('public.traders',
  pg_temp.trader('{"risk": {"max_position_size_usd": "100", "max_open_positions": 3, "daily_loss_limit_usd": 5}}'),
  'traders_risk_valid', 'traders: risk values are numbers, not strings');
select pg_temp.rejects('public.traders',
  pg_temp.trader('{"risk": {"max_position_size_usd": 100, "max_open_positions": 3, "daily_loss_limit_usd": -5}}'),
  'traders_risk_valid', 'traders: daily loss limit is not negative');
select pg_temp.rejects('public.traders', pg_temp.trader('{"status": "error"}'),
  'traders_error_message_matches_status', 'traders: an errored trader says why');
select pg_temp.rejects('public.traders', pg_temp.trader('{"error_message": "boom"}'),
  'traders_error_message_matches_status', 'traders: only an errored trader has an error message');
select lives_ok(format('select tests.insert_row(%L, %L)', 'public.traders',
  pg_temp.trader('{"symbols": ["BTCUSDT", "1000SATSUSDT"], "check_interval": "4h_close", "timeframes": ["4h", "1d"]}')),
  'traders: a valid trader is accepted');

-- signals
select pg_temp.rejects('public.signals', pg_temp.signal('{"symbol": "sol/usdt"}'), 'signals_symbol_format',
  'signals: symbol format');
select pg_temp.rejects('public.signals', pg_temp.signal('{"trigger_price": 0}'), 'signals_trigger_price_positive',
  'signals: trigger price is positive');
select pg_temp.rejects('public.signals', pg_temp.signal('{"current_price": -1}'), 'signals_current_price_positive',
  'signals: current price is positive');
select pg_temp.rejects('public.signals', pg_temp.signal('{"status": "closed"}'), 'signals_closed_at_matches_status',
  'signals: a closed signal has closed_at');
select pg_temp.rejects('public.signals', pg_temp.signal('{"closed_at": "2026-01-01T00:00:00Z"}'),
  'signals_closed_at_matches_status', 'signals: an open signal has no closed_at');
select pg_temp.rejects('public.signals', pg_temp.signal(jsonb_build_object('close_reason', repeat('r', 501))),
  'signals_close_reason_length', 'signals: close reason is at most 500 characters');
select pg_temp.rejects('public.signals', pg_temp.signal('{"symbol": "BTCUSDT"}'),
  'signals_one_live_per_trader_symbol', 'signals: no second live signal for the same trader and symbol');
select pg_temp.rejects('public.signals', pg_temp.signal('{"trader_id": "b0000000-0000-4000-8000-0000000000b1"}'),
  'signals_trader_fkey', 'signals: a signal cannot point at another user''s trader');
select lives_ok(format('select tests.insert_row(%L, %L)', 'public.signals',
  pg_temp.signal('{"symbol": "BTCUSDT", "status": "closed", "closed_at": "2026-01-01T00:00:00Z", "close_reason": "no_trade"}')),
  'signals: closed signals do not block a new one');
select lives_ok(format('select tests.insert_row(%L, %L)', 'public.signals', pg_temp.signal()),
  'signals: a valid signal is accepted');

-- positions
select pg_temp.rejects('public.positions', pg_temp.position('{"symbol": "eth"}'), 'positions_symbol_format',
  'positions: symbol format');
select pg_temp.rejects('public.positions', pg_temp.position('{"entry_price": 0}'), 'positions_entry_price_positive',
  'positions: entry price is positive');
select pg_temp.rejects('public.positions', pg_temp.position('{"size": 0}'), 'positions_size_valid',
  'positions: an open position has a positive size');
select pg_temp.rejects('public.positions',
  pg_temp.position('{"status": "closed", "size": 1, "closed_at": "2026-01-01T00:00:00Z", "exit_price": 11, "pnl": 2}'),
  'positions_size_valid', 'positions: a closed position holds nothing');
select pg_temp.rejects('public.positions', pg_temp.position('{"stop_loss": 0}'), 'positions_stop_loss_positive',
  'positions: stop loss is positive');
select pg_temp.rejects('public.positions', pg_temp.position('{"take_profit": -2}'), 'positions_take_profit_positive',
  'positions: take profit is positive');
select pg_temp.rejects('public.positions', pg_temp.position('{"stop_loss": 12, "take_profit": 11}'),
  'positions_stop_below_target', 'positions: a long''s stop is below its target');
select pg_temp.rejects('public.positions',
  pg_temp.position('{"side": "short", "stop_loss": 9, "take_profit": 11}'),
  'positions_stop_below_target', 'positions: a short''s stop is above its target');
select pg_temp.rejects('public.positions', pg_temp.position('{"trailing_stop_percent": 0}'),
  'positions_trailing_stop_percent_range', 'positions: trailing distance is above 0');
select pg_temp.rejects('public.positions', pg_temp.position('{"trailing_stop_percent": 1}'),
  'positions_trailing_stop_percent_range', 'positions: trailing distance is below 100%');
select pg_temp.rejects('public.positions', pg_temp.position('{"trailing_stop_activation_price": 0}'),
  'positions_trailing_stop_activation_price_positive', 'positions: activation price is positive');
select pg_temp.rejects('public.positions', pg_temp.position('{"trailing_stop_reference_price": 0}'),
  'positions_trailing_stop_reference_price_positive', 'positions: trailing reference price is positive');
select pg_temp.rejects('public.positions', pg_temp.position('{"fees_paid": -0.01}'),
  'positions_fees_paid_nonnegative', 'positions: fees are not negative');
select pg_temp.rejects('public.positions', pg_temp.position('{"exit_price": 0}'), 'positions_exit_price_positive',
  'positions: exit price is positive');
select pg_temp.rejects('public.positions',
  pg_temp.position('{"status": "closed", "size": 0, "closed_at": "2026-01-01T00:00:00Z"}'),
  'positions_closed_fields_match_status', 'positions: a closed position records exit price and PnL');
select pg_temp.rejects('public.positions', pg_temp.position('{"closed_at": "2026-01-01T00:00:00Z"}'),
  'positions_closed_fields_match_status', 'positions: an open position has no closed_at');
select pg_temp.rejects('public.positions', pg_temp.position('{"metadata": []}'), 'positions_metadata_object',
  'positions: metadata is an object');
select pg_temp.rejects('public.positions',
  pg_temp.position('{"signal_id": "a0000000-0000-4000-8000-0000000000c1", "symbol": "BTCUSDT"}'),
  'positions_one_open_per_signal', 'positions: one open position per signal');
select pg_temp.rejects('public.positions', pg_temp.position('{"signal_id": "b0000000-0000-4000-8000-0000000000c2"}'),
  'positions_signal_fkey', 'positions: a position cannot point at another user''s signal');
select lives_ok(format('select tests.insert_row(%L, %L)', 'public.positions',
  pg_temp.position('{"stop_loss": 9, "take_profit": 12, "trailing_stop_percent": 0.02, "metadata": {"source": "test"}}')),
  'positions: a valid position is accepted');

-- trades
select pg_temp.rejects('public.trades', pg_temp.trade('{"position_id": null, "signal_id": null}'),
  'trades_has_parent', 'trades: a trade belongs to a position or a signal');
select pg_temp.rejects('public.trades', pg_temp.trade('{"symbol": "BTC-USDT"}'), 'trades_symbol_format',
  'trades: symbol format');
select pg_temp.rejects('public.trades', pg_temp.trade('{"client_order_id": "has spaces"}'),
  'trades_client_order_id_format', 'trades: client order id follows Binance''s rule');
select pg_temp.rejects('public.trades', pg_temp.trade(jsonb_build_object('client_order_id', repeat('x', 37))),
  'trades_client_order_id_format', 'trades: client order id is at most 36 characters');
select pg_temp.rejects('public.trades', pg_temp.trade('{"price": 0}'), 'trades_price_positive',
  'trades: price is positive');
select pg_temp.rejects('public.trades', pg_temp.trade('{"quantity": 0}'), 'trades_quantity_positive',
  'trades: quantity is positive');
select pg_temp.rejects('public.trades', pg_temp.trade('{"fee": -1}'), 'trades_fee_nonnegative',
  'trades: fee is not negative');
select pg_temp.rejects('public.trades', pg_temp.trade('{"price": null}'), 'trades_filled_has_price',
  'trades: a filled trade has a price');
select pg_temp.rejects('public.trades', pg_temp.trade('{"status": "failed"}'), 'trades_failed_has_error',
  'trades: a failed trade says why');
select pg_temp.rejects('public.trades', pg_temp.trade('{"binance_order_id": 12345}'), 'trades_real_fields',
  'trades: a paper trade has no Binance order id');
select pg_temp.rejects('public.trades', pg_temp.trade('{"position_id": "b0000000-0000-4000-8000-0000000000d1", "signal_id": null}'),
  'trades_position_fkey', 'trades: a trade cannot point at another user''s position');
select lives_ok(format('select tests.insert_row(%L, %L)', 'public.trades', pg_temp.trade()),
  'trades: a valid trade is accepted');
select pg_temp.rejects('public.trades', pg_temp.trade(), 'trades_user_id_client_order_id_key',
  'trades: a client order id is used once per user (a retried insert cannot duplicate an order)');
select lives_ok(format('select tests.insert_row(%L, %L)', 'public.trades',
  pg_temp.trade('{"position_id": null, "status": "failed", "price": null, "client_order_id": "tm-entry-2",
                  "error_message": "Filter failure: NOTIONAL"}')),
  'trades: a failed entry without a position is recorded against its signal');

-- analysis_history
select pg_temp.rejects('public.analysis_history', pg_temp.analysis('{"confidence": 101}'),
  'analysis_history_confidence_range', 'analysis_history: confidence is at most 100');
select pg_temp.rejects('public.analysis_history', pg_temp.analysis('{"confidence": -1}'),
  'analysis_history_confidence_range', 'analysis_history: confidence is at least 0');
select pg_temp.rejects('public.analysis_history', pg_temp.analysis('{"reasoning": " "}'),
  'analysis_history_reasoning_not_blank', 'analysis_history: reasoning is not blank');
select pg_temp.rejects('public.analysis_history', pg_temp.analysis('{"prompt_tokens": -1}'),
  'analysis_history_tokens_nonnegative', 'analysis_history: token counts are not negative');
select pg_temp.rejects('public.analysis_history', pg_temp.analysis('{"metadata": "x"}'),
  'analysis_history_metadata_object', 'analysis_history: metadata is an object');
select pg_temp.rejects('public.analysis_history', pg_temp.analysis('{"decision": "yolo"}'),
  'invalid input value for enum analysis_decision', 'analysis_history: decision is one of the eleven');
select pg_temp.rejects('public.analysis_history',
  pg_temp.analysis('{"trader_id": "b0000000-0000-4000-8000-0000000000b1"}'),
  'analysis_history_trader_fkey', 'analysis_history: an analysis cannot point at another user''s trader');
select lives_ok(format('select tests.insert_row(%L, %L)', 'public.analysis_history', pg_temp.analysis()),
  'analysis_history: a valid analysis is accepted');

select * from finish();
rollback;
