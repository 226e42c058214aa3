-- Cost per user: machine seconds at the machine size's price plus AI tokens at the model's price, month to date,
-- and a monthly budget that pauses AI calls (with a notification) once it is used up.
--
-- fly_machine_prices: Fly's published prices for started Machines, dated. A size costs
--   cpus x usd_per_cpu_30d + RAM beyond included_memory_mb_per_cpu x cpus at usd_per_extra_gb_30d,
--   per 30 days of runtime, billed by the second. Source: https://fly.io/docs/about/pricing/ (superfly/docs
--   about/pricing.mdx @ 0137eed, read 2026-12-05): shared-cpu-1x 256MB $2.19, 512MB $3.69, 1GB $6.70,
--   shared-cpu-2x 2GB $13.39, performance-1x 2GB $33.00, performance-2x 4GB $66.00, additional RAM
--   $6.00/GB/month; iad/ewr, the lowest-priced regions. The formula reproduces every listed size to the cent.
-- ai_model_prices: the Gemini Developer API's paid-tier prices per 1M tokens, dated. Source:
--   https://ai.google.dev/gemini-api/docs/pricing (as transcribed 2026-09-20): gemini-3.5-flash $1.50 in /
--   $9.00 out, gemini-2.5-flash $0.30 / $2.50, gemini-2.5-pro $1.25 / $10.00 (prompts <= 200k tokens).
-- machine_usage: one row per interval a machine was billable (started) at one size, kept by a trigger on
--   fly_machines, with the per-second price fixed when the interval opened.
-- ai_usage_daily.cost_usd: settle_ai_tokens prices each call's tokens at its model's price.

-- Machine size -----------------------------------------------------------------------------------------------
alter table public.fly_machines
  add column cpu_kind text not null default 'shared',
  add column cpus integer not null default 1,
  add constraint fly_machines_cpu_kind_valid check (cpu_kind in ('shared', 'performance')),
  add constraint fly_machines_cpus_valid check (cpus in (1, 2, 4, 6, 8, 16));

-- Prices -------------------------------------------------------------------------------------------------------
create table public.fly_machine_prices (
  cpu_kind text not null,
  effective_from date not null,
  usd_per_cpu_30d numeric not null,
  included_memory_mb_per_cpu integer not null,
  usd_per_extra_gb_30d numeric not null,
  source_url text not null,
  primary key (cpu_kind, effective_from),
  constraint fly_machine_prices_positive
    check (usd_per_cpu_30d > 0 and included_memory_mb_per_cpu > 0 and usd_per_extra_gb_30d >= 0)
);
insert into public.fly_machine_prices values
  ('shared', '2026-01-01', 2.19, 256, 6.00, 'https://fly.io/docs/about/pricing/'),
  ('performance', '2026-01-01', 33.00, 2048, 6.00, 'https://fly.io/docs/about/pricing/');

create table public.ai_model_prices (
  model text not null,
  effective_from date not null,
  usd_per_million_input_tokens numeric not null,
  usd_per_million_output_tokens numeric not null,
  source_url text not null,
  primary key (model, effective_from),
  constraint ai_model_prices_nonnegative check (usd_per_million_input_tokens >= 0 and usd_per_million_output_tokens >= 0)
);
insert into public.ai_model_prices values
  ('gemini-3.5-flash', '2026-09-20', 1.50, 9.00, 'https://ai.google.dev/gemini-api/docs/pricing'),
  ('gemini-2.5-flash', '2026-09-20', 0.30, 2.50, 'https://ai.google.dev/gemini-api/docs/pricing'),
  ('gemini-2.5-pro', '2026-09-20', 1.25, 10.00, 'https://ai.google.dev/gemini-api/docs/pricing');

-- USD per second of a started machine of this size on `on_date`; NULL when no price is known for the kind.
create function public.machine_usd_per_second(cpu_kind text, cpus integer, memory_mb integer, on_date date default current_date)
returns numeric
language sql stable
set search_path = ''
as $$
  select (p.usd_per_cpu_30d * cpus
          + greatest(0, memory_mb - p.included_memory_mb_per_cpu * cpus) / 1024.0 * p.usd_per_extra_gb_30d)
         / (30 * 86400)
    from public.fly_machine_prices p
   where p.cpu_kind = machine_usd_per_second.cpu_kind and p.effective_from <= on_date
   order by p.effective_from desc
   limit 1
