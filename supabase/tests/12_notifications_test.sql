-- Notifications: who writes and reads them, preferences and quiet hours, delivery queue (claim, retry, once),
-- Telegram credentials, operator alerts deduplicated per outage, machine events and service health.
begin;
select plan(46);

select tests.create_user('a1800000-0000-4000-8000-000000000001', 'n-a@example.com');
select tests.create_user('b1800000-0000-4000-8000-000000000001', 'n-b@example.com');
select tests.create_machine('a1800000-0000-4000-8000-000000000001', 'machine-na');

-- The worker's events notify through triggers on the events themselves (15 tests them); machines write none --
select tests.authenticate_as_machine('a1800000-0000-4000-8000-000000000001', 'machine-na');
select throws_ok($$insert into public.notifications (id, user_id, kind, title, body)
  values ('a1800000-0000-4000-8000-0000000000a1', 'a1800000-0000-4000-8000-000000000001', 'signal_new', 'New signal', 'BTCUSDT')$$,
  '42501', null, 'machine: cannot write a notification, not even its own user''s');
select throws_ok($$insert into public.notifications (user_id, kind, title)
  values ('b1800000-0000-4000-8000-000000000001', 'signal_new', 'x')$$, '42501', null,
  'machine: cannot notify another user');
select throws_ok($$insert into public.notifications (user_id, kind, title)
  values ('a1800000-0000-4000-8000-000000000001', 'budget_exceeded', 'x')$$, '42501', null,
  'machine: cannot raise database-only kinds');
select throws_ok($$update public.notifications set read_at = now()$$, '42501', null, 'machine: cannot mark read');
select tests.clear_authentication();
insert into public.notifications (id, user_id, kind, title, body)
values ('a1800000-0000-4000-8000-0000000000a1', 'a1800000-0000-4000-8000-000000000001', 'signal_new', 'New signal', 'BTCUSDT');

-- Users read and mark read only their own ----------------------------------------------------------------------
select tests.clear_authentication();
insert into public.notifications (user_id, kind, title) values ('b1800000-0000-4000-8000-000000000001', 'trade_failed', 'B''s');
select tests.authenticate_as('a1800000-0000-4000-8000-000000000001');
select results_eq('select kind::text from public.notifications', $$values ('signal_new')$$, 'user: reads only its own');
select lives_ok('update public.notifications set read_at = now()', 'user: marks its own read');
select throws_ok($$update public.notifications set title = 'changed'$$, '42501', null, 'user: changes nothing else');
select throws_ok($$insert into public.notifications (user_id, kind, title)
  values ('a1800000-0000-4000-8000-000000000001', 'signal_new', 'x')$$, '42501', null, 'user: cannot write notifications');
select tests.authenticate_as('b1800000-0000-4000-8000-000000000001');
select is((select read_at from public.notifications), null, 'another user''s update did not touch B''s notification');
select tests.authenticate_as_anon();
select throws_ok('select * from public.notifications', '42501', null, 'anon: no access');

-- Preferences, Telegram credentials and deliveries -------------------------------------------------------------
select tests.authenticate_as('a1800000-0000-4000-8000-000000000001');
select lives_ok($$insert into public.notification_preferences (user_id, kinds, webhook_url)
  values ('a1800000-0000-4000-8000-000000000001', '{signal_new,position_closed}', 'http://127.0.0.1:9/hook')$$,
  'user: sets its preferences');
select throws_ok($$insert into public.notification_preferences (user_id) values ('b1800000-0000-4000-8000-000000000001')$$,
  '42501', null, 'user: cannot set another user''s preferences');
select throws_ok($$update public.notification_preferences set time_zone = 'Mars/Olympus'$$, '23514', null,
  'an unknown time zone is refused');
select throws_ok($$select public.set_telegram_bot('not-a-token', '12345')$$, '22023', null, 'a malformed bot token is refused');
select lives_ok($$select public.set_telegram_bot('123456:ABCdefGHIjklMNOpqrSTUvwxYZ012345', '987654')$$,
  'user: stores a Telegram bot');
select results_eq('select has_bot, bot_token_masked, chat_id from public.telegram_bot_status()',
  $$values (true, '123456:…2345'::text, '987654'::text)$$, 'the status shows a masked token, never the token');
