-- machine_logs: written by the user's live machine through record_machine_logs(), read only by that user,
-- retried batches recorded once, pruned after 7 days.
begin;
select plan(16);

select tests.create_user('a0000000-0000-4000-8000-000000000001', 'a@example.com');
select tests.create_user('b0000000-0000-4000-8000-000000000001', 'b@example.com');
select tests.create_machine('a0000000-0000-4000-8000-000000000001', 'machine-a');
select tests.create_machine('b0000000-0000-4000-8000-000000000001', 'machine-b');
insert into public.fly_machines (user_id, machine_id, status, destroyed_at)
values ('a0000000-0000-4000-8000-000000000001', 'machine-a-old', 'destroyed', now());

select tests.authenticate_as_machine('a0000000-0000-4000-8000-000000000001', 'machine-a');
select is(public.record_machine_logs($$[
  {"id": "11000000-0000-4000-8000-000000000001", "logged_at": "2026-12-05T09:00:00Z", "level": "INFO",
   "logger": "worker.app", "message": "worker started"},
  {"id": "11000000-0000-4000-8000-000000000002", "logged_at": "2026-12-05T09:00:01Z", "level": "ERROR",
   "logger": "worker.trading", "message": "order refused"}
]$$), 2, 'a machine records a batch of lines');
select is(public.record_machine_logs($$[
  {"id": "11000000-0000-4000-8000-000000000002", "logged_at": "2026-12-05T09:00:01Z", "level": "ERROR",
   "logger": "worker.trading", "message": "order refused"},
  {"id": "11000000-0000-4000-8000-000000000003", "logged_at": "2026-12-05T09:00:02Z", "level": "WARNING",
   "logger": "worker.feed", "message": "reconnecting"}
]$$), 1, 'a retried batch records only the lines that are new');
select is(public.record_machine_logs(jsonb_build_array(jsonb_build_object(
  'id', '11000000-0000-4000-8000-000000000004', 'logged_at', '2026-12-05T09:00:03Z', 'level', 'DEBUG',
  'logger', 'worker.sandbox', 'message', repeat('x', 5000)))), 1, 'an overlong line is accepted');
select throws_ok($$select public.record_machine_logs('{"id": 1}')$$, '22023', null, 'the batch must be an array');
select throws_ok(
  $$select public.record_machine_logs((select jsonb_agg(jsonb_build_object('id', gen_random_uuid(),
      'logged_at', now(), 'level', 'INFO', 'logger', 'x', 'message', 'x')) from generate_series(1, 501)))$$,
  '22023', null, 'a batch holds at most 500 lines');
select throws_ok($$insert into public.machine_logs (id, user_id, machine_id, logged_at, level, logger, message)
  values (gen_random_uuid(), 'a0000000-0000-4000-8000-000000000001', 'machine-a', now(), 'INFO', 'x', 'forged')$$,
  '42501', null, 'a machine cannot insert into machine_logs directly');

select tests.authenticate_as_machine('a0000000-0000-4000-8000-000000000001', 'machine-a-old');
select throws_ok($$select public.record_machine_logs('[]')$$, '42501', null,
  'a destroyed machine''s token records nothing');
select tests.authenticate_as_machine('a0000000-0000-4000-8000-000000000001', 'machine-b');
select throws_ok($$select public.record_machine_logs('[]')$$, '42501', null,
  'a token naming another user''s machine records nothing');
select tests.authenticate_as('a0000000-0000-4000-8000-000000000001');
select throws_ok($$select public.record_machine_logs('[]')$$, '42501', null, 'a user cannot write machine logs');

select results_eq($$select level::text, logger, message, machine_id from public.machine_logs
                     where char_length(message) < 100 order by logged_at$$,
  $$values ('INFO'::text, 'worker.app'::text, 'worker started'::text, 'machine-a'::text),
           ('ERROR', 'worker.trading', 'order refused', 'machine-a'),
           ('WARNING', 'worker.feed', 'reconnecting', 'machine-a')$$,
  'the user reads their machine''s lines, each once, with the machine id from the token');
select is((select char_length(message) from public.machine_logs where level = 'DEBUG'), 4000,
  'an overlong message is cut to 4,000 characters');
select throws_ok($$delete from public.machine_logs$$, '42501', null, 'a user cannot delete log lines');

select tests.authenticate_as('b0000000-0000-4000-8000-000000000001');
select is((select count(*) from public.machine_logs), 0::bigint, 'another user reads none of them');
select tests.authenticate_as_anon();
select throws_ok($$select count(*) from public.machine_logs$$, '42501', null, 'anon reads nothing');

-- Retention.
select tests.clear_authentication();
update public.machine_logs set created_at = now() - interval '8 days'
 where id = '11000000-0000-4000-8000-000000000001';
select results_eq($$select schedule, command from cron.job where jobname = 'prune-machine-logs'$$,
  $$values ('17 * * * *'::text, 'select private.prune_machine_logs()'::text)$$, 'pruning runs every hour');
do $$ begin execute (select command from cron.job where jobname = 'prune-machine-logs'); end $$;
select is((select count(*) from public.machine_logs where user_id = 'a0000000-0000-4000-8000-000000000001'),
  3::bigint, 'a line older than 7 days is pruned, the others stay');

select * from finish();
rollback;
