-- AI token budgets: reservation against the tier's daily budget, settlement, and who may see or call what.
begin;
select plan(16);

select tests.create_user('a6000000-0000-4000-8000-000000000001', 'ai-a@example.com', 'free');
select tests.create_user('b6000000-0000-4000-8000-000000000001', 'ai-b@example.com', 'pro');

-- service_role reserves and settles ---------------------------------------------------------------------
select tests.authenticate_as_service_role();

select is((public.reserve_ai_tokens('a6000000-0000-4000-8000-000000000001', 60000) ->> 'granted')::boolean, true,
  'a reservation within the free budget is granted');
select is((public.reserve_ai_tokens('a6000000-0000-4000-8000-000000000001', 50000) ->> 'granted')::boolean, false,
  'a reservation past the budget (60k + 50k > 100k) is refused');
select is(public.reserve_ai_tokens('a6000000-0000-4000-8000-000000000001', 40000) ->> 'used_tokens', '100000',
  'a reservation up to the budget exactly is granted and counted');
select lives_ok($$select public.settle_ai_tokens('a6000000-0000-4000-8000-000000000001',
                    (now() at time zone 'utc')::date, 60000, 1500, 300)$$, 'settling releases the reservation');
select results_eq(
  $$select prompt_tokens, completion_tokens, reserved_tokens, requests from public.ai_usage_daily
     where user_id = 'a6000000-0000-4000-8000-000000000001'$$,
  $$values (1500::bigint, 300::bigint, 40000::bigint, 2)$$,
  'usage holds the settled tokens, the open reservation and the granted requests');
select is((public.reserve_ai_tokens('a6000000-0000-4000-8000-000000000001', 58000) ->> 'granted')::boolean, true,
  'released tokens can be reserved again');
select is(public.reserve_ai_tokens('b6000000-0000-4000-8000-000000000001', 1) ->> 'daily_tokens', '1000000',
  'the pro tier has its own budget');
select throws_ok($$select public.reserve_ai_tokens('c6000000-0000-4000-8000-000000000001', 1)$$, 'P0002', null,
  'an unknown user is P0002');
select throws_ok($$select public.reserve_ai_tokens('a6000000-0000-4000-8000-000000000001', 0)$$, '22023', null,
  'a reservation must be positive');
select throws_ok($$select public.settle_ai_tokens('a6000000-0000-4000-8000-000000000001', '2000-01-01', 1, 1, 1)$$,
  'P0002', null, 'settling a day without a reservation is P0002');

-- users read their own usage, never write it --------------------------------------------------------------
select tests.authenticate_as('a6000000-0000-4000-8000-000000000001');
select results_eq('select user_id from public.ai_usage_daily',
  $$values ('a6000000-0000-4000-8000-000000000001'::uuid)$$, 'user: reads only its own usage');
select is((select count(*) from public.ai_token_budgets), 4::bigint, 'user: reads every tier''s budget');
select throws_ok($$select public.reserve_ai_tokens('a6000000-0000-4000-8000-000000000001', 1)$$, '42501', null,
  'user: cannot reserve tokens');
select throws_ok($$update public.ai_usage_daily set prompt_tokens = 0$$, '42501', null, 'user: cannot change usage');

-- machines and anon see nothing -----------------------------------------------------------------------------
select tests.authenticate_as_machine('a6000000-0000-4000-8000-000000000001', 'machine-a');
select throws_ok($$select public.settle_ai_tokens('a6000000-0000-4000-8000-000000000001', current_date, 1, 0, 0)$$,
  '42501', null, 'machine: cannot settle tokens');
select tests.authenticate_as_anon();
select throws_ok('select * from public.ai_usage_daily', '42501', null, 'anon: cannot read usage');

select * from finish();
rollback;
