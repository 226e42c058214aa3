-- Realtime: workers follow their traders; the app follows signals and positions.
-- REPLICA IDENTITY FULL on traders puts the whole old row in the WAL, so a DELETE still carries user_id and
-- reaches a `user_id=eq.<id>` subscription (with the default identity only the primary key would).
alter publication supabase_realtime add table public.traders, public.signals, public.positions;
alter table public.traders replica identity full;

-- Heartbeat watchdog: a running machine that has not sent a heartbeat for 2 minutes is marked error.
-- A machine that never sent one is judged by when it last changed state.
create function private.mark_stale_machines() returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  marked integer;
begin
  update public.fly_machines
     set status = 'error',
         error_message = format('no heartbeat since %s', coalesce(last_heartbeat, updated_at))
   where status = 'running'
     and coalesce(last_heartbeat, updated_at) < now() - interval '2 minutes';
  get diagnostics marked = row_count;
  return marked;
end
$$;
revoke execute on function private.mark_stale_machines() from public;

create extension if not exists pg_cron with schema pg_catalog;
grant usage on schema cron to postgres;

-- cron.schedule replaces a job of the same name, so re-running this is harmless.
select cron.schedule('mark-stale-machines', '* * * * *', 'select private.mark_stale_machines()');
