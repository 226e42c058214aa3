-- Service health is judged when a failure is reported too, not only by the minutely pg_cron job, and its
-- thresholds are the operator's to set.
--
-- A worker re-reports a failure that goes on (every BINANCE_HEALTH_REPEAT_SECS, a minute by default), so the
-- alert opens with the first report past the service's threshold; pg_cron's alert_on_failing_services stays
-- the backstop for a service whose reporters went quiet. Both open the alert through raise_operator_alert:
-- one per outage, whoever sees it first. set_service_alert_threshold (service_role) changes how long a
-- service must fail before the operator hears of it (defaults: Binance 5 minutes, Gemini 10).

-- Opens the service's alert when it has failed for longer than its threshold; true when this call opened it.
create function private.alert_if_failing_too_long(health private.service_health) returns boolean
language plpgsql
security definer
set search_path = ''
as $$
begin
  if health.failing_since is null or health.failing_since > now() - make_interval(secs => health.alert_after_secs) then
    return false;
  end if;
  return public.raise_operator_alert(health.alert_kind, health.service,
    format('%s failing since %s (last error: %s)', health.service, health.failing_since,
           coalesce(health.last_failure, 'unknown')));
end
$$;
revoke execute on function private.alert_if_failing_too_long(private.service_health) from public;

create or replace function private.alert_on_failing_services() returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  health private.service_health;
  opened integer := 0;
begin
  for health in select * from private.service_health where failing_since is not null loop
    if private.alert_if_failing_too_long(health) then
      opened := opened + 1;
    end if;
  end loop;
  return opened;
end
$$;

-- Record one outcome. A success ends the outage (and resolves its alert at once); a failure past the
-- threshold opens the alert.
create or replace function public.report_service_health(service text, ok boolean, detail text default null)
returns void
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
  else
    perform private.alert_if_failing_too_long(health);
  end if;
end
$$;

create function public.set_service_alert_threshold(service text, alert_after_secs integer) returns void
language plpgsql
security definer
set search_path = ''
as $$
begin
  if alert_after_secs is null or alert_after_secs not between 1 and 86400 then
    raise exception 'alert_after_secs must be between 1 and 86400' using errcode = '22023';
  end if;
  update private.service_health h set alert_after_secs = set_service_alert_threshold.alert_after_secs
   where h.service = set_service_alert_threshold.service;
  if not found then
    raise exception 'unknown service %', set_service_alert_threshold.service using errcode = '22023';
  end if;
end
$$;
revoke execute on function public.set_service_alert_threshold(text, integer)
  from public, anon, authenticated, service_role, trader_machine;
grant execute on function public.set_service_alert_threshold(text, integer) to service_role;
