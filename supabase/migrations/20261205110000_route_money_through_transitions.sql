-- Money and lifecycle move only through the transition functions, which check their own preconditions.
--
-- The machine role (trader_machine) loses every direct write on signals, positions, trades, paper_accounts,
-- fly_machines and notifications. Its writes are the public trading_* functions (and
-- record_machine_heartbeat): thin SECURITY INVOKER wrappers over SECURITY DEFINER implementations in the
-- schema `transitions`, which PostgREST does not serve. An implementation bypasses RLS, so it takes the
-- user from the token (transitions.caller(): a trader_machine token of a live machine, else 42501) and
-- reads and writes only that user's rows, answering "no such row" alike for another user's id and for one
-- that does not exist.
--
-- What the functions refuse:
--   - a signal moving backwards (closed reopened, anything back to new or watching), to position_open
--     without an open position, or closed while a position is open (PT409);
--   - a fill the order does not allow: more than the order's quantity, a paper fill other than of a
--     pending MARKET order, or further than max_paper_slippage() from the reference price the order was
--     recorded with, in the direction slippage goes (22023); a real fill without the exchange's order id;
--   - a paper fill whose position does not follow from the book: the database keeps the ledger (size,
--     cost basis, average entry, realised PnL, fees) exactly as worker/domain/ledger.py does, and moves the
--     paper cash by what the fill does to the book (the caller's figure must agree); the balance is never
--     set by a caller (22023);
--   - a position update outside its protection (stops, targets, trailing state, exchange order ids).
-- client_order_id is unique per user, not globally, so one user's ids neither collide with nor reveal
-- another's; the trade's id is the database's.
-- Counters are the database's: traders.signal_code_version starts at 1 on insert (and only the trigger
-- moves it); the user's insert grants on its own tables leave out versions and timestamps.

-- client_order_id: unique per user -----------------------------------------------------------------------
alter table public.trades drop constraint trades_client_order_id_key;
alter table public.trades add constraint trades_user_id_client_order_id_key unique (user_id, client_order_id);

-- The machine's direct writes go -------------------------------------------------------------------------
revoke insert, update, delete on public.signals, public.positions, public.trades from trader_machine;
revoke all on public.paper_accounts from trader_machine;
revoke update on public.fly_machines from trader_machine;
revoke insert on public.notifications from trader_machine;

drop policy "machines create their user's signals" on public.signals;
drop policy "machines update their user's signals" on public.signals;
drop policy "machines create their user's positions" on public.positions;
drop policy "machines update their user's positions" on public.positions;
drop policy "machines create their user's trades" on public.trades;
drop policy "machines update their user's trades" on public.trades;
drop policy "machines read their user's paper account" on public.paper_accounts;
drop policy "machines create their user's paper account" on public.paper_accounts;
drop policy "machines update their user's paper account" on public.paper_accounts;
drop policy "machine tokens only while the machine is live" on public.paper_accounts;
drop policy "machines update their own row" on public.fly_machines;
drop policy "machines notify their user" on public.notifications;

-- Counters and versions are the database's -----------------------------------------------------------
create function private.start_signal_code_version() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.signal_code_version := 1;
  return new;
end
$$;
revoke execute on function private.start_signal_code_version() from public;
create trigger traders_start_signal_code_version before insert on public.traders
  for each row execute function private.start_signal_code_version();

revoke insert on public.traders, public.notification_preferences, public.cost_budgets from authenticated;
grant insert (id, user_id, name, description, signal_code, ai_instructions, timeframes, check_interval,
  reanalysis_interval, symbols, risk, status, error_message, trading_mode) on public.traders to authenticated;
grant insert (user_id, kinds, quiet_hours_start, quiet_hours_end, time_zone, webhook_url)
  on public.notification_preferences to authenticated;
grant insert (user_id, monthly_budget_usd) on public.cost_budgets to authenticated;

-- The transitions ---------------------------------------------------------------------------------------
create schema transitions;
revoke all on schema transitions from public;
grant usage on schema transitions to trader_machine;

-- How far a paper fill may be from its order's reference price (against the trader, as slippage goes).
-- The worker's TRADING_PAPER_SLIPPAGE_RATE is capped at the same figure.
create function transitions.max_paper_slippage() returns numeric
language sql immutable
set search_path = ''
as $$
  select 0.05::numeric
