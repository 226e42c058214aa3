-- Machine resizes: the cooldown (one resize per machine per window, one in flight), applying a size (billing and
-- the user's notification follow), who may do what; pg_net invocation of Edge Functions and its schedule.
begin;
select plan(14);

select tests.create_user('a1820000-0000-4000-8000-000000000001', 'r-a@example.com', 'elite');
select tests.create_machine('a1820000-0000-4000-8000-000000000001', 'machine-ra', 'running');
select tests.authenticate_as_service_role();

select isnt(public.begin_machine_resize((select id from public.fly_machines where machine_id = 'machine-ra'), 2, 512,
  'sweep at 80% of its interval'), null, 'a first resize starts');
select is(public.begin_machine_resize((select id from public.fly_machines where machine_id = 'machine-ra'), 4, 1024,
  'again'), null, 'a second is refused while one is in flight');
select lives_ok($$select public.finish_machine_resize(
  (select id from public.machine_resizes where machine_id = 'machine-ra'), 'applied')$$, 'the resize is applied');
select results_eq($$select cpus, memory_mb from public.fly_machines where machine_id = 'machine-ra'$$,
  $$values (2, 512)$$, 'the machine row has the new size');
select results_eq($$select cpus, memory_mb from public.machine_usage where machine_id = 'machine-ra' and ended_at is null$$,
  $$values (2, 512)$$, 'billing continues at the new size');
select is(public.begin_machine_resize((select id from public.fly_machines where machine_id = 'machine-ra'), 1, 256,
  'load gone'), null, 'no other resize within the 5-minute cooldown');
update public.machine_resizes set started_at = now() - interval '301 seconds' where machine_id = 'machine-ra';
select isnt(public.begin_machine_resize((select id from public.fly_machines where machine_id = 'machine-ra'), 1, 256,
  'load gone'), null, 'after the cooldown the next resize may start');
select lives_ok($$select public.finish_machine_resize(
  (select id from public.machine_resizes where machine_id = 'machine-ra' and status = 'in_progress'), 'rolled_back',
  'health gate failed')$$, 'a failed resize is recorded as rolled back');
select results_eq($$select cpus, memory_mb from public.fly_machines where machine_id = 'machine-ra'$$,
  $$values (2, 512)$$, 'and leaves the size as it was');
select throws_ok($$select public.finish_machine_resize(
  (select id from public.machine_resizes where machine_id = 'machine-ra' and status = 'rolled_back'), 'applied')$$,
  'P0002', null, 'a finished resize cannot be finished again');

select tests.clear_authentication();
select results_eq($$select title from public.notifications where user_id = 'a1820000-0000-4000-8000-000000000001'$$,
  $$values ('Machine resized to 2 vCPU / 512 MB'::text)$$, 'the user is told about the applied resize only');
select tests.authenticate_as('a1820000-0000-4000-8000-000000000001');
select is((select count(*) from public.machine_resizes), 2::bigint, 'user: reads its own resizes');
select throws_ok($$select public.begin_machine_resize(gen_random_uuid(), 1, 256, 'x')$$, '42501', null,
  'user: cannot resize machines');

select tests.clear_authentication();
select is((select count(*) from cron.job where jobname in ('notify-deliveries', 'scale-machines')), 2::bigint,
  'pg_cron calls notify and scale-machines every minute');

select * from finish();
rollback;
