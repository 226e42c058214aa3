-- AI token accounting: a daily token budget per tier and each user's usage per UTC day.
--
-- The AI Edge Functions (service_role) reserve an upper bound of tokens before they call the model and
-- settle the real usage afterwards, so concurrent calls cannot together overrun a user's budget: the
-- reservation is one conditional UPDATE on the user's row for the day, which Postgres serialises.
-- Users read their own usage and every tier's budget; only service_role writes.

create table public.ai_token_budgets (
  tier public.user_tier primary key,
  daily_tokens bigint not null,
  constraint ai_token_budgets_daily_tokens_positive check (daily_tokens > 0)
);
insert into public.ai_token_budgets (tier, daily_tokens) values
  ('free', 100000), ('pro', 1000000), ('elite', 3000000), ('power', 10000000);

create table public.ai_usage_daily (
  user_id uuid not null references public.users (id) on delete cascade,
  usage_date date not null,
  prompt_tokens bigint not null default 0,
  completion_tokens bigint not null default 0,
  -- Tokens promised to calls still in flight; settled into prompt/completion tokens when they end.
  reserved_tokens bigint not null default 0,
  requests integer not null default 0,
  updated_at timestamptz not null default now(),
  primary key (user_id, usage_date),
  constraint ai_usage_daily_counts_nonnegative check (
    prompt_tokens >= 0 and completion_tokens >= 0 and reserved_tokens >= 0 and requests >= 0
  )
);

create trigger ai_usage_daily_set_updated_at before update on public.ai_usage_daily
  for each row execute function private.set_updated_at();

revoke all on table public.ai_token_budgets, public.ai_usage_daily
  from public, anon, authenticated, service_role, trader_machine;
alter table public.ai_token_budgets enable row level security;
alter table public.ai_usage_daily enable row level security;
grant all on table public.ai_token_budgets, public.ai_usage_daily to service_role;
grant select on public.ai_token_budgets, public.ai_usage_daily to authenticated;

create policy "users read every tier's budget" on public.ai_token_budgets
  for select to authenticated using (true);
create policy "users read their own ai usage" on public.ai_usage_daily
  for select to authenticated using ((select auth.uid()) = user_id);

-- Reserve `tokens` of today's (UTC) budget for `user_id`. Returns {granted, usage_date, tier,
-- daily_tokens, used_tokens}; used_tokens counts settled plus reserved tokens, including this reservation
-- when granted. Raises P0002 for an unknown user.
create function public.reserve_ai_tokens(user_id uuid, tokens bigint) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  today date := (now() at time zone 'utc')::date;
  user_tier public.user_tier;
  budget bigint;
  used bigint;
  granted boolean;
begin
  if tokens is null or tokens <= 0 then
    raise exception 'tokens must be positive, was %', tokens using errcode = '22023';
  end if;
  select u.tier, b.daily_tokens into user_tier, budget
    from public.users u join public.ai_token_budgets b on b.tier = u.tier
   where u.id = reserve_ai_tokens.user_id;
  if not found then
    raise exception 'user % not found', reserve_ai_tokens.user_id using errcode = 'P0002';
  end if;
  insert into public.ai_usage_daily as d (user_id, usage_date) values (reserve_ai_tokens.user_id, today)
  on conflict on constraint ai_usage_daily_pkey do nothing;
  update public.ai_usage_daily d
     set reserved_tokens = d.reserved_tokens + reserve_ai_tokens.tokens, requests = d.requests + 1
   where d.user_id = reserve_ai_tokens.user_id and d.usage_date = today
     and d.prompt_tokens + d.completion_tokens + d.reserved_tokens + reserve_ai_tokens.tokens <= budget
  returning d.prompt_tokens + d.completion_tokens + d.reserved_tokens into used;
  granted := found;
  if not granted then
    select d.prompt_tokens + d.completion_tokens + d.reserved_tokens into used
      from public.ai_usage_daily d
     where d.user_id = reserve_ai_tokens.user_id and d.usage_date = today;
  end if;
  return jsonb_build_object('granted', granted, 'usage_date', today, 'tier', user_tier,
                            'daily_tokens', budget, 'used_tokens', used);
end
$$;

-- Release a reservation made on `usage_date` and record what the call really used (retries included).
create function public.settle_ai_tokens(user_id uuid, usage_date date, reserved_tokens bigint,
                                        prompt_tokens bigint, completion_tokens bigint) returns void
language plpgsql
set search_path = ''
as $$
begin
  if least(reserved_tokens, prompt_tokens, completion_tokens) < 0 then
    raise exception 'token counts must not be negative' using errcode = '22023';
  end if;
  update public.ai_usage_daily d
     set reserved_tokens = greatest(0, d.reserved_tokens - settle_ai_tokens.reserved_tokens),
         prompt_tokens = d.prompt_tokens + settle_ai_tokens.prompt_tokens,
         completion_tokens = d.completion_tokens + settle_ai_tokens.completion_tokens
   where d.user_id = settle_ai_tokens.user_id and d.usage_date = settle_ai_tokens.usage_date;
  if not found then
    raise exception 'no reservation for user % on %', settle_ai_tokens.user_id, settle_ai_tokens.usage_date
      using errcode = 'P0002';
  end if;
end
$$;

revoke execute on function public.reserve_ai_tokens(uuid, bigint),
  public.settle_ai_tokens(uuid, date, bigint, bigint, bigint) from public, anon, authenticated, trader_machine;
grant execute on function public.reserve_ai_tokens(uuid, bigint),
  public.settle_ai_tokens(uuid, date, bigint, bigint, bigint) to service_role;
