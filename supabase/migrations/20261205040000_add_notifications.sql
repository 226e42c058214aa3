-- Notifications for traders, alerts for operators, and their delivery beyond the app.
--
-- public.notifications: one row per event a user should hear about, written by the user's worker machine
-- (signals, positions, trades, trader errors) or by the database itself (machine events, budgets). Users read
-- them and mark them read; they are in the Realtime publication so the app sees them as they happen.
-- public.notification_preferences: which kinds a user wants outside the app, quiet hours, a webhook URL.
-- private.telegram_credentials: the user's Telegram bot token (encrypted like the Binance keys) and chat id.
-- public.notification_deliveries: one row per (notification or alert event, channel), created by a trigger,
-- claimed and finished by the `notify` Edge Function (service_role): retried with backoff, delivered once.
-- public.operator_alerts: deduplicated operator alerts, at most one open alert per (kind, subject); each
-- opening and each recovery is an operator_alert_events row, delivered to the operator's channels.
-- Machine events: a machine that goes to `error` notifies its user and opens an operator alert
-- (heartbeat missed, or failed to start); one that comes back resolves it. pg_cron marks machines that never
-- started, and opens/resolves alerts for services whose failures are reported (Binance, Gemini).

-- Enums (mirrored in worker/domain/enums.py) ------------------------------------------------------------
create type public.notification_kind as enum (
  'signal_new', 'position_opened', 'position_closed', 'trade_failed', 'trader_error',
  'machine_error', 'machine_resized', 'budget_exceeded'
);
create type public.notification_channel as enum ('webhook', 'telegram');
create type public.delivery_status as enum ('pending', 'delivering', 'delivered', 'failed', 'skipped');
create type public.operator_alert_kind as enum
  ('machine_start_failed', 'heartbeat_missed', 'binance_unreachable', 'gemini_failing');
create type public.operator_alert_event_kind as enum ('fired', 'recovered');

-- notifications --------------------------------------------------------------------------------------------
create table public.notifications (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references public.users (id) on delete cascade,
  kind public.notification_kind not null,
  title text not null,
  body text not null default '',
  data jsonb not null default '{}'::jsonb,
  -- Events raised by the database (machine errors, budgets) carry a key so each is raised once.
  dedupe_key text,
  created_at timestamptz not null default now(),
  read_at timestamptz,
  constraint notifications_title_length check (char_length(btrim(title)) between 1 and 200),
  constraint notifications_body_length check (char_length(body) <= 2000),
  constraint notifications_data_object check (jsonb_typeof(data) = 'object'),
  constraint notifications_dedupe_key_length check (dedupe_key is null or char_length(dedupe_key) <= 200)
);
create index notifications_user_id_created_at_idx on public.notifications (user_id, created_at desc);
create index notifications_unread_idx on public.notifications (user_id) where read_at is null;
create unique index notifications_dedupe_key on public.notifications (user_id, dedupe_key) where dedupe_key is not null;

-- notification_preferences ----------------------------------------------------------------------------------
create function private.is_time_zone(zone text) returns boolean
language sql stable
set search_path = ''
as $$
  select exists (select from pg_catalog.pg_timezone_names where name = zone)
$$;

create table public.notification_preferences (
  user_id uuid primary key references public.users (id) on delete cascade,
  -- Kinds delivered outside the app (the app always shows every notification).
  kinds public.notification_kind[] not null default enum_range(null::public.notification_kind),
  -- Local wall-clock window in `time_zone` during which deliveries wait; may wrap midnight (22:00-07:00).
  quiet_hours_start time,
  quiet_hours_end time,
  time_zone text not null default 'UTC',
  webhook_url text,
  updated_at timestamptz not null default now(),
  constraint notification_preferences_quiet_hours_both check ((quiet_hours_start is null) = (quiet_hours_end is null)),
  constraint notification_preferences_quiet_hours_not_empty check (quiet_hours_start is distinct from quiet_hours_end
                                                                   or quiet_hours_start is null),
  constraint notification_preferences_time_zone_valid check (private.is_time_zone(time_zone)),
  constraint notification_preferences_webhook_url_format
    check (webhook_url is null or (webhook_url ~ '^https?://[^\s/]+(/\S*)?$' and char_length(webhook_url) <= 2000))
);
create trigger notification_preferences_set_updated_at before update on public.notification_preferences
  for each row execute function private.set_updated_at();