$$;

-- USD for `prompt_tokens` + `completion_tokens` of `model` on `on_date`; 0 for an unknown model (logged by
-- the caller, never failing a call).
create function public.ai_tokens_usd(model text, prompt_tokens bigint, completion_tokens bigint, on_date date default current_date)
returns numeric
language sql stable
set search_path = ''
as $$
  select coalesce((
    select (prompt_tokens * p.usd_per_million_input_tokens + completion_tokens * p.usd_per_million_output_tokens) / 1e6
      from public.ai_model_prices p
     where p.model = ai_tokens_usd.model and p.effective_from <= on_date
     order by p.effective_from desc
     limit 1), 0)
$$;

-- Machine usage intervals --------------------------------------------------------------------------------------
create table public.machine_usage (
  id bigint generated always as identity primary key,
  user_id uuid not null references public.users (id) on delete cascade,
  fly_machine_row_id uuid not null references public.fly_machines (id) on delete cascade,
  machine_id text not null,
  cpu_kind text not null,
  cpus integer not null,
  memory_mb integer not null,
  usd_per_second numeric not null,
  started_at timestamptz not null default now(),
  ended_at timestamptz,
  constraint machine_usage_interval_ordered check (ended_at is null or ended_at >= started_at)
);
create unique index machine_usage_one_open_per_machine on public.machine_usage (fly_machine_row_id) where ended_at is null;
create index machine_usage_user_id_started_at_idx on public.machine_usage (user_id, started_at);

-- Fly bills a machine while it is started: from starting until it has stopped or been destroyed. An error
-- (missed heartbeats) does not stop it, so it stays billable.
create function private.is_billable(status public.machine_status) returns boolean
language sql immutable
set search_path = ''
as $$
  select status in ('starting', 'running', 'stopping', 'error')
$$;

create function private.track_machine_usage() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  billable boolean := private.is_billable(new.status) and new.memory_mb is not null;
  was_billable boolean := tg_op = 'UPDATE' and private.is_billable(old.status) and old.memory_mb is not null;
  resized boolean := tg_op = 'UPDATE'
    and (new.cpus, new.memory_mb, new.cpu_kind) is distinct from (old.cpus, old.memory_mb, old.cpu_kind);
begin
  if was_billable and (not billable or resized) then
    update public.machine_usage set ended_at = now() where fly_machine_row_id = new.id and ended_at is null;
  end if;
  if billable and (not was_billable or resized) then
    insert into public.machine_usage (user_id, fly_machine_row_id, machine_id, cpu_kind, cpus, memory_mb, usd_per_second)
    values (new.user_id, new.id, new.machine_id, new.cpu_kind, new.cpus, new.memory_mb,
            coalesce(public.machine_usd_per_second(new.cpu_kind, new.cpus, new.memory_mb), 0))
    on conflict (fly_machine_row_id) where ended_at is null do nothing;
  end if;
  return null;
end
$$;
create trigger fly_machines_track_usage after insert or update of status, cpus, memory_mb, cpu_kind, machine_id
  on public.fly_machines for each row execute function private.track_machine_usage();
-- A placeholder row gets its Fly id later; keep the open interval's id current.
create function private.follow_machine_id() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  update public.machine_usage set machine_id = new.machine_id where fly_machine_row_id = new.id and ended_at is null;
  return null;
end
$$;
create trigger fly_machines_follow_machine_id after update of machine_id on public.fly_machines
  for each row when (new.machine_id is distinct from old.machine_id) execute function private.follow_machine_id();

-- AI cost ------------------------------------------------------------------------------------------------------
alter table public.ai_usage_daily add column cost_usd numeric not null default 0,
  add constraint ai_usage_daily_cost_nonnegative check (cost_usd >= 0);

