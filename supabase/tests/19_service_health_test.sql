-- Service health judged on report: a failure reported past the threshold opens the alert (once), a success
-- resolves it; thresholds are set by the operator only, within bounds.
begin;
select plan(11);

select tests.create_user('a1860000-0000-4000-8000-000000000001', 'sh-a@example.com');
select tests.create_machine('a1860000-0000-4000-8000-000000000001', 'machine-sh', 'running');

select tests.authenticate_as_service_role();
-- The stack's history may hold real outages (tests/supabase/test_service_health.py): none open from here, and only
-- this transaction's alerts counted.
select public.resolve_operator_alert('binance_unreachable', 'binance');
select lives_ok($$select public.set_service_alert_threshold('binance', 60)$$, 'operator: sets the Binance threshold');
select throws_ok($$select public.set_service_alert_threshold('binance', 0)$$, '22023', null, 'a threshold is positive');
select throws_ok($$select public.set_service_alert_threshold('kraken', 60)$$, '22023', null, 'of a known service');
select tests.authenticate_as_machine('a1860000-0000-4000-8000-000000000001', 'machine-sh');
select throws_ok($$select public.set_service_alert_threshold('binance', 1)$$, '42501', null,
  'machine: cannot change a threshold');

select lives_ok($$select public.report_service_health('binance', false, 'connection refused')$$,
  'machine: reports a failure');
select tests.clear_authentication();
select is((select count(*) from public.operator_alerts where subject = 'binance' and recovered_at is null), 0::bigint,
  'a failure younger than the threshold opens no alert');
update private.service_health set failing_since = now() - interval '61 seconds' where service = 'binance';

select tests.authenticate_as_machine('a1860000-0000-4000-8000-000000000001', 'machine-sh');
select public.report_service_health('binance', false, 'connection refused');
select public.report_service_health('binance', false, 'still refused');
select tests.clear_authentication();
select results_eq($$select message from public.operator_alerts where subject = 'binance' and recovered_at is null$$,
  $$select format('binance failing since %s (last error: connection refused)', failing_since)
      from private.service_health where service = 'binance'$$,
  'the first report past the threshold opens one alert, naming the outage''s start and error');
select is(private.alert_on_failing_services(), 0, 'the cron job finds it open already');

select tests.authenticate_as_machine('a1860000-0000-4000-8000-000000000001', 'machine-sh');
select public.report_service_health('binance', true);
select public.report_service_health('binance', true);
select tests.clear_authentication();
select results_eq($$select e.event::text from public.operator_alert_events e join public.operator_alerts a on a.id = e.alert_id
                     where a.subject = 'binance' and a.opened_at = now() order by e.created_at, e.event$$,
  $$values ('fired'), ('recovered')$$, 'one fired and one recovered event');
select is((select alert_after_secs from private.service_health where service = 'gemini'), 600,
  'the other services keep their threshold');

update private.service_health set alert_after_secs = 300 where service = 'binance';
select tests.authenticate_as_machine('a1860000-0000-4000-8000-000000000001', 'machine-sh');
select public.report_service_health('binance', false, 'refused again');
select tests.clear_authentication();
update private.service_health set failing_since = now() - interval '299 seconds' where service = 'binance';
select tests.authenticate_as_machine('a1860000-0000-4000-8000-000000000001', 'machine-sh');
select public.report_service_health('binance', false, 'refused again');
select tests.clear_authentication();
select is((select count(*) from public.operator_alerts where subject = 'binance' and recovered_at is null), 0::bigint,
  'by default four minutes 59 of failures are not yet an outage');

select * from finish();
rollback;
