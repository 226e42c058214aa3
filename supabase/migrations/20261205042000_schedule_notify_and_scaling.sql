-- pg_cron and pg_net drive the notify and scale-machines Edge Functions; machine resizes are recorded, with a
-- cooldown enforced here so that concurrent scaler runs cannot resize one machine twice.
--
-- Edge Functions are invoked from SQL with pg_net as Supabase's "Scheduling Edge Functions" guide does: the
-- project URL and the service_role key are read from Vault secrets `project_url` and `service_role_key`
-- (created once per project by the operator, see README's Deploy section; supabase/seed.sql creates the local
-- ones). Without pg_net or the secrets the invocation is skipped with a notice, never failing the caller.
-- notify runs every minute (retries) and right after deliveries are queued (a statement trigger, like a
-- Database Webhook); scale-machines runs every minute.

do $$
begin
  if exists (select from pg_available_extensions where name = 'pg_net') then
    create extension if not exists pg_net;
  end if;
end
$$;

-- POST `body` to the Edge Function `function_name` as service_role; returns pg_net's request id, or null when
-- pg_net or the Vault secrets are missing.
create function private.invoke_edge_function(function_name text, body jsonb default '{}'::jsonb) returns bigint
language plpgsql
security definer
set search_path = ''
as $$
declare
  project_url text;
  service_key text;
begin
  if to_regprocedure('net.http_post(text, jsonb, jsonb, jsonb, integer)') is null then
    raise notice 'pg_net is not installed: % not invoked', function_name;
    return null;
  end if;
  select decrypted_secret into project_url from vault.decrypted_secrets where name = 'project_url';
  select decrypted_secret into service_key from vault.decrypted_secrets where name = 'service_role_key';
  if project_url is null or service_key is null then
    raise notice 'vault secrets project_url and service_role_key are not set: % not invoked', function_name;
    return null;
  end if;
  return net.http_post(
    url := rtrim(project_url, '/') || '/functions/v1/' || function_name,
    body := body,
    headers := jsonb_build_object('Content-Type', 'application/json', 'Authorization', 'Bearer ' || service_key),
    timeout_milliseconds := 120000
  );
end
$$;
revoke execute on function private.invoke_edge_function(text, jsonb) from public;

-- Deliver at once what was queued due now (deliveries waiting for quiet hours go with the minutely run).
create function private.kick_notify() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if exists (select from queued where next_attempt_at <= now()) then
    perform private.invoke_edge_function('notify');
  end if;
  return null;
end
$$;
revoke execute on function private.kick_notify() from public;
create trigger notification_deliveries_kick_notify after insert on public.notification_deliveries
  referencing new table as queued for each statement execute function private.kick_notify();

select cron.schedule('notify-deliveries', '* * * * *', $$select private.invoke_edge_function('notify')$$);
select cron.schedule('scale-machines', '* * * * *', $$select private.invoke_edge_function('scale-machines')$$);

-- Machine resizes ------------------------------------------------------------------------------------------
create type public.machine_resize_status as enum ('in_progress', 'applied', 'rolled_back', 'failed');

create table public.machine_resizes (
  id uuid primary key default gen_random_uuid(),
  fly_machine_row_id uuid not null references public.fly_machines (id) on delete cascade,
  user_id uuid not null references public.users (id) on delete cascade,
  machine_id text not null,
  from_cpus integer not null,
  from_memory_mb integer not null,
  to_cpus integer not null,
  to_memory_mb integer not null,
  -- What the scaler saw: the figures it decided on, for the user and the operator.
  reason text not null,
  status public.machine_resize_status not null default 'in_progress',
  error text,
  started_at timestamptz not null default now(),
  finished_at timestamptz,
  constraint machine_resizes_changes_size check ((from_cpus, from_memory_mb) <> (to_cpus, to_memory_mb)),
  constraint machine_resizes_finished check ((status = 'in_progress') = (finished_at is null)),
  constraint machine_resizes_reason_length check (char_length(reason) <= 1000),
  constraint machine_resizes_error_length check (error is null or char_length(error) <= 2000)
);
create index machine_resizes_machine_started_idx on public.machine_resizes (fly_machine_row_id, started_at desc);
create index machine_resizes_user_id_idx on public.machine_resizes (user_id);
-- One resize in flight per machine.
create unique index machine_resizes_one_in_progress on public.machine_resizes (fly_machine_row_id)
  where status = 'in_progress';