drop function public.settle_ai_tokens(uuid, date, bigint, bigint, bigint);
-- Release a reservation made on `usage_date` and record what the call really used (retries included),
-- priced at `model`'s price.
create function public.settle_ai_tokens(user_id uuid, usage_date date, reserved_tokens bigint,
                                        prompt_tokens bigint, completion_tokens bigint, model text default null)
returns void
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
         completion_tokens = d.completion_tokens + settle_ai_tokens.completion_tokens,
         cost_usd = d.cost_usd + public.ai_tokens_usd(coalesce(model, ''), settle_ai_tokens.prompt_tokens,
                                                      settle_ai_tokens.completion_tokens, settle_ai_tokens.usage_date)
   where d.user_id = settle_ai_tokens.user_id and d.usage_date = settle_ai_tokens.usage_date;
  if not found then
    raise exception 'no reservation for user % on %', settle_ai_tokens.user_id, settle_ai_tokens.usage_date
      using errcode = 'P0002';
  end if;
end
$$;

-- Budgets ------------------------------------------------------------------------------------------------------
create table public.cost_budgets (
  user_id uuid primary key references public.users (id) on delete cascade,
  monthly_budget_usd numeric not null,
  updated_at timestamptz not null default now(),
  constraint cost_budgets_positive check (monthly_budget_usd > 0)
);
create trigger cost_budgets_set_updated_at before update on public.cost_budgets
  for each row execute function private.set_updated_at();

-- Month to date (UTC calendar month), per user; security_invoker, so each role sees what its policies allow.
create view public.user_costs_month_to_date with (security_invoker = true) as
with bounds as (
  select date_trunc('month', now() at time zone 'utc') at time zone 'utc' as month_start, now() as until
), machine as (
  select u.user_id,
         sum(extract(epoch from least(coalesce(u.ended_at, b.until), b.until) - greatest(u.started_at, b.month_start)))
           as machine_seconds,
         sum(extract(epoch from least(coalesce(u.ended_at, b.until), b.until) - greatest(u.started_at, b.month_start))
             * u.usd_per_second) as machine_cost_usd
    from public.machine_usage u cross join bounds b
   where coalesce(u.ended_at, b.until) > b.month_start and u.started_at < b.until
   group by u.user_id
), ai as (
  select d.user_id, sum(d.prompt_tokens) as ai_prompt_tokens, sum(d.completion_tokens) as ai_completion_tokens,
         sum(d.cost_usd) as ai_cost_usd
    from public.ai_usage_daily d cross join bounds b
   where d.usage_date >= (b.month_start at time zone 'utc')::date
   group by d.user_id
)
select usr.id as user_id,
       (select (month_start at time zone 'utc')::date from bounds) as month,
       coalesce(round(m.machine_seconds), 0)::bigint as machine_seconds,
       round(coalesce(m.machine_cost_usd, 0), 6) as machine_cost_usd,
       coalesce(a.ai_prompt_tokens, 0)::bigint as ai_prompt_tokens,
       coalesce(a.ai_completion_tokens, 0)::bigint as ai_completion_tokens,
       round(coalesce(a.ai_cost_usd, 0), 6) as ai_cost_usd,
       round(coalesce(m.machine_cost_usd, 0) + coalesce(a.ai_cost_usd, 0), 6) as total_cost_usd,
       bud.monthly_budget_usd
  from public.users usr
  left join machine m on m.user_id = usr.id
  left join ai a on a.user_id = usr.id
  left join public.cost_budgets bud on bud.user_id = usr.id;

