-- Costs: dated prices reproduce Fly's published sizes, machine intervals follow status and size, AI tokens are
-- priced per model, month-to-date totals per user, and a budget that pauses AI calls with one notification.
begin;
select plan(17);

select tests.create_user('a1810000-0000-4000-8000-000000000001', 'c-a@example.com', 'pro');
select tests.create_user('b1810000-0000-4000-8000-000000000001', 'c-b@example.com', 'pro');

-- Published prices (30 days, iad): shared-cpu-1x 256MB $2.19, 512MB $3.69, 1GB $6.70, shared-cpu-2x 2GB $13.39,
-- performance-1x 2GB $33.00.
select results_eq($$select round(public.machine_usd_per_second(k, c, m) * 30 * 86400, 2) from (values
    ('shared', 1, 256), ('shared', 1, 512), ('shared', 1, 1024), ('shared', 2, 2048), ('performance', 1, 2048)) as s (k, c, m)$$,
  $$values (2.19), (3.69), (6.69), (13.38), (33.00)$$,
  'the price formula gives Fly''s published monthly prices (within a cent of 6.70 and 13.39)');
select is(public.ai_tokens_usd('gemini-3.5-flash', 1000000, 100000), 2.4::numeric,
  '1M input + 100k output tokens of gemini-3.5-flash cost 1.50 + 0.90 USD');
select is(public.ai_tokens_usd('no-such-model', 1000, 1000), 0::numeric, 'an unknown model costs 0 (never fails a call)');

-- Machine usage intervals follow status and size.
insert into public.fly_machines (user_id, machine_id, status, region, memory_mb)
values ('a1810000-0000-4000-8000-000000000001', 'machine-ca', 'provisioning', 'iad', 256);
select is((select count(*) from public.machine_usage where machine_id = 'machine-ca'), 0::bigint,
  'a machine being provisioned is not billed yet');
update public.fly_machines set status = 'starting' where machine_id = 'machine-ca';
select results_eq($$select cpus, memory_mb, ended_at is null from public.machine_usage where machine_id = 'machine-ca'$$,
  $$values (1, 256, true)$$, 'starting opens a billed interval at the machine''s size');
update public.fly_machines set status = 'running' where machine_id = 'machine-ca';
select is((select count(*) from public.machine_usage where machine_id = 'machine-ca'), 1::bigint,
  'running continues the same interval');
update public.fly_machines set cpus = 2, memory_mb = 512 where machine_id = 'machine-ca';
select results_eq($$select cpus, memory_mb, ended_at is null from public.machine_usage where machine_id = 'machine-ca' order by id$$,
  $$values (1, 256, false), (2, 512, true)$$, 'a resize closes the interval and opens one at the new size');
update public.fly_machines set status = 'stopped' where machine_id = 'machine-ca';
select is((select count(*) from public.machine_usage where machine_id = 'machine-ca' and ended_at is null), 0::bigint,
  'a stopped machine is not billed');

-- Month to date.
update public.machine_usage set started_at = now() - interval '1 hour', ended_at = now()
 where machine_id = 'machine-ca' and cpus = 1;
update public.machine_usage set started_at = now() - interval '10 minutes', ended_at = now() - interval '5 minutes'
 where machine_id = 'machine-ca' and cpus = 2;
select tests.authenticate_as_service_role();
select public.reserve_ai_tokens('a1810000-0000-4000-8000-000000000001', 1000);
select public.settle_ai_tokens('a1810000-0000-4000-8000-000000000001', (now() at time zone 'utc')::date, 1000,
  100000, 10000, 'gemini-3.5-flash');
select tests.authenticate_as('a1810000-0000-4000-8000-000000000001');
select results_eq($$select machine_seconds, ai_prompt_tokens, ai_completion_tokens, ai_cost_usd from public.user_costs_month_to_date$$,
  $$values (3900::bigint, 100000::bigint, 10000::bigint, 0.24::numeric)$$,
  'user: its month to date (an hour plus five minutes of machine, its tokens at the model''s price)');
select is((select machine_cost_usd from public.user_costs_month_to_date),
  round(3600 * 2.19 / 2592000 + 300 * 2 * 2.19 / 2592000, 6),
  'machine cost is seconds times the size''s per-second price');
select is((select count(*) from public.user_costs_month_to_date), 1::bigint, 'user: sees only its own costs');
select throws_ok($$insert into public.machine_usage (user_id, fly_machine_row_id, machine_id, cpu_kind, cpus, memory_mb, usd_per_second)
  select user_id, id, machine_id, 'shared', 1, 256, 0 from public.fly_machines$$, '42501', null, 'user: cannot write usage');

-- Budget: reaching it pauses AI calls and notifies once.
select lives_ok($$insert into public.cost_budgets (user_id, monthly_budget_usd) values ('a1810000-0000-4000-8000-000000000001', 0.01)$$,
  'user: sets a monthly budget');
select tests.authenticate_as_service_role();
select is(public.reserve_ai_tokens('a1810000-0000-4000-8000-000000000001', 1000) ->> 'reason', 'cost_budget_exceeded',
  'an AI call past the budget is refused');
select is((public.reserve_ai_tokens('a1810000-0000-4000-8000-000000000001', 1000) ->> 'granted')::boolean, false,
  'and stays refused');
select is((select count(*) from public.notifications where user_id = 'a1810000-0000-4000-8000-000000000001'
            and kind = 'budget_exceeded'), 1::bigint, 'the user is told once');
select is((public.reserve_ai_tokens('b1810000-0000-4000-8000-000000000001', 1000) ->> 'granted')::boolean, true,
  'a user without a budget is not affected');

select * from finish();
rollback;