-- Start a resize unless the machine was resized (or a resize was tried) within `cooldown_secs`; returns the
-- resize id, or null when the cooldown holds. The machine row is locked, so two scaler runs cannot both start.
create function public.begin_machine_resize(
  machine_row_id uuid, to_cpus integer, to_memory_mb integer, reason text, cooldown_secs integer default 300
) returns uuid
language plpgsql
security definer
set search_path = ''
as $$
declare
  machine public.fly_machines;
  resize_id uuid;
begin
  if cooldown_secs < 0 then
    raise exception 'cooldown_secs must not be negative' using errcode = '22023';
  end if;
  select * into machine from public.fly_machines m where m.id = machine_row_id and m.status <> 'destroyed' for update;
  if not found then
    raise exception 'no live machine row %', machine_row_id using errcode = 'P0002';
  end if;
  if exists (select from public.machine_resizes r
              where r.fly_machine_row_id = machine_row_id
                and (r.status = 'in_progress' or r.started_at > now() - make_interval(secs => cooldown_secs))) then
    return null;
  end if;
  insert into public.machine_resizes (fly_machine_row_id, user_id, machine_id, from_cpus, from_memory_mb,
                                      to_cpus, to_memory_mb, reason)
  values (machine.id, machine.user_id, machine.machine_id, machine.cpus, coalesce(machine.memory_mb, 0),
          begin_machine_resize.to_cpus, begin_machine_resize.to_memory_mb, left(begin_machine_resize.reason, 1000))
  returning id into resize_id;
  return resize_id;
end
$$;

-- Record how a resize ended. `applied` sets the machine's size (its billed interval follows) and tells the user.
create function public.finish_machine_resize(resize_id uuid, status public.machine_resize_status, error text default null)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  resize public.machine_resizes;
begin
  if status = 'in_progress' then
    raise exception 'a resize ends applied, rolled_back or failed' using errcode = '22023';
  end if;
  update public.machine_resizes r
     set status = finish_machine_resize.status, error = left(finish_machine_resize.error, 2000), finished_at = now()
   where r.id = resize_id and r.status = 'in_progress'
  returning * into resize;
  if resize.id is null then
    raise exception 'no resize % in progress', resize_id using errcode = 'P0002';
  end if;
  if resize.status = 'applied' then
    update public.fly_machines set cpus = resize.to_cpus, memory_mb = resize.to_memory_mb
     where id = resize.fly_machine_row_id;
    insert into public.notifications (user_id, kind, title, body, data)
    values (resize.user_id, 'machine_resized',
            format('Machine resized to %s vCPU / %s MB', resize.to_cpus, resize.to_memory_mb),
            resize.reason,
            jsonb_build_object('machineId', resize.machine_id, 'fromCpus', resize.from_cpus,
                               'fromMemoryMb', resize.from_memory_mb, 'toCpus', resize.to_cpus,
                               'toMemoryMb', resize.to_memory_mb));
  end if;
end
$$;

revoke all on table public.machine_resizes from public, anon, authenticated, service_role, trader_machine;
alter table public.machine_resizes enable row level security;
grant all on table public.machine_resizes to service_role;
grant select on public.machine_resizes to authenticated;
create policy "users read their own machine resizes" on public.machine_resizes
  for select to authenticated using ((select auth.uid()) = user_id);

revoke execute on function public.begin_machine_resize(uuid, integer, integer, text, integer),
  public.finish_machine_resize(uuid, public.machine_resize_status, text)
  from public, anon, authenticated, service_role, trader_machine;
grant execute on function public.begin_machine_resize(uuid, integer, integer, text, integer),
  public.finish_machine_resize(uuid, public.machine_resize_status, text) to service_role;