$$;

-- The user of the request's machine token; 42501 unless it is a trader_machine token of a live machine.
create function transitions.caller() returns uuid
language plpgsql stable
set search_path = ''
as $$
begin
  if auth.role() is distinct from 'trader_machine' or auth.uid() is null
     or not request_hooks.is_live_machine_token() then
    raise exception 'only a live trader machine may do this' using errcode = '42501';
  end if;
  return auth.uid();
end
$$;

create function transitions.refuse(message text) returns void
language plpgsql
set search_path = ''
as $$
begin
  raise exception '%', message using errcode = '22023';
end
$$;

-- A claimed figure must be the one the database computed.
create function transitions.require_same(what text, claimed numeric, computed numeric) returns void
language plpgsql
set search_path = ''
as $$
begin
  if claimed is distinct from computed then
    perform transitions.refuse(format('%s is %s, the book says %s', what, coalesce(claimed::text, 'missing'),
                                      coalesce(computed::text, 'none')));
  end if;
end
$$;

-- The average entry price: cost / size rounded down to 1e-12 (worker/domain/ledger.py `_average`).
create function transitions.average(cost numeric, size numeric) returns numeric
language sql immutable
set search_path = ''
as $$
  select div(cost * 1000000000000, size) * 0.000000000001
$$;

-- The user's paper account, opened from the user's starting balance on first use.
create function transitions.open_paper_account(owner uuid) returns numeric
language plpgsql
set search_path = ''
as $$
declare
  balance numeric;
begin
  insert into public.paper_accounts (user_id, balance_usd, starting_balance_usd)
  select u.id, u.paper_starting_balance_usd, u.paper_starting_balance_usd from public.users u where u.id = owner
  on conflict (user_id) do nothing;
  select a.balance_usd into balance from public.paper_accounts a where a.user_id = owner;
  if balance is null then
    raise exception 'no users row for the caller' using errcode = 'P0002';
  end if;
  return balance;
end
$$;

create function transitions.paper_balance() returns numeric
language plpgsql
security definer
set search_path = ''
as $$
begin
  return transitions.open_paper_account(transitions.caller());
end
$$;

-- Move a signal along new -> watching -> position_open -> closed (new -> closed on no_trade); a closed signal
-- never reopens, position_open needs an open position, closed needs none. Returns the signal as it is now.
create function transitions.move_signal(signal public.signals, status public.signal_status, close_reason text)
returns public.signals
language plpgsql
set search_path = ''
as $$
declare
  has_open_position boolean := exists (
    select from public.positions p where p.signal_id = signal.id and p.status = 'open');
  moved public.signals;
begin
  if status is null or status = signal.status then
    return signal;
  end if;
  if signal.status = 'closed' then
    raise exception 'signal % is closed', signal.id using errcode = 'PT409';
  end if;
  if status = 'new' or (status = 'watching' and signal.status <> 'new') then
    raise exception 'signal % cannot go from % to %', signal.id, signal.status, status using errcode = 'PT409';
  end if;
  if status = 'position_open' and not has_open_position then
    raise exception 'signal % has no open position', signal.id using errcode = 'PT409';
  end if;
  if status = 'closed' and has_open_position then
    raise exception 'signal % has an open position', signal.id using errcode = 'PT409';
  end if;
  update public.signals s
     set status = move_signal.status,
         closed_at = case when move_signal.status = 'closed' then now() end,
         close_reason = case when move_signal.status = 'closed' then left(move_signal.close_reason, 500)
                             else s.close_reason end
   where s.id = signal.id
  returning s.* into moved;
  return moved;
end
$$;

-- Create a signal (status new) for one of the caller's traders: 'created' (a retry of the same signal too),
-- or 'already_live' when the trader has a live signal for the symbol.
create function transitions.create_signal(signal_id uuid, trader_id uuid, symbol text, trigger_price numeric)
returns text
language plpgsql
security definer
set search_path = ''
as $$
declare
  owner uuid := transitions.caller();
