-- The trader's notifications for what their worker does: a new signal, a position opened, a position closed
-- (with its reason and PnL), an order that failed, a trader stopped by an error.
--
-- The worker makes these changes through worker/db/ (signal inserts, the trading_* transition functions,
-- report_trader_error); a trigger on each writes the notification in the same transaction, so a notification
-- exists exactly when its event does: a retried or crashed write can neither lose nor repeat it.

create function private.notify_trading_event() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  kind public.notification_kind;
  title text;
  body text := '';
  data jsonb;
  owner uuid := new.user_id;
  trader_name text;
begin
  if tg_table_name = 'signals' then
    select t.name into trader_name from public.traders t where t.id = new.trader_id;
    kind := 'signal_new';
    title := format('New signal: %s', new.symbol);
    body := format('%s triggered at %s; the AI is analysing it.', coalesce(trader_name, 'A trader'), new.trigger_price);
    data := jsonb_build_object('signalId', new.id, 'traderId', new.trader_id, 'symbol', new.symbol);
  elsif tg_table_name = 'positions' and tg_op = 'INSERT' then
    kind := 'position_opened';
    title := format('Opened %s %s', new.side, new.symbol);
    body := format('Entry %s, size %s, stop %s, take profit %s (%s).', new.entry_price, new.size,
                   coalesce(new.stop_loss::text, 'none'), coalesce(new.take_profit::text, 'none'), new.type);
    data := jsonb_build_object('positionId', new.id, 'signalId', new.signal_id, 'symbol', new.symbol, 'side', new.side);
  elsif tg_table_name = 'positions' then
    kind := 'position_closed';
    title := format('Closed %s %s: %s', new.side, new.symbol, coalesce(new.close_reason, 'closed'));
    body := format('Exit %s, PnL %s (%s%%).', new.exit_price, round(new.pnl, 2), round(coalesce(new.pnl_percent, 0), 2));
    data := jsonb_build_object('positionId', new.id, 'symbol', new.symbol, 'closeReason', new.close_reason,
                               'pnl', new.pnl, 'pnlPercent', new.pnl_percent);
  elsif tg_table_name = 'trades' then
    kind := 'trade_failed';
    title := format('%s %s order failed', new.side, new.symbol);
    body := coalesce(new.error_message, '');
    data := jsonb_build_object('tradeId', new.id, 'clientOrderId', new.client_order_id, 'symbol', new.symbol,
                               'positionId', new.position_id, 'signalId', new.signal_id);
  else
    kind := 'trader_error';
    title := format('Trader stopped: %s', new.name);
    body := coalesce(new.error_message, '');
    data := jsonb_build_object('traderId', new.id);
  end if;
  insert into public.notifications (user_id, kind, title, body, data)
  values (owner, kind, left(title, 200), left(body, 2000), data);
  return null;
end
$$;
revoke execute on function private.notify_trading_event() from public;

create trigger signals_notify_new after insert on public.signals
  for each row execute function private.notify_trading_event();
create trigger positions_notify_opened after insert on public.positions
  for each row execute function private.notify_trading_event();
create trigger positions_notify_closed after update of status on public.positions
  for each row when (old.status = 'open' and new.status = 'closed')
  execute function private.notify_trading_event();
create trigger trades_notify_failed_insert after insert on public.trades
  for each row when (new.status = 'failed') execute function private.notify_trading_event();
create trigger trades_notify_failed_update after update of status on public.trades
  for each row when (new.status = 'failed' and old.status is distinct from 'failed')
  execute function private.notify_trading_event();
create trigger traders_notify_error after update of status on public.traders
  for each row when (new.status = 'error' and old.status is distinct from 'error')
  execute function private.notify_trading_event();
