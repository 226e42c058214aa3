-- Trading state transitions for the worker's executor: one Postgres function per transition, each one
-- transaction, each idempotent on an id the worker generated (the trade's client_order_id, the position id).
--
-- SECURITY INVOKER on purpose: the functions run as the calling trader_machine, so the existing row level
-- security limits every row they read or write to the machine's own user (a machine cannot reach another
-- user's signal, position, trade or paper account even through these functions), and the functions carry
-- no privilege the role does not already have. They still refuse every role but trader_machine, and take
-- user_id from the token (auth.uid()), never from the arguments.
--
-- Numbers travel as JSON strings and are cast to numeric here, so Decimal values stay exact end to end.
-- Custom error codes (PostgREST turns PTxxx into that HTTP status): PT409 the position changed under the
-- caller (expected size mismatch) or an illegal signal transition; PT402 a paper balance would go negative.

-- Columns -------------------------------------------------------------------------------------------------
-- What the worker meant to do with an order, written before the order is sent: after a crash, recovery
-- looks the order up by client_order_id and, if it filled, completes exactly this transition.
alter table public.trades add column intent jsonb;
-- The profit or loss this fill realised (reducing fills only), so a day's losses are a sum over trades.
alter table public.trades add column realized_pnl numeric;
alter table public.trades add constraint trades_intent_object check (intent is null or jsonb_typeof(intent) = 'object');

-- Why the guardrails (or a failed order) refused the last decision on a signal, and when.
alter table public.signals add column last_refusal text;
alter table public.signals add column last_refused_at timestamptz;
alter table public.signals add constraint signals_last_refusal_length
  check (last_refusal is null or char_length(last_refusal) <= 500);

create index trades_pending_idx on public.trades (user_id) where status = 'pending';

-- Paper accounts ----------------------------------------------------------------------------------------
-- The virtual USDT balance of a user's paper trading (created from users.paper_starting_balance_usd on
-- first use). Cash moves only inside trading_apply_fill, in the same transaction as the fill.
create table public.paper_accounts (
  user_id uuid primary key references public.users (id) on delete cascade,
  balance_usd numeric not null,
  starting_balance_usd numeric not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint paper_accounts_balance_nonnegative check (balance_usd >= 0),
  constraint paper_accounts_starting_balance_positive check (starting_balance_usd > 0)
);
create trigger paper_accounts_set_updated_at before update on public.paper_accounts
  for each row execute function private.set_updated_at();

revoke all on table public.paper_accounts from public, anon, authenticated, service_role, trader_machine;
alter table public.paper_accounts enable row level security;
grant all on table public.paper_accounts to service_role;
grant select on public.paper_accounts to authenticated;
grant select, insert, update on public.paper_accounts to trader_machine;

create policy "users read their own paper account" on public.paper_accounts
  for select to authenticated using ((select auth.uid()) = user_id);
create policy "machines read their user's paper account" on public.paper_accounts
  for select to trader_machine using ((select auth.uid()) = user_id);
create policy "machines create their user's paper account" on public.paper_accounts
  for insert to trader_machine with check ((select auth.uid()) = user_id);
create policy "machines update their user's paper account" on public.paper_accounts
  for update to trader_machine using ((select auth.uid()) = user_id) with check ((select auth.uid()) = user_id);

-- Functions ---------------------------------------------------------------------------------------------
-- The paper balance, creating the account from the user's starting balance on first use.
create function public.trading_paper_balance() returns numeric
language plpgsql
set search_path = ''
as $$
declare
  balance numeric;
begin
  if auth.role() is distinct from 'trader_machine' then
    raise exception 'only a trader machine may trade' using errcode = '42501';
  end if;
  insert into public.paper_accounts (user_id, balance_usd, starting_balance_usd)
  select u.id, u.paper_starting_balance_usd, u.paper_starting_balance_usd from public.users u where u.id = auth.uid()
  on conflict (user_id) do nothing;
  select a.balance_usd into balance from public.paper_accounts a where a.user_id = auth.uid();
  if balance is null then
    raise exception 'no user row for %', auth.uid() using errcode = 'P0002';
  end if;
  return balance;
end
$$;