begin
  if not exists (select from public.traders t where t.id = create_signal.trader_id and t.user_id = owner) then
    raise exception 'no trader %', create_signal.trader_id using errcode = 'P0002';
  end if;
  insert into public.signals (id, trader_id, user_id, symbol, trigger_price)
  values (create_signal.signal_id, create_signal.trader_id, owner, create_signal.symbol, create_signal.trigger_price)
  on conflict do nothing;
  if found or exists (select from public.signals s
                       where s.id = create_signal.signal_id and s.user_id = owner
                         and s.trader_id = create_signal.trader_id and s.symbol = create_signal.symbol) then
    return 'created';
  end if;
  if exists (select from public.signals s
              where s.trader_id = create_signal.trader_id and s.symbol = create_signal.symbol
                and s.status <> 'closed') then
    return 'already_live';
  end if;
  raise exception 'signal id % is taken', create_signal.signal_id using errcode = '23505';
end
$$;

-- Move a signal (watch, close), note why a decision was refused; with `expected_status`, only while the
-- signal still has it. The answer is the signal's row plus `changed`.
create function transitions.set_signal(signal_id uuid, status public.signal_status, close_reason text,
                                       refusal text, expected_status public.signal_status)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  owner uuid := transitions.caller();
  signal public.signals;
begin
  select s.* into signal from public.signals s
   where s.id = set_signal.signal_id and s.user_id = owner for update;
  if signal.id is null then
    raise exception 'no signal %', set_signal.signal_id using errcode = 'P0002';
  end if;
  if expected_status is not null and signal.status is distinct from expected_status then
    return to_jsonb(signal) || jsonb_build_object('changed', false);
  end if;
  signal := transitions.move_signal(signal, set_signal.status, set_signal.close_reason);
  if refusal is not null then
    update public.signals s set last_refusal = left(set_signal.refusal, 500), last_refused_at = now()
     where s.id = signal.id
    returning s.* into signal;
  end if;
  return to_jsonb(signal) || jsonb_build_object('changed', true);
end
$$;

-- Record an order before it is sent (pending), with the price it allows: a limit order's limit, a MARKET
-- order's reference price. Idempotent per user: the same client_order_id again returns the row recorded.
create function transitions.record_order(trade jsonb) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  owner uuid := transitions.caller();
  recorded public.trades;
  signal public.signals;
  open_position public.positions;
  order_symbol text := trade ->> 'symbol';
  order_mode public.trading_mode := (trade ->> 'type')::public.trading_mode;
  order_price numeric := (trade ->> 'price')::numeric;
begin
  select t.* into recorded from public.trades t
   where t.user_id = owner and t.client_order_id = trade ->> 'client_order_id';
  if recorded.id is not null then
    return to_jsonb(recorded);
  end if;
  if trade ->> 'signal_id' is not null then
    select s.* into signal from public.signals s where s.id = (trade ->> 'signal_id')::uuid and s.user_id = owner;
    if signal.id is null then
      raise exception 'no signal %', trade ->> 'signal_id' using errcode = 'P0002';
    end if;
    if signal.symbol is distinct from order_symbol then
      perform transitions.refuse(format('an order for %s on a %s signal', order_symbol, signal.symbol));
    end if;
  end if;
  if trade ->> 'position_id' is not null then
    select p.* into open_position from public.positions p
     where p.id = (trade ->> 'position_id')::uuid and p.user_id = owner and p.status = 'open';
    if open_position.id is null then
      raise exception 'no open position %', trade ->> 'position_id' using errcode = 'PT409';
    end if;
    if (open_position.symbol, open_position.type) is distinct from (order_symbol, order_mode) then
      perform transitions.refuse(format('a %s %s order on a %s %s position', order_mode, order_symbol,
                                        open_position.type, open_position.symbol));
    end if;
  end if;
  if order_price is null or order_price <= 0 then
    perform transitions.refuse('an order is recorded with its price: the limit, or a MARKET order''s reference');
  end if;
  insert into public.trades (position_id, signal_id, user_id, type, side, order_type, symbol, price, quantity,
                             status, client_order_id, intent)
  values ((trade ->> 'position_id')::uuid, (trade ->> 'signal_id')::uuid, owner, order_mode,
          (trade ->> 'side')::public.order_side, (trade ->> 'order_type')::public.order_type, order_symbol,
          order_price, (trade ->> 'quantity')::numeric, 'pending', trade ->> 'client_order_id', trade -> 'intent')
  on conflict (user_id, client_order_id) do nothing
  returning * into recorded;
  if recorded.id is null then  -- recorded by a concurrent retry
    select t.* into recorded from public.trades t
     where t.user_id = owner and t.client_order_id = trade ->> 'client_order_id';
  end if;
  return to_jsonb(recorded);