-- Telegram bot credentials (encrypted at rest, like private.binance_credentials) ----------------------------
create table private.telegram_credentials (
  user_id uuid primary key references public.users (id) on delete cascade,
  bot_token_encrypted bytea not null,
  chat_id text not null,
  bot_token_hint text not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint telegram_credentials_chat_id_format check (chat_id ~ '^(-?[0-9]{1,20}|@[A-Za-z0-9_]{5,32})$')
);
alter table private.telegram_credentials enable row level security;
revoke all on table private.telegram_credentials from public, anon, authenticated, service_role, trader_machine;
create trigger telegram_credentials_set_updated_at before update on private.telegram_credentials
  for each row execute function private.set_updated_at();

do $$
begin
  if not exists (select from vault.secrets where name = 'notification_credentials_key') then
    perform vault.create_secret(
      encode(extensions.gen_random_bytes(32), 'hex'),
      'notification_credentials_key',
      'pgcrypto key for private.telegram_credentials'
    );
  end if;
end
$$;

create function private.notification_credentials_key() returns text
language plpgsql stable
security definer
set search_path = ''
as $$
declare
  data_key text;
begin
  select decrypted_secret into data_key from vault.decrypted_secrets where name = 'notification_credentials_key';
  if data_key is null then
    raise exception 'vault secret notification_credentials_key is missing' using errcode = '55000';
  end if;
  return data_key;
end
$$;
revoke execute on function private.notification_credentials_key() from public, anon, authenticated, service_role, trader_machine;

-- Store (or replace) the caller's bot token and chat id. Telegram bot tokens look like 123456789:AA...
create function public.set_telegram_bot(bot_token text, chat_id text) returns void
language plpgsql
security definer
set search_path = ''
as $$
begin
  if auth.uid() is null then
    raise exception 'not signed in' using errcode = '42501';
  end if;
  if bot_token is null or bot_token !~ '^[0-9]{1,20}:[A-Za-z0-9_-]{20,100}$' then
    raise exception 'bot_token must be a Telegram bot token (<bot id>:<secret>)' using errcode = '22023';
  end if;
  if chat_id is null or chat_id !~ '^(-?[0-9]{1,20}|@[A-Za-z0-9_]{5,32})$' then
    raise exception 'chat_id must be a numeric chat id or an @channel name' using errcode = '22023';
  end if;
  insert into private.telegram_credentials (user_id, bot_token_encrypted, chat_id, bot_token_hint)
  values (
    auth.uid(),
    extensions.pgp_sym_encrypt(bot_token, private.notification_credentials_key(), 'cipher-algo=aes256'),
    chat_id,
    split_part(bot_token, ':', 1) || ':…' || right(bot_token, 4)
  )
  on conflict (user_id) do update
    set bot_token_encrypted = excluded.bot_token_encrypted, chat_id = excluded.chat_id,
        bot_token_hint = excluded.bot_token_hint;
end
$$;

create function public.delete_telegram_bot() returns void
language plpgsql
security definer
set search_path = ''
as $$
begin
  if auth.uid() is null then
    raise exception 'not signed in' using errcode = '42501';
  end if;
  delete from private.telegram_credentials where user_id = auth.uid();
end
$$;

create function public.telegram_bot_status()
returns table (has_bot boolean, bot_token_masked text, chat_id text, updated_at timestamptz)
language sql stable
security definer
set search_path = ''
as $$
  select c.user_id is not null, c.bot_token_hint, c.chat_id, c.updated_at
  from (select auth.uid() as uid) as caller
  left join private.telegram_credentials c on c.user_id = caller.uid
  where caller.uid is not null