-- Record an order before it is sent (status pending). Idempotent: a second call with the same
-- client_order_id returns the row already recorded, whatever its status now.
create function public.trading_record_order(trade jsonb) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  recorded public.trades;
begin
  if auth.role() is distinct from 'trader_machine' then
    raise exception 'only a trader machine may trade' using errcode = '42501';
  end if;
  insert into public.trades (id, position_id, signal_id, user_id, type, side, order_type, symbol, price, quantity,
                             status, client_order_id, intent)
  values ((trade ->> 'id')::uuid, (trade ->> 'position_id')::uuid, (trade ->> 'signal_id')::uuid, auth.uid(),
          (trade ->> 'type')::public.trading_mode, (trade ->> 'side')::public.order_side,
          (trade ->> 'order_type')::public.order_type, trade ->> 'symbol', (trade ->> 'price')::numeric,
          (trade ->> 'quantity')::numeric, 'pending', trade ->> 'client_order_id', trade -> 'intent')
  on conflict (client_order_id) do nothing;
  select t.* into recorded from public.trades t where t.client_order_id = trade ->> 'client_order_id';
  if recorded.id is null then
    -- The id exists but belongs to another user (RLS hides it): never act on it.
    raise exception 'client_order_id % is taken', trade ->> 'client_order_id' using errcode = '23505';
  end if;
  return to_jsonb(recorded);
end
$$;

-- A pending order's outcome without a fill: placed on the exchange (still pending, with its exchange id),
-- cancelled, or failed with the venue's message. A filled order is never changed here.
create function public.trading_mark_order(client_order_id text, status public.order_status,
                                          binance_order_id bigint default null, error_message text default null)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  changed public.trades;
begin
  if auth.role() is distinct from 'trader_machine' then
    raise exception 'only a trader machine may trade' using errcode = '42501';
  end if;
  if trading_mark_order.status in ('filled', 'partially_filled') then
    raise exception 'fills are recorded with trading_apply_fill' using errcode = '22023';
  end if;
  update public.trades t
     set status = trading_mark_order.status,
         binance_order_id = coalesce(trading_mark_order.binance_order_id, t.binance_order_id),
         error_message = case when trading_mark_order.status = 'failed'
                              then left(coalesce(trading_mark_order.error_message, 'failed'), 2000)
                              else t.error_message end
   where t.client_order_id = trading_mark_order.client_order_id and t.status not in ('filled', 'partially_filled')
  returning t.* into changed;
  if changed.id is null then
    select t.* into changed from public.trades t where t.client_order_id = trading_mark_order.client_order_id;
    if changed.id is null then
      raise exception 'no order %', trading_mark_order.client_order_id using errcode = 'P0002';
    end if;
  end if;
  return to_jsonb(changed);
end
$$;

-- Move a signal along its lifecycle (watch, close, record a refusal). new -> watching -> position_open ->
-- closed; a closed signal never reopens, and a signal with an open position is closed only by its fill.
create function public.trading_set_signal(signal_id uuid, status public.signal_status default null,
                                          close_reason text default null, refusal text default null)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  existing public.signals;
begin
  if auth.role() is distinct from 'trader_machine' then
    raise exception 'only a trader machine may trade' using errcode = '42501';
  end if;
  select s.* into existing from public.signals s where s.id = trading_set_signal.signal_id for update;
  if existing.id is null then
    raise exception 'no signal %', trading_set_signal.signal_id using errcode = 'P0002';
  end if;
  if trading_set_signal.status is not null and trading_set_signal.status is distinct from existing.status then
    if existing.status = 'closed' then
      raise exception 'signal % is closed', existing.id using errcode = 'PT409';
    end if;
    if trading_set_signal.status = 'new'
       or (trading_set_signal.status = 'watching' and existing.status <> 'new') then
      raise exception 'signal % cannot go from % to %', existing.id, existing.status, trading_set_signal.status
        using errcode = 'PT409';
    end if;
    if trading_set_signal.status = 'closed' and exists (
      select from public.positions p where p.signal_id = existing.id and p.status = 'open') then
      raise exception 'signal % has an open position', existing.id using errcode = 'PT409';
    end if;
  end if;
  update public.signals s
     set status = coalesce(trading_set_signal.status, s.status),
         closed_at = case when coalesce(trading_set_signal.status, s.status) = 'closed'
                          then coalesce(s.closed_at, now()) else null end,
         close_reason = case when trading_set_signal.status = 'closed' and s.status <> 'closed'
                             then left(trading_set_signal.close_reason, 500) else s.close_reason end,
         last_refusal = coalesce(left(trading_set_signal.refusal, 500), s.last_refusal),
         last_refused_at = case when trading_set_signal.refusal is not null then now() else s.last_refused_at end
   where s.id = existing.id
  returning s.* into existing;
  return to_jsonb(existing);