end
$$;

-- A pending order's outcome without a fill: placed (still pending, with the exchange's id), cancelled, or
-- failed with the venue's message. A filled order stays filled; a cancelled or failed one stays so, unless
-- the exchange accepted a real order under the same id again (pending, with its new exchange id).
create function transitions.mark_order(client_order_id text, status public.order_status, binance_order_id bigint,
                                       error_message text)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  owner uuid := transitions.caller();
  changed public.trades;
begin
  if mark_order.status in ('filled', 'partially_filled') then
    raise exception 'fills are recorded with trading_apply_fill' using errcode = '22023';
  end if;
  select t.* into changed from public.trades t
   where t.user_id = owner and t.client_order_id = mark_order.client_order_id for update;
  if changed.id is null then
    raise exception 'no order %', mark_order.client_order_id using errcode = 'P0002';
  end if;
  if changed.status in ('filled', 'partially_filled')
     or (changed.status in ('cancelled', 'failed')
         and not (mark_order.status = 'pending' and changed.type = 'real' and mark_order.binance_order_id is not null)) then
    return to_jsonb(changed);
  end if;
  update public.trades t
     set status = mark_order.status,
         binance_order_id = coalesce(mark_order.binance_order_id, t.binance_order_id),
         error_message = case when mark_order.status = 'failed'
                              then left(coalesce(mark_order.error_message, 'failed'), 2000)
                              else t.error_message end
   where t.id = changed.id
  returning t.* into changed;
  return to_jsonb(changed);
end
$$;

-- The book of a paper position after one fill, exactly as worker/domain/ledger.py computes it (`add`,
-- `reduce`, `paper_cash_delta`): entries add their cost; a reduction releases cost at the average entry
-- price (all that is left when it closes the position, which takes the whole size at the fill price) and
-- realises the difference; cash pays for entries and receives released cost plus realised PnL, less fees.
create function transitions.paper_book(before public.positions, side public.position_side, increase boolean,
                                       quantity numeric, price numeric, fee numeric, closing boolean)
returns jsonb
language plpgsql immutable
set search_path = ''
as $$
declare
  direction integer := case side when 'long' then 1 else -1 end;
  before_cost numeric;
  before_total numeric;
  reduced numeric;
  released numeric;
  realized numeric;
begin
  if before.id is null then
    return jsonb_build_object('size', quantity, 'cost_basis', quantity * price,
                              'entry_price', transitions.average(quantity * price, quantity),
                              'realized_pnl', 0, 'fees_paid', fee, 'entry_cost_total', quantity * price,
                              'realized', null, 'cash', -(quantity * price) - fee);
  end if;
  before_cost := coalesce((before.metadata ->> 'cost_basis')::numeric, before.size * before.entry_price);
  before_total := coalesce((before.metadata ->> 'entry_cost_total')::numeric, before_cost);
  if increase then
    return jsonb_build_object('size', before.size + quantity, 'cost_basis', before_cost + quantity * price,
                              'entry_price', transitions.average(before_cost + quantity * price,
                                                                 before.size + quantity),
                              'realized_pnl', before.realized_pnl, 'fees_paid', before.fees_paid + fee,
                              'entry_cost_total', before_total + quantity * price,
                              'realized', null, 'cash', -(quantity * price) - fee);
  end if;
  reduced := case when closing then before.size else quantity end;
  released := case when reduced = before.size then before_cost else reduced * before.entry_price end;
  realized := (reduced * price - released) * direction;
  return jsonb_build_object('size', before.size - reduced, 'cost_basis', before_cost - released,
                            'entry_price', before.entry_price, 'realized_pnl', before.realized_pnl + realized,
                            'fees_paid', before.fees_paid + fee, 'entry_cost_total', before_total,
                            'realized', realized, 'cash', released + realized - fee);
end
$$;

-- The fill must be one its order allows.
create function transitions.check_fill(trade public.trades, fill jsonb) returns void
language plpgsql
set search_path = ''
as $$
declare
  quantity numeric := (fill ->> 'quantity')::numeric;
  price numeric := (fill ->> 'price')::numeric;
  fee numeric := coalesce((fill ->> 'fee')::numeric, 0);
  slippage numeric := transitions.max_paper_slippage();
  lowest numeric := case trade.side when 'BUY' then trade.price else trade.price * (1 - slippage) end;
  highest numeric := case trade.side when 'BUY' then trade.price * (1 + slippage) else trade.price end;