-- reserve_ai_tokens also refuses once the month-to-date cost has reached the user's budget (reason
-- 'cost_budget_exceeded'), and tells the user once per month.
create or replace function public.reserve_ai_tokens(user_id uuid, tokens bigint) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  today date := (now() at time zone 'utc')::date;
  user_tier public.user_tier;
  budget bigint;
  used bigint;
  granted boolean;
  costs public.user_costs_month_to_date;
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
  select * into costs from public.user_costs_month_to_date c where c.user_id = reserve_ai_tokens.user_id;
  if costs.monthly_budget_usd is not null and costs.total_cost_usd >= costs.monthly_budget_usd then
    insert into public.notifications (user_id, kind, title, body, data, dedupe_key)
    values (reserve_ai_tokens.user_id, 'budget_exceeded', 'Monthly budget reached: AI analysis paused',
            format('This month''s cost is %s USD, at or over your budget of %s USD. AI calls are paused until the '
                   'budget is raised or the month ends.', round(costs.total_cost_usd, 2), costs.monthly_budget_usd),
            jsonb_build_object('totalCostUsd', costs.total_cost_usd, 'budgetUsd', costs.monthly_budget_usd,
                               'month', costs.month),
            format('budget_exceeded:%s', to_char(costs.month, 'YYYY-MM')))
    on conflict do nothing;
    return jsonb_build_object('granted', false, 'reason', 'cost_budget_exceeded', 'usage_date', today,
                              'tier', user_tier, 'total_cost_usd', costs.total_cost_usd,
                              'monthly_budget_usd', costs.monthly_budget_usd);
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
  return jsonb_build_object('granted', granted, 'reason', case when granted then null else 'daily_tokens' end,
                            'usage_date', today, 'tier', user_tier, 'daily_tokens', budget, 'used_tokens', used);
end
$$;

-- Grants and row level security --------------------------------------------------------------------------------
revoke all on table public.fly_machine_prices, public.ai_model_prices, public.machine_usage, public.cost_budgets
  from public, anon, authenticated, service_role, trader_machine;
revoke all on public.user_costs_month_to_date from public, anon, authenticated, service_role, trader_machine;
alter table public.fly_machine_prices enable row level security;
alter table public.ai_model_prices enable row level security;
alter table public.machine_usage enable row level security;
alter table public.cost_budgets enable row level security;
grant all on table public.fly_machine_prices, public.ai_model_prices, public.machine_usage, public.cost_budgets
  to service_role;
grant select on public.user_costs_month_to_date to authenticated, service_role;

grant select on public.fly_machine_prices, public.ai_model_prices to authenticated;
create policy "anyone signed in reads machine prices" on public.fly_machine_prices
  for select to authenticated using (true);
create policy "anyone signed in reads model prices" on public.ai_model_prices
  for select to authenticated using (true);

grant select on public.machine_usage to authenticated;
create policy "users read their own machine usage" on public.machine_usage
  for select to authenticated using ((select auth.uid()) = user_id);

grant select, insert, delete on public.cost_budgets to authenticated;
grant update (monthly_budget_usd) on public.cost_budgets to authenticated;
create policy "users read their own budget" on public.cost_budgets
  for select to authenticated using ((select auth.uid()) = user_id);
create policy "users set their own budget" on public.cost_budgets
  for insert to authenticated with check ((select auth.uid()) = user_id);
create policy "users change their own budget" on public.cost_budgets
  for update to authenticated using ((select auth.uid()) = user_id) with check ((select auth.uid()) = user_id);
create policy "users remove their own budget" on public.cost_budgets
  for delete to authenticated using ((select auth.uid()) = user_id);

revoke execute on function public.machine_usd_per_second(text, integer, integer, date),
  public.ai_tokens_usd(text, bigint, bigint, date) from public, anon;
grant execute on function public.machine_usd_per_second(text, integer, integer, date),
  public.ai_tokens_usd(text, bigint, bigint, date) to authenticated, service_role;
revoke execute on function public.settle_ai_tokens(uuid, date, bigint, bigint, bigint, text)
  from public, anon, authenticated, trader_machine;
grant execute on function public.settle_ai_tokens(uuid, date, bigint, bigint, bigint, text) to service_role;
revoke execute on function private.track_machine_usage(), private.follow_machine_id() from public;

-- Open intervals for machines already running when this migration is applied.
insert into public.machine_usage (user_id, fly_machine_row_id, machine_id, cpu_kind, cpus, memory_mb, usd_per_second)
select m.user_id, m.id, m.machine_id, m.cpu_kind, m.cpus, m.memory_mb,
       coalesce(public.machine_usd_per_second(m.cpu_kind, m.cpus, m.memory_mb), 0)
  from public.fly_machines m
 where private.is_billable(m.status) and m.memory_mb is not null;