$$;

-- operator alerts --------------------------------------------------------------------------------------------
create table public.operator_alerts (
  id uuid primary key default gen_random_uuid(),
  kind public.operator_alert_kind not null,
  -- What the alert is about: a machine id, or a service name ('binance', 'gemini').
  subject text not null,
  message text not null,
  opened_at timestamptz not null default now(),
  last_seen_at timestamptz not null default now(),
  recovered_at timestamptz,
  constraint operator_alerts_subject_length check (char_length(subject) between 1 and 200),
  constraint operator_alerts_message_length check (char_length(message) <= 2000)
);
-- One open alert per outage.
create unique index operator_alerts_one_open on public.operator_alerts (kind, subject) where recovered_at is null;
create index operator_alerts_opened_at_idx on public.operator_alerts (opened_at desc);

create table public.operator_alert_events (
  id uuid primary key default gen_random_uuid(),
  alert_id uuid not null references public.operator_alerts (id) on delete cascade,
  event public.operator_alert_event_kind not null,
  created_at timestamptz not null default now(),
  unique (alert_id, event)
);

-- deliveries -------------------------------------------------------------------------------------------------
create table public.notification_deliveries (
  id uuid primary key default gen_random_uuid(),
  notification_id uuid references public.notifications (id) on delete cascade,
  alert_event_id uuid references public.operator_alert_events (id) on delete cascade,
  -- The user a notification belongs to (null for operator alerts); lets users see their deliveries.
  user_id uuid references public.users (id) on delete cascade,
  channel public.notification_channel not null,
  status public.delivery_status not null default 'pending',
  attempts integer not null default 0,
  next_attempt_at timestamptz not null default now(),
  -- A claim by one notify run; another run may take the delivery over only after it lapses.
  claimed_until timestamptz,
  last_error text,
  provider_message_id text,
  delivered_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint notification_deliveries_one_source check ((notification_id is null) <> (alert_event_id is null)),
  constraint notification_deliveries_attempts_nonnegative check (attempts >= 0),
  constraint notification_deliveries_delivered_at_matches_status check ((status = 'delivered') = (delivered_at is not null)),
  constraint notification_deliveries_last_error_length check (last_error is null or char_length(last_error) <= 1000)
);
-- Idempotent by notification (or alert event) and channel.
create unique index notification_deliveries_notification_channel
  on public.notification_deliveries (notification_id, channel) where notification_id is not null;
create unique index notification_deliveries_alert_event_channel
  on public.notification_deliveries (alert_event_id, channel) where alert_event_id is not null;
create index notification_deliveries_due_idx on public.notification_deliveries (next_attempt_at)
  where status in ('pending', 'delivering');
create index notification_deliveries_user_id_idx on public.notification_deliveries (user_id);
create trigger notification_deliveries_set_updated_at before update on public.notification_deliveries
  for each row execute function private.set_updated_at();

-- When a delivery may go out: now, or at the end of the user's quiet hours.
create function private.after_quiet_hours(prefs public.notification_preferences, at_time timestamptz)
returns timestamptz
language plpgsql stable
set search_path = ''
as $$
declare
  local_ts timestamp := at_time at time zone prefs.time_zone;
  local_time time := local_ts::time;
  resume_day date := local_ts::date;
begin
  if prefs.quiet_hours_start is null then
    return at_time;
  end if;
  if prefs.quiet_hours_start < prefs.quiet_hours_end then
    if local_time < prefs.quiet_hours_start or local_time >= prefs.quiet_hours_end then
      return at_time;
    end if;
  else
    if local_time >= prefs.quiet_hours_end and local_time < prefs.quiet_hours_start then
      return at_time;
    end if;
    if local_time >= prefs.quiet_hours_start then
      resume_day := resume_day + 1;
    end if;
  end if;
  return (resume_day + prefs.quiet_hours_end) at time zone prefs.time_zone;
