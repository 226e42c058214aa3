-- The pg_cron watchdog: every minute, a running machine silent for over 2 minutes becomes `error`.
begin;
select plan(7);

select results_eq($$select schedule, command, active from cron.job where jobname = 'mark-stale-machines'$$,
  $$values ('* * * * *'::text, 'select private.mark_stale_machines()'::text, true)$$,
  'the watchdog job runs every minute');

select tests.create_user('a0000000-0000-4000-8000-000000000001', 'a@example.com');
select tests.create_user('b0000000-0000-4000-8000-000000000001', 'b@example.com');
select tests.create_user('c0000000-0000-4000-8000-000000000001', 'c@example.com');
select tests.create_user('d0000000-0000-4000-8000-000000000001', 'd@example.com');
insert into public.fly_machines (user_id, machine_id, status, last_heartbeat, updated_at) values
  ('a0000000-0000-4000-8000-000000000001', 'silent', 'running', now() - interval '3 minutes', now() - interval '1 hour'),
  ('b0000000-0000-4000-8000-000000000001', 'alive', 'running', now() - interval '30 seconds', now() - interval '1 hour'),
  ('c0000000-0000-4000-8000-000000000001', 'stopped', 'stopped', now() - interval '1 hour', now() - interval '1 hour'),
  ('d0000000-0000-4000-8000-000000000001', 'never-beat', 'running', null, now() - interval '5 minutes');

-- Run exactly what pg_cron runs.
do $$ begin execute (select command from cron.job where jobname = 'mark-stale-machines'); end $$;

select is((select status::text from public.fly_machines where machine_id = 'silent'), 'error',
  'a machine silent for 3 minutes is marked error');
select ok((select error_message like 'no heartbeat since %' from public.fly_machines where machine_id = 'silent'),
  'the error says since when it has been silent');
select is((select status::text from public.fly_machines where machine_id = 'alive'), 'running',
  'a machine that beat 30 s ago stays running');
select is((select status::text from public.fly_machines where machine_id = 'stopped'), 'stopped',
  'a stopped machine is left alone');
select is((select status::text from public.fly_machines where machine_id = 'never-beat'), 'error',
  'a running machine that never sent a heartbeat is judged by its last state change');
select is(private.mark_stale_machines(), 0, 'a second run finds nothing more to mark');

select * from finish();
rollback;
