-- Dev-only stand-in for the pg_net extension's SQL interface (https://github.com/supabase/pg_net): what
-- net.http_post / net.http_get / net.http_delete do is queue a request and return its id; a background worker
-- (devstack.pg_net here, a Postgres bgworker there) sends it and writes the answer to net._http_response.
-- Applied by the pg_net stack part at start; idempotent. Not a migration: hosted projects enable the real one.
create schema if not exists net;

create table if not exists net.http_request_queue (
  id bigserial primary key,
  method text not null,
  url text not null,
  headers jsonb not null,
  body bytea,
  timeout_milliseconds integer not null
);

create unlogged table if not exists net._http_response (
  id bigint,
  status_code integer,
  content_type text,
  headers jsonb,
  content text,
  timed_out boolean,
  error_msg text,
  created timestamptz not null default now()
);
create index if not exists _http_response_created_idx on net._http_response (created);

create or replace function net._wake_worker() returns trigger
language plpgsql
as $$
begin
  perform pg_notify('devstack_pg_net', '');
  return null;
end
$$;
drop trigger if exists http_request_queue_wake on net.http_request_queue;
create trigger http_request_queue_wake after insert on net.http_request_queue
  for each statement execute function net._wake_worker();

create or replace function net.http_post(
  url text,
  body jsonb default '{}'::jsonb,
  params jsonb default '{}'::jsonb,
  headers jsonb default '{"Content-Type": "application/json"}'::jsonb,
  timeout_milliseconds integer default 5000
) returns bigint
language plpgsql
as $$
declare
  request_id bigint;
  query text := (select string_agg(format('%s=%s', key, value), '&') from jsonb_each_text(params));
begin
  insert into net.http_request_queue (method, url, headers, body, timeout_milliseconds)
  values ('POST', url || coalesce('?' || query, ''), headers, convert_to(body::text, 'UTF8'), timeout_milliseconds)
  returning id into request_id;
  return request_id;
end
$$;

create or replace function net.http_get(
  url text,
  params jsonb default '{}'::jsonb,
  headers jsonb default '{}'::jsonb,
  timeout_milliseconds integer default 5000
) returns bigint
language plpgsql
as $$
declare
  request_id bigint;
  query text := (select string_agg(format('%s=%s', key, value), '&') from jsonb_each_text(params));
begin
  insert into net.http_request_queue (method, url, headers, body, timeout_milliseconds)
  values ('GET', url || coalesce('?' || query, ''), headers, null, timeout_milliseconds)
  returning id into request_id;
  return request_id;
end
$$;

revoke all on schema net from public;
revoke all on all tables in schema net from public;
revoke execute on all functions in schema net from public;
grant usage on schema net to postgres, service_role;
grant execute on function net.http_post(text, jsonb, jsonb, jsonb, integer),
  net.http_get(text, jsonb, jsonb, integer) to postgres, service_role;