end
$$;

create function private.enqueue_notification_deliveries() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  prefs public.notification_preferences;
  due timestamptz;
begin
  select * into prefs from public.notification_preferences where user_id = new.user_id;
  if not found or not (new.kind = any (prefs.kinds)) then
    return null;
  end if;
  due := private.after_quiet_hours(prefs, new.created_at);
  if prefs.webhook_url is not null then
    insert into public.notification_deliveries (notification_id, user_id, channel, next_attempt_at)
    values (new.id, new.user_id, 'webhook', due);
  end if;
  if exists (select from private.telegram_credentials where user_id = new.user_id) then
    insert into public.notification_deliveries (notification_id, user_id, channel, next_attempt_at)
    values (new.id, new.user_id, 'telegram', due);
  end if;
  return null;
end
$$;
create trigger notifications_enqueue_deliveries after insert on public.notifications
  for each row execute function private.enqueue_notification_deliveries();

create function private.enqueue_alert_deliveries() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  -- The operator's channels are the notify function's configuration; unconfigured ones end as `skipped`.
  insert into public.notification_deliveries (alert_event_id, channel)
  values (new.id, 'webhook'), (new.id, 'telegram');
  return null;
end
$$;
create trigger operator_alert_events_enqueue_deliveries after insert on public.operator_alert_events
  for each row execute function private.enqueue_alert_deliveries();