begin
  if quantity is null or quantity <= 0 or quantity > trade.quantity then
    perform transitions.refuse(format('a fill of %s is not what order %s allows (%s)', coalesce(quantity::text, 'nothing'),
                                      trade.client_order_id, trade.quantity));
  end if;
  if price is null or price <= 0 or fee < 0 then
    perform transitions.refuse('a fill has a positive price and a fee that is not negative');
  end if;
  if trade.type = 'real' then
    if coalesce((fill ->> 'binance_order_id')::bigint, trade.binance_order_id) is null then
      perform transitions.refuse('a real fill carries the exchange''s order id');
    end if;
    return;
  end if;
  if trade.status <> 'pending' or trade.order_type <> 'MARKET' then
    perform transitions.refuse(format('paper order %s is a %s %s order: only a pending MARKET order fills on paper',
                                      trade.client_order_id, trade.status, trade.order_type));
  end if;
  if price not between lowest and highest then
    perform transitions.refuse(format('paper order %s (%s at %s) allows a fill from %s to %s, not %s',
                                      trade.client_order_id, trade.side, trade.price, lowest, highest, price));
  end if;
  if fill ->> 'fee_asset' is not null and right(trade.symbol, char_length(fill ->> 'fee_asset')) <> fill ->> 'fee_asset' then
    perform transitions.refuse('a paper fill''s fee is in the quote asset');
  end if;
end
$$;

-- One fill and everything it changes, atomically: the trade becomes filled, the position is created or
-- moves on (checked against the size the worker started from, and on paper against the database's own
-- book), the signal moves, and on paper the cash moves by what the fill did to the book. A second call for
-- the same order changes nothing and says so.
create function transitions.apply_fill(fill jsonb) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  owner uuid := transitions.caller();
  state jsonb := fill -> 'position';
  target_id uuid := (fill -> 'position' ->> 'id')::uuid;
  fill_quantity numeric := (fill ->> 'quantity')::numeric;
  fill_price numeric := (fill ->> 'price')::numeric;
  fill_fee numeric := coalesce((fill ->> 'fee')::numeric, 0);
  claimed_status public.position_status := (fill -> 'position' ->> 'status')::public.position_status;
  trade public.trades;
  existing public.positions;
  signal public.signals;
  side public.position_side;
  increase boolean;
  book jsonb;
  next_size numeric;
  next_status public.position_status;
  trade_realized numeric := (fill ->> 'realized_pnl')::numeric;
  closed_pnl numeric;
  closed_pnl_percent numeric;
  balance numeric;
