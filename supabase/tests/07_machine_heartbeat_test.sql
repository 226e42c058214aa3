-- record_machine_heartbeat(): a machine refreshes only its own row, on the database clock.
begin;
select plan(8);

select tests.create_user('a0000000-0000-4000-8000-000000000001', 'a@example.com');
select tests.create_user('b0000000-0000-4000-8000-000000000001', 'b@example.com');
insert into public.fly_machines (user_id, machine_id, status, last_heartbeat, error_message) values
  ('a0000000-0000-4000-8000-000000000001', 'machine-a', 'error', now() - interval '1 hour', 'no heartbeat since then'),
  ('b0000000-0000-4000-8000-000000000001', 'machine-b', 'running', now() - interval '1 hour', null);

select tests.authenticate_as_machine('a0000000-0000-4000-8000-000000000001', 'machine-a');
select results_eq($$select status::text, version from public.record_machine_heartbeat('running', 'v1.2.3')$$,
  $$values ('running'::text, 'v1.2.3'::text)$$, 'a heartbeat marks the machine running at its version');
select lives_ok($$select public.record_machine_heartbeat('stopping')$$, 'a machine reports that it is stopping');
select throws_ok($$select public.record_machine_heartbeat('destroyed')$$, '22023', null,
  'a machine cannot declare itself destroyed');

select tests.authenticate_as_machine('a0000000-0000-4000-8000-000000000001', 'machine-b');
select throws_ok($$select public.record_machine_heartbeat()$$, '42501', null,
  'a token for another user''s machine id refreshes nothing (no live machine of this user has that id)');

select tests.authenticate_as('a0000000-0000-4000-8000-000000000001');
select throws_ok($$select public.record_machine_heartbeat()$$, '42501', null, 'a user cannot send heartbeats');

select tests.clear_authentication();
select results_eq($$select status::text, version, error_message from public.fly_machines where machine_id = 'machine-a'$$,
  $$values ('stopping'::text, 'v1.2.3'::text, null::text)$$, 'the heartbeat kept the version and cleared the error');
select ok((select last_heartbeat > now() - interval '1 second' from public.fly_machines where machine_id = 'machine-a'),
  'last_heartbeat is the database''s now()');
select ok((select last_heartbeat < now() - interval '59 minutes' from public.fly_machines where machine_id = 'machine-b'),
  'B''s machine was not touched');

select * from finish();
rollback;
