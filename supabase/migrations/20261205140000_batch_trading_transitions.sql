-- Batched forms of the worker's hot trading transitions: many calls of trading_record_order,
-- trading_apply_fill or trading_update_position in one request and one transaction. A price that crosses the
-- stops of ten positions records ten close orders with one round trip (one JWT check, one pre-request hook, one
-- commit) before any of them is sent, instead of ten that queue behind each other.
--
-- Each takes `calls`, a JSON array of the single function's named arguments, runs the single function for
-- every element in order (so every check and trigger of the single form applies unchanged), and returns the
-- array of their results in the same order. One refused element rolls back the whole batch: the worker then
-- sends each call alone to learn which one failed and why (worker/db/batching.py). A change to a single
-- function's arguments must be made here too.

create function public.trading_record_orders(calls jsonb) returns jsonb
language sql
set search_path = ''
as $$
  select coalesce(jsonb_agg(public.trading_record_order(c.call -> 'trade') order by c.n), '[]'::jsonb)
    from jsonb_array_elements(calls) with ordinality as c(call, n)
$$;

create function public.trading_apply_fills(calls jsonb) returns jsonb
language sql
set search_path = ''
as $$
  select coalesce(jsonb_agg(public.trading_apply_fill(c.call -> 'fill') order by c.n), '[]'::jsonb)
    from jsonb_array_elements(calls) with ordinality as c(call, n)
$$;

create function public.trading_update_positions(calls jsonb) returns jsonb
language sql
set search_path = ''
as $$
  select coalesce(jsonb_agg(public.trading_update_position((c.call ->> 'position_id')::uuid, c.call -> 'changes')
                            order by c.n), '[]'::jsonb)
    from jsonb_array_elements(calls) with ordinality as c(call, n)
$$;

revoke execute on function public.trading_record_orders(jsonb), public.trading_apply_fills(jsonb),
  public.trading_update_positions(jsonb)
  from public, anon, authenticated, service_role;
grant execute on function public.trading_record_orders(jsonb), public.trading_apply_fills(jsonb),
  public.trading_update_positions(jsonb)
  to trader_machine;