begin
  select t.* into trade from public.trades t
   where t.user_id = owner and t.client_order_id = fill ->> 'client_order_id' for update;
  if trade.id is null then
    raise exception 'no order %', fill ->> 'client_order_id' using errcode = 'P0002';
  end if;
  if trade.status = 'filled' then
    select p.* into existing from public.positions p
     where p.id = coalesce(trade.position_id, target_id) and p.user_id = owner;
    return jsonb_build_object('applied', false, 'position', to_jsonb(existing));
  end if;
  perform transitions.check_fill(trade, fill);
  if target_id is distinct from coalesce(trade.position_id, (trade.intent ->> 'position_id')::uuid, target_id) then
    perform transitions.refuse(format('order %s is for position %s, not %s', trade.client_order_id,
                                      coalesce(trade.position_id, (trade.intent ->> 'position_id')::uuid), target_id));
  end if;

  select p.* into existing from public.positions p where p.id = target_id and p.user_id = owner for update;
  if existing.id is null then
    if (fill ->> 'expected_size')::numeric <> 0 then
      raise exception 'position % does not exist', target_id using errcode = 'PT409';
    end if;
    if trade.signal_id is null or (state ->> 'signal_id')::uuid is distinct from trade.signal_id then
      perform transitions.refuse(format('a new position belongs to its order''s signal %s', trade.signal_id));
    end if;
    side := case trade.side when 'BUY' then 'long' else 'short' end::public.position_side;
    increase := true;
  else
    if existing.status = 'closed' then
      raise exception 'position % is closed', target_id using errcode = 'PT409';
    end if;
    if existing.size <> (fill ->> 'expected_size')::numeric then
      raise exception 'position % has size %, not the expected %', target_id, existing.size,
        fill ->> 'expected_size' using errcode = 'PT409';
    end if;
    if (existing.symbol, existing.type) is distinct from (trade.symbol, trade.type) then
      perform transitions.refuse(format('order %s is not for position %s', trade.client_order_id, target_id));
    end if;
    side := existing.side;
    increase := (side = 'long') = (trade.side = 'BUY');
    if not increase and fill_quantity > existing.size then
      perform transitions.refuse(format('a fill of %s is more than position %s holds (%s)', fill_quantity, target_id,
                                        existing.size));
    end if;
  end if;
  if (state ->> 'side')::public.position_side is distinct from side then
    perform transitions.refuse(format('a %s fill makes a %s position, not %s', trade.side, side, state ->> 'side'));
  end if;

  -- The book after the fill: the database's own on paper, the worker's (bounded by the fill) for real.
  if trade.type = 'paper' then
    book := transitions.paper_book(existing, side, increase, fill_quantity, fill_price, fill_fee,
                                   claimed_status = 'closed');
    next_size := (book ->> 'size')::numeric;
    perform transitions.require_same('the position''s size', (state ->> 'size')::numeric, next_size);
    perform transitions.require_same('the average entry price', (state ->> 'entry_price')::numeric,
                                     (book ->> 'entry_price')::numeric);
    perform transitions.require_same('the realised PnL', (state ->> 'realized_pnl')::numeric,
                                     (book ->> 'realized_pnl')::numeric);
    perform transitions.require_same('the fees paid', (state ->> 'fees_paid')::numeric, (book ->> 'fees_paid')::numeric);
    perform transitions.require_same('the cost basis', (state -> 'metadata' ->> 'cost_basis')::numeric,
                                     (book ->> 'cost_basis')::numeric);
    perform transitions.require_same('the entry cost', (state -> 'metadata' ->> 'entry_cost_total')::numeric,
                                     (book ->> 'entry_cost_total')::numeric);
    perform transitions.require_same('the fill''s realised PnL', trade_realized, (book ->> 'realized')::numeric);
    perform transitions.require_same('the paper balance change', (fill ->> 'paper_balance_delta')::numeric,
                                     (book ->> 'cash')::numeric);
  else
    book := jsonb_build_object('size', state ->> 'size', 'entry_price', state ->> 'entry_price',
                               'realized_pnl', state ->> 'realized_pnl', 'fees_paid', state ->> 'fees_paid');
    next_size := (state ->> 'size')::numeric;
    if (increase and not (next_size > coalesce(existing.size, 0) and next_size <= coalesce(existing.size, 0) + fill_quantity))
       or (not increase and next_size <> case when claimed_status = 'closed' then 0 else existing.size - fill_quantity end) then
      perform transitions.refuse(format('a fill of %s does not take position %s from %s to %s', fill_quantity, target_id,
                                        coalesce(existing.size, 0), next_size));
    end if;
  end if;
  next_status := case when next_size = 0 then 'closed' else 'open' end::public.position_status;
  if claimed_status is distinct from next_status then
    perform transitions.refuse(format('position %s would be %s, not %s', target_id, next_status, claimed_status));
  end if;
  if next_status = 'closed' then
    closed_pnl := (book ->> 'realized_pnl')::numeric - (book ->> 'fees_paid')::numeric;
    if trade.type = 'real' then
      closed_pnl := coalesce((state ->> 'pnl')::numeric, closed_pnl);
    end if;
    closed_pnl_percent := case when trade.type = 'real' then (state ->> 'pnl_percent')::numeric
                               when coalesce((book ->> 'entry_cost_total')::numeric, 0) > 0
                               then round(closed_pnl * 100 / (book ->> 'entry_cost_total')::numeric, 8)
                               else 0 end;
  end if;

  if existing.id is null then
    insert into public.positions (id, signal_id, user_id, symbol, side, type, entry_price, size, stop_loss,
                                  take_profit, trailing_stop_percent, trailing_stop_activation_price,
                                  trailing_stop_reference_price, status, realized_pnl, fees_paid, metadata)
    values (target_id, trade.signal_id, owner, trade.symbol, side, trade.type, (book ->> 'entry_price')::numeric,
            next_size, (state ->> 'stop_loss')::numeric, (state ->> 'take_profit')::numeric,
            (state ->> 'trailing_stop_percent')::numeric, (state ->> 'trailing_stop_activation_price')::numeric,
            (state ->> 'trailing_stop_reference_price')::numeric, 'open', (book ->> 'realized_pnl')::numeric,
            (book ->> 'fees_paid')::numeric, coalesce(state -> 'metadata', '{}'::jsonb))
    returning * into existing;
  else
    update public.positions p
       set entry_price = (book ->> 'entry_price')::numeric,
           size = next_size,
           stop_loss = (state ->> 'stop_loss')::numeric,
           take_profit = (state ->> 'take_profit')::numeric,
           trailing_stop_percent = (state ->> 'trailing_stop_percent')::numeric,
           trailing_stop_activation_price = (state ->> 'trailing_stop_activation_price')::numeric,
           trailing_stop_reference_price = (state ->> 'trailing_stop_reference_price')::numeric,
           status = next_status,
           exit_price = case when next_status = 'closed' then fill_price end,
           realized_pnl = (book ->> 'realized_pnl')::numeric,
           fees_paid = (book ->> 'fees_paid')::numeric,
           pnl = closed_pnl,
           pnl_percent = closed_pnl_percent,
           metadata = coalesce(state -> 'metadata', p.metadata),
           closed_at = case when next_status = 'closed' then now() end,
           close_reason = case when next_status = 'closed' then state ->> 'close_reason' end
     where p.id = target_id
    returning p.* into existing;
  end if;

  update public.trades t
     set status = 'filled',
         position_id = existing.id,
         price = fill_price,
         quantity = fill_quantity,
         fee = fill_fee,
         fee_asset = fill ->> 'fee_asset',
         binance_order_id = coalesce((fill ->> 'binance_order_id')::bigint, t.binance_order_id),
         realized_pnl = case when trade.type = 'paper' then (book ->> 'realized')::numeric else trade_realized end,
         error_message = null,
         executed_at = now()
   where t.id = trade.id;

  if fill ->> 'signal_status' is not null then
    select s.* into signal from public.signals s where s.id = existing.signal_id for update;
    perform transitions.move_signal(signal, (fill ->> 'signal_status')::public.signal_status,
                                    fill ->> 'signal_close_reason');
  end if;

  if trade.type = 'paper' then
    perform transitions.open_paper_account(owner);
    -- One statement reads and writes the balance under the row lock, so concurrent fills cannot lose each
    -- other's changes; an overdraft is refused (PT402) before the table's CHECK would be.
    update public.paper_accounts a
       set balance_usd = a.balance_usd + (book ->> 'cash')::numeric
     where a.user_id = owner and a.balance_usd + (book ->> 'cash')::numeric >= 0
    returning a.balance_usd into balance;
    if balance is null then
      raise exception 'paper balance would become negative (by %)', book ->> 'cash' using errcode = 'PT402';
    end if;
  end if;
  return jsonb_build_object('applied', true, 'position', to_jsonb(existing), 'paper_balance', balance);
