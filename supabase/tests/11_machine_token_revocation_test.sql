-- Machine tokens are honoured only while their machine is live at the token's generation: restrictive
-- policies on every table the machine role may touch (also tables created later), PostgREST's pre-request
-- hook, and next_machine_token_generation() for a replaced machine.
begin;
select plan(18);

select tests.create_user('a0000000-0000-4000-8000-000000000001', 'a@example.com');
select tests.create_trader('a0000000-0000-4000-8000-000000000001', 'A', 'a0000000-0000-4000-8000-0000000000a1');
select tests.create_trading_history('a0000000-0000-4000-8000-000000000001', 'a0000000-0000-4000-8000-0000000000a1');
select tests.create_machine('a0000000-0000-4000-8000-000000000001', 'machine-a');
insert into public.fly_machines (user_id, machine_id, status, destroyed_at)
values ('a0000000-0000-4000-8000-000000000001', 'machine-a-old', 'destroyed', now());
insert into public.notifications (user_id, kind, title)
values ('a0000000-0000-4000-8000-000000000001', 'signal_new', 'Written by the test');

select is(
  (select array_agg(c.relname::text order by c.relname)
     from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where n.nspname = 'public' and c.relkind in ('r', 'p')
      and (has_table_privilege('trader_machine', c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE')
           or has_any_column_privilege('trader_machine', c.oid, 'SELECT, INSERT, UPDATE'))
      and not exists (select from pg_policy p where p.polrelid = c.oid and not p.polpermissive
                        and p.polname = 'machine tokens only while the machine is live'
                        and 'trader_machine'::regrole = any(p.polroles))),
  null,
  'every public table the machine role may touch carries the restrictive live-machine policy');

create table public.added_later (id int primary key, user_id uuid);
alter table public.added_later enable row level security;
grant select on public.added_later to trader_machine;
select policies_are('public', 'added_later', array['machine tokens only while the machine is live'],
  'a table granted to the machine role later gets the policy from the event trigger');
drop table public.added_later;

-- The live machine at generation 1 -------------------------------------------------------------------------
select tests.authenticate_as_machine('a0000000-0000-4000-8000-000000000001', 'machine-a', 1);
select is((select count(*) from public.traders), 1::bigint, 'a live machine''s token reads its user''s traders');
select is((select count(*) from public.positions), 1::bigint, 'and positions');
select is((select count(*) from public.notifications where title = 'Written by the test'), 1::bigint,
  'and notifications');
select lives_ok('select request_hooks.check_request()', 'the pre-request hook lets a live machine''s token through');

-- A token of an earlier generation, of a destroyed machine, naming no generation ------------------------------
select tests.authenticate_as_machine('a0000000-0000-4000-8000-000000000001', 'machine-a', 2);
select is((select count(*) from public.traders), 0::bigint, 'a token of another generation reads nothing');
select throws_ok('select request_hooks.check_request()', 'PT401', 'machine token revoked',
  'the pre-request hook answers 401 to a token of another generation');

select tests.authenticate_as_machine('a0000000-0000-4000-8000-000000000001', 'machine-a-old', 1);
select is((select count(*) from public.traders), 0::bigint, 'a destroyed machine''s token reads nothing');
select is((select count(*) from public.notifications), 0::bigint,
  'nor notifications (a table of a later migration)');
select throws_ok('select request_hooks.check_request()', 'PT401', 'machine token revoked',
  'the pre-request hook answers 401 to a destroyed machine''s token');
select throws_ok($$insert into public.signals (id, trader_id, user_id, symbol, trigger_price)
  values (gen_random_uuid(), 'a0000000-0000-4000-8000-0000000000a1', 'a0000000-0000-4000-8000-000000000001',
          'ETHUSDT', 1)$$, '42501', null,
  'a destroyed machine''s token writes nothing');

select set_config('request.jwt.claims', json_build_object('sub', 'a0000000-0000-4000-8000-000000000001',
  'role', 'trader_machine', 'machine_id', 'machine-a')::text, true);
select is((select count(*) from public.traders), 0::bigint, 'a machine token without machine_gen reads nothing');

-- Users and operators are not affected by the hook -------------------------------------------------------
select tests.authenticate_as('a0000000-0000-4000-8000-000000000001');
select lives_ok('select request_hooks.check_request()', 'the pre-request hook lets user sessions through');
select throws_ok($$select public.next_machine_token_generation('machine-a')$$, '42501', null,
  'a user cannot give a machine a new identity');

-- A replaced machine: the generation moves on, the old token is dead, a token of the new one lives ----------
select tests.clear_authentication();
set local role service_role;
select is(public.next_machine_token_generation('machine-a'), 2, 'service_role moves the generation on');
select is(public.next_machine_token_generation('machine-a-old'), null::int, 'a destroyed machine has no next identity');
reset role;
select tests.authenticate_as_machine('a0000000-0000-4000-8000-000000000001', 'machine-a', 2);
select is((select count(*) from public.traders), 1::bigint, 'the new generation''s token reads again');

select * from finish();
rollback;
