-- A worker machine reports itself alive (and its state and version) with one call that uses the database's
-- clock, the same clock the pg_cron watchdog compares against, so machine clock skew cannot fake freshness.

create function public.record_machine_heartbeat(
  status public.machine_status default 'running',
  version text default null
) returns public.fly_machines
language plpgsql
set search_path = ''
as $$
declare
  machine public.fly_machines;
begin
  if auth.role() is distinct from 'trader_machine' then
    raise exception 'only a trader machine may send heartbeats' using errcode = '42501';
  end if;
  if record_machine_heartbeat.status not in ('starting', 'running', 'stopping', 'stopped') then
    raise exception 'a machine may report starting, running, stopping or stopped, not %', record_machine_heartbeat.status
      using errcode = '22023';
  end if;
  -- Runs as the caller: the fly_machines policies limit this to the machine's own row.
  update public.fly_machines m
     set last_heartbeat = now(),
         status = record_machine_heartbeat.status,
         version = coalesce(record_machine_heartbeat.version, m.version),
         error_message = null
   where m.machine_id = auth.jwt() ->> 'machine_id' and m.user_id = auth.uid() and m.status <> 'destroyed'
  returning m.* into machine;
  if machine.id is null then
    raise exception 'no machine row for machine_id %', auth.jwt() ->> 'machine_id' using errcode = 'P0002';
  end if;
  return machine;
end
$$;

revoke execute on function public.record_machine_heartbeat(public.machine_status, text)
  from public, anon, authenticated, service_role;
grant execute on function public.record_machine_heartbeat(public.machine_status, text) to trader_machine;
