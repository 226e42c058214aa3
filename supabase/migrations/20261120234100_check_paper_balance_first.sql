-- trading_apply_fill checks a paper fill against the balance before moving the cash, so an overdraft is
-- refused with PT402 (the worker's InsufficientPaperBalance) rather than the table's CHECK violation.
-- Same signature, owner and grants as before.

create or replace function public.trading_apply_fill(fill jsonb) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  trade public.trades;
  position_state jsonb := fill -> 'position';
  target_id uuid := (fill -> 'position' ->> 'id')::uuid;
  existing public.positions;
  next_status public.position_status := (fill -> 'position' ->> 'status')::public.position_status;
  balance numeric;
begin
  if auth.role() is distinct from 'trader_machine' then
    raise exception 'only a trader machine may trade' using errcode = '42501';
  end if;
  select t.* into trade from public.trades t where t.client_order_id = fill ->> 'client_order_id' for update;
  if trade.id is null then
    raise exception 'no order %', fill ->> 'client_order_id' using errcode = 'P0002';
  end if;
  if trade.status = 'filled' then
    select p.* into existing from public.positions p where p.id = coalesce(trade.position_id, target_id);
    return jsonb_build_object('applied', false, 'position', to_jsonb(existing));
  end if;

  select p.* into existing from public.positions p where p.id = target_id for update;
  if existing.id is null then
    if (fill ->> 'expected_size')::numeric <> 0 then
      raise exception 'position % does not exist', target_id using errcode = 'PT409';
    end if;
    insert into public.positions (id, signal_id, user_id, symbol, side, type, entry_price, size, stop_loss,
                                  take_profit, trailing_stop_percent, trailing_stop_activation_price,
                                  trailing_stop_reference_price, status, exit_price, realized_pnl, fees_paid,
                                  pnl, pnl_percent, metadata, closed_at, close_reason)
    values (target_id, (position_state ->> 'signal_id')::uuid, auth.uid(), position_state ->> 'symbol',
            (position_state ->> 'side')::public.position_side, (position_state ->> 'type')::public.trading_mode,
            (position_state ->> 'entry_price')::numeric, (position_state ->> 'size')::numeric,
            (position_state ->> 'stop_loss')::numeric, (position_state ->> 'take_profit')::numeric,
            (position_state ->> 'trailing_stop_percent')::numeric,
            (position_state ->> 'trailing_stop_activation_price')::numeric,
            (position_state ->> 'trailing_stop_reference_price')::numeric, next_status,
            (position_state ->> 'exit_price')::numeric, (position_state ->> 'realized_pnl')::numeric,
            (position_state ->> 'fees_paid')::numeric, (position_state ->> 'pnl')::numeric,
            (position_state ->> 'pnl_percent')::numeric, coalesce(position_state -> 'metadata', '{}'::jsonb),
            case when next_status = 'closed' then now() end, position_state ->> 'close_reason')
    returning * into existing;
  else
    if existing.status = 'closed' then
      raise exception 'position % is closed', target_id using errcode = 'PT409';
    end if;
    if existing.size <> (fill ->> 'expected_size')::numeric then
      raise exception 'position % has size %, not the expected %', target_id, existing.size,
        fill ->> 'expected_size' using errcode = 'PT409';
    end if;
    update public.positions p
       set entry_price = (position_state ->> 'entry_price')::numeric,
           size = (position_state ->> 'size')::numeric,
           stop_loss = (position_state ->> 'stop_loss')::numeric,
           take_profit = (position_state ->> 'take_profit')::numeric,
           trailing_stop_percent = (position_state ->> 'trailing_stop_percent')::numeric,
           trailing_stop_activation_price = (position_state ->> 'trailing_stop_activation_price')::numeric,
           trailing_stop_reference_price = (position_state ->> 'trailing_stop_reference_price')::numeric,
           status = next_status,
           exit_price = (position_state ->> 'exit_price')::numeric,
           realized_pnl = (position_state ->> 'realized_pnl')::numeric,
           fees_paid = (position_state ->> 'fees_paid')::numeric,
           pnl = (position_state ->> 'pnl')::numeric,
           pnl_percent = (position_state ->> 'pnl_percent')::numeric,
           metadata = coalesce(position_state -> 'metadata', p.metadata),
           closed_at = case when next_status = 'closed' then now() end,
           close_reason = position_state ->> 'close_reason'
     where p.id = target_id
    returning * into existing;
  end if;

  update public.trades t
     set status = 'filled',
         position_id = existing.id,
         price = (fill ->> 'price')::numeric,
         quantity = (fill ->> 'quantity')::numeric,
         fee = coalesce((fill ->> 'fee')::numeric, 0),
         fee_asset = fill ->> 'fee_asset',
         binance_order_id = coalesce((fill ->> 'binance_order_id')::bigint, t.binance_order_id),
         realized_pnl = (fill ->> 'realized_pnl')::numeric,
         error_message = null,
         executed_at = now()
   where t.id = trade.id;

  if fill ? 'signal_status' and fill ->> 'signal_status' is not null then
    update public.signals s
       set status = (fill ->> 'signal_status')::public.signal_status,
           closed_at = case when fill ->> 'signal_status' = 'closed' then coalesce(s.closed_at, now()) end,
           close_reason = case when fill ->> 'signal_status' = 'closed'
                               then left(fill ->> 'signal_close_reason', 500) else s.close_reason end
     where s.id = existing.signal_id;
  end if;

  if fill ->> 'paper_balance_delta' is not null then
    balance := public.trading_paper_balance() + (fill ->> 'paper_balance_delta')::numeric;
    if balance < 0 then
      raise exception 'paper balance would become %', balance using errcode = 'PT402';
    end if;
    update public.paper_accounts a set balance_usd = balance where a.user_id = auth.uid();
  end if;
  return jsonb_build_object('applied', true, 'position', to_jsonb(existing), 'paper_balance', balance);
end
$$;