end
$$;

-- Change an open position's protection: stops, targets, trailing state, the exchange ids of its resting
-- exits, and the `protection` and `trailing_stop_price` keys of its metadata. Only the keys present change.
create function transitions.update_position(position_id uuid, changes jsonb) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  owner uuid := transitions.caller();
  unknown text;
  changed public.positions;
begin
  select string_agg(key, ', ') into unknown from jsonb_object_keys(changes) as key
   where key not in ('stop_loss', 'take_profit', 'stop_loss_order_id', 'take_profit_order_id',
                     'trailing_stop_percent', 'trailing_stop_activation_price', 'trailing_stop_reference_price',
                     'metadata');
  if unknown is null and changes ? 'metadata' then
    select string_agg(key, ', ') into unknown from jsonb_object_keys(changes -> 'metadata') as key
     where key not in ('protection', 'trailing_stop_price');
  end if;
  if unknown is not null then
    perform transitions.refuse(format('a position''s protection is all that changes here, not %s', unknown));
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
   where p.id = update_position.position_id and p.user_id = owner and p.status = 'open'
  returning p.* into changed;
  if changed.id is null then
    raise exception 'no open position %', update_position.position_id using errcode = 'PT409';
  end if;
  return to_jsonb(changed);
end
$$;

-- A machine reports itself alive with the database's clock (the clock the pg_cron watchdog compares
-- against), its state and version; only its own row.
create function transitions.record_heartbeat(status public.machine_status, version text)
returns public.fly_machines
language plpgsql
security definer
set search_path = ''
as $$
declare
  owner uuid := transitions.caller();
  machine public.fly_machines;