-- Raising and resolving alerts (service_role, and the database's own jobs) ---------------------------------
-- Opens an alert unless one is open for (kind, subject); returns true when this call opened it.
create function public.raise_operator_alert(kind public.operator_alert_kind, subject text, message text)
returns boolean
language plpgsql
security definer
set search_path = ''
as $$
#variable_conflict use_column
declare
  opened_alert_id uuid;
  inserted boolean;
begin
  insert into public.operator_alerts as a (kind, subject, message)
  values (raise_operator_alert.kind, raise_operator_alert.subject, left(raise_operator_alert.message, 2000))
  on conflict (kind, subject) where recovered_at is null
  do update set last_seen_at = now()
  -- xmax is 0 only on a row this statement inserted.
  returning a.id, a.xmax = 0 into opened_alert_id, inserted;
  if inserted then
    insert into public.operator_alert_events (alert_id, event) values (opened_alert_id, 'fired');
  end if;
  return inserted;
end
$$;

-- Closes the open alert for (kind, subject), if any; returns true when one was closed.
create function public.resolve_operator_alert(kind public.operator_alert_kind, subject text)
returns boolean
language plpgsql
security definer
set search_path = ''
as $$
declare
  closed_id uuid;
begin
  update public.operator_alerts a set recovered_at = now(), last_seen_at = now()
   where a.kind = resolve_operator_alert.kind and a.subject = resolve_operator_alert.subject and a.recovered_at is null
  returning a.id into closed_id;
  if closed_id is not null then
    insert into public.operator_alert_events (alert_id, event) values (closed_id, 'recovered');
  end if;
  return closed_id is not null;
end
$$;

-- Service health: failures reported by machines (Binance) and functions (Gemini), judged by pg_cron --------
create table private.service_health (
  service text primary key,
  alert_kind public.operator_alert_kind not null unique,
  -- How long a service must keep failing, with no success, before the operator is alerted.
  alert_after_secs integer not null,
  failing_since timestamptz,
  last_failure_at timestamptz,
  last_failure text,
  last_ok_at timestamptz,
  constraint service_health_alert_after_secs_positive check (alert_after_secs > 0)
);
insert into private.service_health (service, alert_kind, alert_after_secs) values
  ('binance', 'binance_unreachable', 300),
  ('gemini', 'gemini_failing', 600);

-- Record one outcome. A success ends the outage (and resolves its alert at once).
create function public.report_service_health(service text, ok boolean, detail text default null) returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  health private.service_health;
begin
  if auth.role() is distinct from 'trader_machine' and auth.role() is distinct from 'service_role' then
    raise exception 'only machines and functions report service health' using errcode = '42501';
  end if;
  if ok then
    update private.service_health h set failing_since = null, last_ok_at = now()
     where h.service = report_service_health.service returning * into health;
  else
    update private.service_health h
       set failing_since = coalesce(h.failing_since, now()), last_failure_at = now(),
           last_failure = left(report_service_health.detail, 500)
     where h.service = report_service_health.service returning * into health;
  end if;
  if health.service is null then
    raise exception 'unknown service %', report_service_health.service using errcode = '22023';
  end if;
  if ok then
    perform public.resolve_operator_alert(health.alert_kind, health.service);
  end if;
end
$$;

-- pg_cron: open an alert for every service failing for longer than its threshold.
create function private.alert_on_failing_services() returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  health private.service_health;
  opened integer := 0;
begin
  for health in
    select * from private.service_health
     where failing_since is not null and failing_since <= now() - make_interval(secs => alert_after_secs)
  loop
    if public.raise_operator_alert(health.alert_kind, health.service,
         format('%s failing since %s (last error: %s)', health.service, health.failing_since,
                coalesce(health.last_failure, 'unknown'))) then
      opened := opened + 1;
    end if;
  end loop;
  return opened;
end
$$;

-- Machine events -----------------------------------------------------------------------------------------------
-- A machine that was told to start but never reported running within 3 minutes failed to start.
create function private.mark_machines_that_failed_to_start() returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  marked integer;
begin
  update public.fly_machines
     set status = 'error', error_message = format('did not start: no heartbeat within 3 minutes of %s', updated_at)
   where status = 'starting' and updated_at < now() - interval '3 minutes';
  get diagnostics marked = row_count;
  return marked;
end
$$;

create function private.notify_machine_status_change() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  alert public.operator_alert_kind;
begin
  if new.status = 'error' then
    alert := case when coalesce(new.error_message, '') like 'no heartbeat%' then 'heartbeat_missed'
                  else 'machine_start_failed' end::public.operator_alert_kind;
    perform public.raise_operator_alert(alert, new.machine_id,
      format('machine %s of user %s: %s', new.machine_id, new.user_id, coalesce(new.error_message, 'error')));
    insert into public.notifications (user_id, kind, title, body, data)
    values (new.user_id, 'machine_error', 'Your trading machine stopped working',
            left(coalesce(new.error_message, 'the machine reported an error'), 2000),
            jsonb_build_object('machineId', new.machine_id));
  elsif old.status = 'error' and new.status in ('starting', 'running', 'destroyed', 'stopped') then
    perform public.resolve_operator_alert('heartbeat_missed', new.machine_id);
    perform public.resolve_operator_alert('machine_start_failed', new.machine_id);
  end if;
  return null;
end
$$;
create trigger fly_machines_notify_status_change after update of status on public.fly_machines
  for each row when (new.status is distinct from old.status)
  execute function private.notify_machine_status_change();

revoke execute on function private.is_time_zone(text), private.after_quiet_hours(public.notification_preferences, timestamptz)
  from public;
grant execute on function private.is_time_zone(text) to anon, authenticated, service_role, trader_machine;
revoke execute on function private.enqueue_notification_deliveries(), private.enqueue_alert_deliveries(),
  private.alert_on_failing_services(), private.mark_machines_that_failed_to_start(),
  private.notify_machine_status_change() from public;

select cron.schedule('mark-machines-that-failed-to-start', '* * * * *',
  'select private.mark_machines_that_failed_to_start()');
select cron.schedule('alert-on-failing-services', '* * * * *', 'select private.alert_on_failing_services()');

-- Delivery work queue (the notify function, service_role) ------------------------------------------------------
-- Claim up to `max_deliveries` due deliveries for `lease_secs`, counting the attempt. Returns what the sender
-- needs: the message, the target and (for Telegram) the decrypted bot token. Rows claimed by a run that died
-- become due again when their claim lapses.
create function public.claim_notification_deliveries(max_deliveries integer default 50, lease_secs integer default 60)
returns table (
  delivery_id uuid, channel public.notification_channel, attempts integer, source text, source_id uuid,
  user_id uuid, kind text, title text, body text, data jsonb, created_at timestamptz,
  webhook_url text, telegram_chat_id text, telegram_bot_token text
)
language plpgsql
security definer
set search_path = ''
as $$
begin
  if max_deliveries not between 1 and 500 or lease_secs not between 5 and 3600 then
    raise exception 'max_deliveries must be 1..500 and lease_secs 5..3600' using errcode = '22023';
  end if;
  return query
  with due as (
    select d.id from public.notification_deliveries d
     where d.status in ('pending', 'delivering') and d.next_attempt_at <= now()
       and (d.claimed_until is null or d.claimed_until < now())
     order by d.next_attempt_at
     limit max_deliveries
     for update skip locked
  ), claimed as (
    update public.notification_deliveries d
       set status = 'delivering', attempts = d.attempts + 1, claimed_until = now() + make_interval(secs => lease_secs)
      from due where d.id = due.id
    returning d.*
  )
  select c.id, c.channel, c.attempts,
         case when c.notification_id is not null then 'notification' else 'operator_alert' end,
         coalesce(c.notification_id, c.alert_event_id), c.user_id,
         coalesce(n.kind::text, a.kind::text),
         coalesce(n.title, format('%s %s: %s', a.kind, e.event, a.subject)),
         coalesce(n.body, a.message),
         coalesce(n.data, jsonb_build_object('alertId', a.id, 'event', e.event, 'subject', a.subject,
                                             'openedAt', a.opened_at, 'recoveredAt', a.recovered_at)),
         coalesce(n.created_at, e.created_at),
         p.webhook_url, t.chat_id,
         case when t.user_id is not null
              then extensions.pgp_sym_decrypt(t.bot_token_encrypted, private.notification_credentials_key()) end
    from claimed c
    left join public.notifications n on n.id = c.notification_id
    left join public.operator_alert_events e on e.id = c.alert_event_id
    left join public.operator_alerts a on a.id = e.alert_id
    left join public.notification_preferences p on p.user_id = c.user_id
    left join private.telegram_credentials t on t.user_id = c.user_id and c.channel = 'telegram';
end
$$;

-- Record the outcome of one attempt. `outcome` is delivered, retry (back off: `retry_after_secs` when the
-- receiver said so, else 5 s doubling up to 1 h), failed (permanent) or skipped (no target). A delivery still
-- failing after `max_attempts` is failed. Finishing a delivery that is no longer claimed is a no-op, so a run
-- whose claim lapsed cannot undo another run's result.
create function public.finish_notification_delivery(
  delivery_id uuid, outcome text, error text default null, retry_after_secs integer default null,
  provider_message_id text default null, max_attempts integer default 8
) returns public.delivery_status
language plpgsql
security definer
set search_path = ''
as $$
declare
  result public.delivery_status;
begin
  if outcome not in ('delivered', 'retry', 'failed', 'skipped') then
    raise exception 'outcome must be delivered, retry, failed or skipped' using errcode = '22023';
  end if;
  update public.notification_deliveries d
     set status = case
           when outcome = 'delivered' then 'delivered'
           when outcome = 'skipped' then 'skipped'
           when outcome = 'failed' or d.attempts >= max_attempts then 'failed'
           else 'pending' end::public.delivery_status,
         delivered_at = case when outcome = 'delivered' then now() end,
         provider_message_id = coalesce(finish_notification_delivery.provider_message_id, d.provider_message_id),
         last_error = left(finish_notification_delivery.error, 1000),
         claimed_until = null,
         next_attempt_at = case when outcome = 'retry'
           then now() + make_interval(secs => coalesce(retry_after_secs, least(3600, 5 * 2 ^ (d.attempts - 1))))
           else d.next_attempt_at end
   where d.id = finish_notification_delivery.delivery_id and d.status = 'delivering'
  returning d.status into result;
  return result;
end
$$;

-- Grants and row level security --------------------------------------------------------------------------------
revoke all on table public.notifications, public.notification_preferences, public.notification_deliveries,
  public.operator_alerts, public.operator_alert_events
  from public, anon, authenticated, service_role, trader_machine;
revoke all on table private.service_health from public, anon, authenticated, service_role, trader_machine;
alter table public.notifications enable row level security;
alter table public.notification_preferences enable row level security;
alter table public.notification_deliveries enable row level security;
alter table public.operator_alerts enable row level security;
alter table public.operator_alert_events enable row level security;
alter table private.service_health enable row level security;

grant all on table public.notifications, public.notification_preferences, public.notification_deliveries,
  public.operator_alerts, public.operator_alert_events to service_role;

grant select on public.notifications to authenticated, trader_machine;
grant update (read_at) on public.notifications to authenticated;
grant insert on public.notifications to trader_machine;
create policy "users read their own notifications" on public.notifications
  for select to authenticated using ((select auth.uid()) = user_id);
create policy "users mark their own notifications read" on public.notifications
  for update to authenticated using ((select auth.uid()) = user_id) with check ((select auth.uid()) = user_id);
-- A machine writes only the events it sees, for its own user; it reads them back (an insert's RETURNING).
create policy "machines notify their user" on public.notifications
  for insert to trader_machine with check (
    (select auth.uid()) = user_id
    and kind in ('signal_new', 'position_opened', 'position_closed', 'trade_failed', 'trader_error')
    and dedupe_key is null and read_at is null
  );
create policy "machines read their user's notifications" on public.notifications
  for select to trader_machine using ((select auth.uid()) = user_id);

grant select, insert, delete on public.notification_preferences to authenticated;
grant update (kinds, quiet_hours_start, quiet_hours_end, time_zone, webhook_url)
  on public.notification_preferences to authenticated;
create policy "users read their own notification preferences" on public.notification_preferences
  for select to authenticated using ((select auth.uid()) = user_id);
create policy "users create their own notification preferences" on public.notification_preferences
  for insert to authenticated with check ((select auth.uid()) = user_id);
create policy "users update their own notification preferences" on public.notification_preferences
  for update to authenticated using ((select auth.uid()) = user_id) with check ((select auth.uid()) = user_id);
create policy "users delete their own notification preferences" on public.notification_preferences
  for delete to authenticated using ((select auth.uid()) = user_id);

grant select on public.notification_deliveries to authenticated;
create policy "users read their own deliveries" on public.notification_deliveries
  for select to authenticated using ((select auth.uid()) = user_id);
-- operator_alerts and operator_alert_events: service_role only (no policies for other roles).

revoke execute on function public.set_telegram_bot(text, text), public.delete_telegram_bot(),
  public.telegram_bot_status(), public.raise_operator_alert(public.operator_alert_kind, text, text),
  public.resolve_operator_alert(public.operator_alert_kind, text), public.report_service_health(text, boolean, text),
  public.claim_notification_deliveries(integer, integer),
  public.finish_notification_delivery(uuid, text, text, integer, text, integer)
  from public, anon, authenticated, service_role, trader_machine;
grant execute on function public.set_telegram_bot(text, text), public.delete_telegram_bot(),
  public.telegram_bot_status() to authenticated;
grant execute on function public.raise_operator_alert(public.operator_alert_kind, text, text),
  public.resolve_operator_alert(public.operator_alert_kind, text),
  public.claim_notification_deliveries(integer, integer),
  public.finish_notification_delivery(uuid, text, text, integer, text, integer) to service_role;
grant execute on function public.report_service_health(text, boolean, text) to service_role, trader_machine;

-- Realtime: the app shows notifications as they arrive.
alter publication supabase_realtime add table public.notifications;
