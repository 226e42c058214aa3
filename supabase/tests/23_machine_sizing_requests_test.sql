-- A machine's own sizing requests: one evaluation per machine per interval (the wait is returned), per machine,
-- service_role only.
begin;
select plan(7);

select tests.create_user('a2300000-0000-4000-8000-000000000001', 'sz-a@example.com', 'pro');
select tests.create_machine('a2300000-0000-4000-8000-000000000001', 'machine-sz-a', 'running');
select tests.create_user('a2300000-0000-4000-8000-000000000002', 'sz-b@example.com', 'pro');
select tests.create_machine('a2300000-0000-4000-8000-000000000002', 'machine-sz-b', 'running');
select tests.authenticate_as_service_role();

select is(public.claim_machine_sizing((select id from public.fly_machines where machine_id = 'machine-sz-a'), 30), 0,
  'a first request is evaluated');
select is(public.claim_machine_sizing((select id from public.fly_machines where machine_id = 'machine-sz-a'), 30), 30,
  'a second within the interval waits for the rest of it (now() is the transaction''s: all of it)');
select is(public.claim_machine_sizing((select id from public.fly_machines where machine_id = 'machine-sz-b'), 30), 0,
  'another machine is counted on its own');
update public.fly_machines set sizing_requested_at = now() - interval '31 seconds' where machine_id = 'machine-sz-a';
select is(public.claim_machine_sizing((select id from public.fly_machines where machine_id = 'machine-sz-a'), 30), 0,
  'after the interval the next request is evaluated');
select throws_ok($$select public.claim_machine_sizing(gen_random_uuid(), 30)$$, 'P0002', null,
  'a machine without a live row is refused');

select tests.authenticate_as_machine('a2300000-0000-4000-8000-000000000001', 'machine-sz-a');
select throws_ok($$select public.claim_machine_sizing(
  (select id from public.fly_machines where machine_id = 'machine-sz-a'), 0)$$, '42501', null,
  'machine: cannot reset its own rate limit');
select tests.authenticate_as('a2300000-0000-4000-8000-000000000001');
select throws_ok($$select public.claim_machine_sizing(gen_random_uuid(), 0)$$, '42501', null,
  'user: cannot call it');

select * from finish();
rollback;