begin
  if record_heartbeat.status not in ('starting', 'running', 'stopping', 'stopped') then
    raise exception 'a machine may report starting, running, stopping or stopped, not %', record_heartbeat.status
      using errcode = '22023';
  end if;
  update public.fly_machines m
     set last_heartbeat = now(),
         status = record_heartbeat.status,
         version = coalesce(record_heartbeat.version, m.version),
         error_message = null
   where m.machine_id = auth.jwt() ->> 'machine_id' and m.user_id = owner and m.status <> 'destroyed'
  returning m.* into machine;
  if machine.id is null then
    raise exception 'no machine row for machine_id %', auth.jwt() ->> 'machine_id' using errcode = 'P0002';
  end if;
  return machine;
end
$$;

revoke execute on all functions in schema transitions from public;
grant execute on function transitions.paper_balance(), transitions.create_signal(uuid, uuid, text, numeric),
  transitions.set_signal(uuid, public.signal_status, text, text, public.signal_status),
  transitions.record_order(jsonb), transitions.mark_order(text, public.order_status, bigint, text),
  transitions.apply_fill(jsonb), transitions.update_position(uuid, jsonb),
  transitions.record_heartbeat(public.machine_status, text)
  to trader_machine;

-- The API: SECURITY INVOKER wrappers, executable by the machine role only -------------------------------
create or replace function public.trading_paper_balance() returns numeric
language sql
set search_path = ''
as $$
  select transitions.paper_balance()
$$;

create function public.trading_create_signal(signal_id uuid, trader_id uuid, symbol text, trigger_price numeric)
returns text
language sql
set search_path = ''
as $$
  select transitions.create_signal(signal_id, trader_id, symbol, trigger_price)
$$;

drop function public.trading_set_signal(uuid, public.signal_status, text, text);
create function public.trading_set_signal(signal_id uuid, status public.signal_status default null,
                                          close_reason text default null, refusal text default null,
                                          expected_status public.signal_status default null)
returns jsonb
language sql
set search_path = ''
as $$
  select transitions.set_signal(signal_id, status, close_reason, refusal, expected_status)
$$;

create or replace function public.trading_record_order(trade jsonb) returns jsonb
language sql
set search_path = ''
as $$
  select transitions.record_order(trade)
$$;

create or replace function public.trading_mark_order(client_order_id text, status public.order_status,
                                                     binance_order_id bigint default null,
                                                     error_message text default null)
returns jsonb
language sql
set search_path = ''
as $$
  select transitions.mark_order(client_order_id, status, binance_order_id, error_message)
$$;

create or replace function public.trading_apply_fill(fill jsonb) returns jsonb
language sql
set search_path = ''
as $$
  select transitions.apply_fill(fill)
$$;

create or replace function public.trading_update_position(position_id uuid, changes jsonb) returns jsonb
language sql
set search_path = ''
as $$
  select transitions.update_position(position_id, changes)
$$;

create or replace function public.record_machine_heartbeat(
  status public.machine_status default 'running',
  version text default null
) returns public.fly_machines
language sql
set search_path = ''
as $$
  select transitions.record_heartbeat(status, version)
$$;

revoke execute on function public.trading_create_signal(uuid, uuid, text, numeric),
  public.trading_set_signal(uuid, public.signal_status, text, text, public.signal_status)
  from public, anon, authenticated, service_role;
grant execute on function public.trading_create_signal(uuid, uuid, text, numeric),
  public.trading_set_signal(uuid, public.signal_status, text, text, public.signal_status) to trader_machine;

-- The worker must change with this schema (signals through trading_create_signal, orders recorded with
-- their price, paper cash computed here).
create or replace function public.schema_version() returns integer
language sql immutable
set search_path = ''
as $$
  select 2
$$;
