-- A worker machine may ask scale-machines to size it right away (its trader sync saw new traders and holds
-- them until the answer), instead of waiting for pg_cron's next run. The machine's token names only its own
-- machine, and the function decides the size from the machine's load within the tier and the cooldown; this
-- keeps the asking itself cheap: at most one evaluation per machine per `min_interval_secs`, counted here so
-- that concurrent requests (several function instances) cannot both pass.

alter table public.fly_machines add column sizing_requested_at timestamptz;

-- Take the machine's next sizing evaluation; 0 when taken, else the whole seconds until one may be taken.
create function public.claim_machine_sizing(machine_row_id uuid, min_interval_secs integer default 30)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  last_at timestamptz;
begin
  if min_interval_secs < 0 then
    raise exception 'min_interval_secs must not be negative' using errcode = '22023';
  end if;
  select m.sizing_requested_at into last_at from public.fly_machines m
   where m.id = machine_row_id and m.status <> 'destroyed' for update;
  if not found then
    raise exception 'no live machine row %', machine_row_id using errcode = 'P0002';
  end if;
  if last_at is not null and last_at > now() - make_interval(secs => min_interval_secs) then
    return greatest(1, ceil(extract(epoch from last_at + make_interval(secs => min_interval_secs) - now())))::integer;
  end if;
  update public.fly_machines set sizing_requested_at = now() where id = machine_row_id;
  return 0;
end
$$;

revoke execute on function public.claim_machine_sizing(uuid, integer)
  from public, anon, authenticated, service_role, trader_machine;
grant execute on function public.claim_machine_sizing(uuid, integer) to service_role;