select throws_ok('select * from private.telegram_credentials', '42501', null, 'user: cannot read the encrypted table');

select tests.clear_authentication();
insert into public.notifications (id, user_id, kind, title) values
  ('a1800000-0000-4000-8000-0000000000a2', 'a1800000-0000-4000-8000-000000000001', 'position_closed', 'Closed: take profit'),
  ('a1800000-0000-4000-8000-0000000000a3', 'a1800000-0000-4000-8000-000000000001', 'trade_failed', 'Order rejected');
select tests.clear_authentication();
select results_eq($$select channel::text, status::text from public.notification_deliveries
                     where notification_id = 'a1800000-0000-4000-8000-0000000000a2' order by channel$$,
  $$values ('telegram', 'pending'), ('webhook', 'pending')$$, 'a wanted kind gets one delivery per configured channel');
select is((select count(*) from public.notification_deliveries where notification_id = 'a1800000-0000-4000-8000-0000000000a3'),
  0::bigint, 'a kind the user did not pick is not delivered outside the app');

-- Claim, retry with backoff, deliver once.
select tests.authenticate_as_service_role();
select results_eq($$select channel::text, attempts, title, webhook_url, telegram_chat_id, telegram_bot_token
                      from public.claim_notification_deliveries(10, 30) order by channel$$,
  $$values ('telegram'::text, 1, 'Closed: take profit'::text, 'http://127.0.0.1:9/hook'::text, '987654'::text,
            '123456:ABCdefGHIjklMNOpqrSTUvwxYZ012345'::text),
           ('webhook', 1, 'Closed: take profit', 'http://127.0.0.1:9/hook', null, null)$$,
  'claiming returns each due delivery once with its target and the decrypted bot token');
select is((select count(*) from public.claim_notification_deliveries(10, 30)), 0::bigint,
  'claimed deliveries are not claimed again while the claim holds');
select is(public.finish_notification_delivery(
    (select id from public.notification_deliveries where notification_id = 'a1800000-0000-4000-8000-0000000000a2' and channel = 'webhook'),
    'retry', 'HTTP 503'), 'pending'::public.delivery_status, 'a failed attempt goes back to pending');
select ok((select next_attempt_at > now() + interval '4 seconds' from public.notification_deliveries
            where notification_id = 'a1800000-0000-4000-8000-0000000000a2' and channel = 'webhook'),
  'and waits (5 s after the first attempt)');
select is(public.finish_notification_delivery(
    (select id from public.notification_deliveries where notification_id = 'a1800000-0000-4000-8000-0000000000a2' and channel = 'telegram'),
    'delivered', null, null, '42'), 'delivered'::public.delivery_status, 'a sent message is delivered');
select is(public.finish_notification_delivery(
    (select id from public.notification_deliveries where notification_id = 'a1800000-0000-4000-8000-0000000000a2' and channel = 'telegram'),
    'retry', 'late'), null, 'finishing a delivery that is no longer claimed changes nothing');
update public.notification_deliveries set next_attempt_at = now() - interval '1 second', attempts = 8
 where notification_id = 'a1800000-0000-4000-8000-0000000000a2' and channel = 'webhook';
select is((select attempts from public.claim_notification_deliveries(10, 30)), 9, 'the retry is claimed again when due');
select is(public.finish_notification_delivery(
    (select id from public.notification_deliveries where notification_id = 'a1800000-0000-4000-8000-0000000000a2' and channel = 'webhook'),
    'retry', 'HTTP 503'), 'failed'::public.delivery_status, 'after the last attempt a delivery fails for good');
select tests.authenticate_as('b1800000-0000-4000-8000-000000000001');
select is((select count(*) from public.notification_deliveries), 0::bigint, 'user: sees no one else''s deliveries');
select throws_ok($$select * from public.claim_notification_deliveries()$$, '42501', null, 'user: cannot claim deliveries');

-- Quiet hours: deliveries wait until the window ends (here 00:00-23:59 UTC, i.e. now, unless the day just turned).
select tests.clear_authentication();
update public.notification_preferences set quiet_hours_start = '00:00', quiet_hours_end = '23:59:59'
 where user_id = 'a1800000-0000-4000-8000-000000000001';
