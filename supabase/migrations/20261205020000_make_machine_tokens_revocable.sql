-- Machine tokens are short-lived and revocable. Each fly_machines row carries the generation of the identity
-- its machine version was given (provision-machine starts at 1, every update-machines moves it on). A
-- trader_machine JWT is honoured only while its machine row is not destroyed and the token's `machine_gen` is
-- the row's current generation, so destroying or replacing a machine refuses its tokens at once, everywhere:
--   - PostgREST: a pre-request hook answers 401 (PT401) to every table and RPC request with a dead token;
--   - Realtime (and any other path that reads through RLS): a restrictive policy on every public table the
--     machine role holds any privilege on, ANDed with the permissive ones. An event trigger adds it to
--     tables created or granted later (migrations that sort after this one), so none is missed;
--   - Edge Functions check the same row (supabase/functions/_shared/auth.ts).

alter table public.fly_machines
  add column token_generation integer not null default 1
  constraint fly_machines_token_generation_positive check (token_generation > 0);

-- The request checks' schema: not exposed through the API, usable by every API role, so a policy that calls
-- into it also evaluates where a client names the function as text (Realtime's DELETE check).
create schema request_hooks;
revoke all on schema request_hooks from public;
grant usage on schema request_hooks to anon, authenticated, service_role, trader_machine;

-- True when the request's trader_machine token belongs to a live machine at its current generation.
create function request_hooks.is_live_machine_token() returns boolean
language sql stable
security definer
set search_path = ''
as $$
  select exists (
    select from public.fly_machines m
     where m.machine_id = (auth.jwt() ->> 'machine_id')
       and m.user_id = auth.uid()
       and m.status <> 'destroyed'
       and m.token_generation::text = (auth.jwt() ->> 'machine_gen')
  )
$$;
revoke execute on function request_hooks.is_live_machine_token() from public, anon, authenticated, service_role;
grant execute on function request_hooks.is_live_machine_token() to trader_machine;

-- The restrictive policy on every public table trader_machine may touch (idempotent).
create function private.restrict_machine_tables_to_live_machines() returns void
language plpgsql
set search_path = ''
as $$
declare
  target regclass;
begin
  for target in
    select c.oid::regclass
      from pg_class c
      join pg_namespace n on n.oid = c.relnamespace
     where n.nspname = 'public' and c.relkind in ('r', 'p')
       and (has_table_privilege('trader_machine', c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE')
            or has_any_column_privilege('trader_machine', c.oid, 'SELECT, INSERT, UPDATE'))
       and not exists (select from pg_policy p
                        where p.polrelid = c.oid and p.polname = 'machine tokens only while the machine is live')
  loop
    execute format(
      'create policy "machine tokens only while the machine is live" on %s as restrictive '
      'for all to trader_machine using ((select request_hooks.is_live_machine_token())) '
      'with check ((select request_hooks.is_live_machine_token()))',
      target);
  end loop;
end
$$;
revoke execute on function private.restrict_machine_tables_to_live_machines() from public;

create function private.restrict_new_machine_tables() returns event_trigger
language plpgsql
set search_path = ''
as $$
begin
  perform private.restrict_machine_tables_to_live_machines();
end
$$;

-- Supabase lets the postgres role create event triggers (supautils; "Event Triggers" in Supabase's docs).
create event trigger restrict_new_machine_tables on ddl_command_end
  when tag in ('CREATE TABLE', 'CREATE TABLE AS', 'GRANT', 'ALTER TABLE')
  execute function private.restrict_new_machine_tables();

select private.restrict_machine_tables_to_live_machines();

-- PostgREST's pre-request hook (db-pre-request, set in-database on the authenticator role as Supabase
-- projects do).
create function request_hooks.check_request() returns void
language plpgsql stable
security definer
set search_path = ''
as $$
begin
  if auth.role() = 'trader_machine' and not request_hooks.is_live_machine_token() then
    raise sqlstate 'PT401' using
      message = 'machine token revoked',
      detail = 'the machine this token was issued to has been destroyed or replaced',
      hint = 'a live machine renews its token at functions/v1/machine-token';
  end if;
end
$$;
revoke execute on function request_hooks.check_request() from public;
grant execute on function request_hooks.check_request() to anon, authenticated, service_role, trader_machine;

alter role authenticator set pgrst.db_pre_request = 'request_hooks.check_request';
notify pgrst, 'reload config';

-- The lifecycle functions give a machine version a new identity: the old generation's tokens and
-- credential stop working in the same statement.
create function public.next_machine_token_generation(machine_id text) returns integer
language sql
security definer
set search_path = ''
as $$
  update public.fly_machines m
     set token_generation = m.token_generation + 1, updated_at = now()
   where m.machine_id = next_machine_token_generation.machine_id and m.status <> 'destroyed'
  returning m.token_generation
$$;
revoke execute on function public.next_machine_token_generation(text) from public, anon, authenticated, trader_machine;
grant execute on function public.next_machine_token_generation(text) to service_role;