end
$$;

-- One fill and everything it changes, atomically: the trade becomes filled, the position is created or
-- updated to the state the worker computed (checked against the size the worker started from), the signal
-- moves, and in paper mode the cash moves. A second call for the same order changes nothing and says so.
create function public.trading_apply_fill(fill jsonb) returns jsonb
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
    perform public.trading_paper_balance();  -- opens the paper account on first use
    -- One statement reads and writes the balance under the row lock, so concurrent fills cannot lose
    -- each other's deltas; an overdraft is refused (PT402) before the table's CHECK would be.
    update public.paper_accounts a
       set balance_usd = a.balance_usd + (fill ->> 'paper_balance_delta')::numeric
     where a.user_id = auth.uid()
       and a.balance_usd + (fill ->> 'paper_balance_delta')::numeric >= 0
    returning a.balance_usd into balance;
    if not found then
      raise exception 'paper balance would become negative (delta %)', fill ->> 'paper_balance_delta'
        using errcode = 'PT402';
    end if;
  end if;
  return jsonb_build_object('applied', true, 'position', to_jsonb(existing), 'paper_balance', balance);
end
$$;

-- Change an open position's protection or bookkeeping (stops, targets, trailing state, exchange order ids,
-- metadata): only the keys present change. Idempotent by nature.
create function public.trading_update_position(position_id uuid, changes jsonb) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  changed public.positions;
begin
  if auth.role() is distinct from 'trader_machine' then
    raise exception 'only a trader machine may trade' using errcode = '42501';
  end if;
  update public.positions p
     set stop_loss = case when changes ? 'stop_loss' then (changes ->> 'stop_loss')::numeric else p.stop_loss end,
         take_profit = case when changes ? 'take_profit' then (changes ->> 'take_profit')::numeric else p.take_profit end,
         stop_loss_order_id = case when changes ? 'stop_loss_order_id'
                                   then (changes ->> 'stop_loss_order_id')::bigint else p.stop_loss_order_id end,
         take_profit_order_id = case when changes ? 'take_profit_order_id'
                                     then (changes ->> 'take_profit_order_id')::bigint else p.take_profit_order_id end,
         trailing_stop_percent = case when changes ? 'trailing_stop_percent'
                                      then (changes ->> 'trailing_stop_percent')::numeric else p.trailing_stop_percent end,
         trailing_stop_activation_price = case when changes ? 'trailing_stop_activation_price'
                                               then (changes ->> 'trailing_stop_activation_price')::numeric
                                               else p.trailing_stop_activation_price end,
         trailing_stop_reference_price = case when changes ? 'trailing_stop_reference_price'
                                              then (changes ->> 'trailing_stop_reference_price')::numeric
                                              else p.trailing_stop_reference_price end,
         metadata = case when changes ? 'metadata' then p.metadata || (changes -> 'metadata') else p.metadata end
   where p.id = trading_update_position.position_id and p.status = 'open'
  returning p.* into changed;
  if changed.id is null then
    raise exception 'no open position %', trading_update_position.position_id using errcode = 'PT409';
  end if;
  return to_jsonb(changed);
end
$$;

revoke execute on function public.trading_paper_balance(), public.trading_record_order(jsonb),
  public.trading_mark_order(text, public.order_status, bigint, text),
  public.trading_set_signal(uuid, public.signal_status, text, text), public.trading_apply_fill(jsonb),
  public.trading_update_position(uuid, jsonb)
  from public, anon, authenticated, service_role;
grant execute on function public.trading_paper_balance(), public.trading_record_order(jsonb),
  public.trading_mark_order(text, public.order_status, bigint, text),
  public.trading_set_signal(uuid, public.signal_status, text, text), public.trading_apply_fill(jsonb),
  public.trading_update_position(uuid, jsonb)
  to trader_machine;