insert into public.notifications (id, user_id, kind, title)
values ('a1800000-0000-4000-8000-0000000000a4', 'a1800000-0000-4000-8000-000000000001', 'signal_new', 'Quiet');
select is((select min(next_attempt_at) from public.notification_deliveries where notification_id = 'a1800000-0000-4000-8000-0000000000a4'),
  ((now() at time zone 'UTC')::date + time '23:59:59') at time zone 'UTC', 'a delivery in quiet hours waits for their end');
select is(private.after_quiet_hours(
    row('a1800000-0000-4000-8000-000000000001', '{}', '22:00', '07:00', 'Europe/Berlin', null, now())::public.notification_preferences,
    '2026-01-10 22:30:00+00'), '2026-01-11 06:00:00+00'::timestamptz,
  'a window over midnight in Berlin (23:30 local) resumes at 07:00 local the next day');

-- Operator alerts: one per outage, one recovery ---------------------------------------------------------------
select tests.authenticate_as_service_role();
-- The stack's history may hold real Binance outages (tests/supabase/test_service_health.py): start from none open,
-- and count only what this transaction opened.
select public.resolve_operator_alert('binance_unreachable', 'binance');
select is(public.raise_operator_alert('binance_unreachable', 'binance', 'down'), true, 'the first report opens an alert');
select is(public.raise_operator_alert('binance_unreachable', 'binance', 'still down'), false, 'later reports do not');
select is(public.resolve_operator_alert('binance_unreachable', 'binance'), true, 'the recovery closes it');
select is(public.resolve_operator_alert('binance_unreachable', 'binance'), false, 'and only once');
select results_eq($$select e.event::text from public.operator_alert_events e join public.operator_alerts a on a.id = e.alert_id
                     where a.subject = 'binance' and a.opened_at = now() order by e.created_at, e.event$$,
  $$values ('fired'), ('recovered')$$, 'one fired and one recovered event');
select is((select count(*) from public.notification_deliveries d join public.operator_alert_events e on e.id = d.alert_event_id
            join public.operator_alerts a on a.id = e.alert_id where a.subject = 'binance' and a.opened_at = now()),
  4::bigint, 'each event is queued for the operator''s webhook and Telegram');

-- Service health: failures reported, judged by the cron job, ended by a success.
select tests.authenticate_as_machine('a1800000-0000-4000-8000-000000000001', 'machine-na');
select lives_ok($$select public.report_service_health('binance', false, 'connection refused')$$, 'machine: reports a failure');
select tests.authenticate_as('a1800000-0000-4000-8000-000000000001');
select throws_ok($$select public.report_service_health('binance', true)$$, '42501', null, 'user: cannot report health');
select tests.clear_authentication();
select is(private.alert_on_failing_services(), 0, 'a failure younger than the threshold opens no alert');
update private.service_health set failing_since = now() - interval '6 minutes' where service = 'binance';
select is(private.alert_on_failing_services() + private.alert_on_failing_services(), 1,
  'five minutes of failures open exactly one alert');
select tests.authenticate_as_machine('a1800000-0000-4000-8000-000000000001', 'machine-na');
select lives_ok($$select public.report_service_health('binance', true)$$, 'machine: reports Binance reachable again');
select tests.clear_authentication();
select is((select count(*) from public.operator_alerts where subject = 'binance' and recovered_at is null), 0::bigint,
  'the success resolved the alert');

-- Machine events ------------------------------------------------------------------------------------------------
select tests.create_machine('b1800000-0000-4000-8000-000000000001', 'machine-nb', 'running');
update public.fly_machines set last_heartbeat = now() - interval '5 minutes' where machine_id = 'machine-nb';
select private.mark_stale_machines();
select results_eq($$select kind::text from public.operator_alerts where subject = 'machine-nb' and recovered_at is null$$,
  $$values ('heartbeat_missed')$$, 'a missed heartbeat opens an operator alert');
select results_eq($$select kind::text from public.notifications where user_id = 'b1800000-0000-4000-8000-000000000001'
                     and kind = 'machine_error'$$, $$values ('machine_error')$$, 'and tells the user');
update public.fly_machines set status = 'running' where machine_id = 'machine-nb';
select is((select count(*) from public.operator_alerts where subject = 'machine-nb' and recovered_at is not null), 1::bigint,
  'a machine that runs again resolves its alert');

select * from finish();
rollback;
