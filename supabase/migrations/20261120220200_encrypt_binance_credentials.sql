-- Binance API credentials, encrypted at rest with pgcrypto (AES-256, OpenPGP symmetric) under a key kept in
-- Vault. The table is outside every exposed schema and granted to nobody: users go through the RPCs below,
-- which only ever return a masked hint; only service_role (provision-machine) can decrypt.

create table private.binance_credentials (
  user_id uuid primary key references public.users (id) on delete cascade,
  api_key_encrypted bytea not null,
  secret_key_encrypted bytea not null,
  -- First and last four characters of the API key, for display ("abcd…wxyz").
  api_key_hint text not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
alter table private.binance_credentials enable row level security;
revoke all on table private.binance_credentials from public, anon, authenticated, service_role, trader_machine;

create trigger binance_credentials_set_updated_at before update on private.binance_credentials
  for each row execute function private.set_updated_at();

-- The data key lives in Vault (encrypted by the project's root key on hosted Supabase), never in this table.
do $$
begin
  if not exists (select from vault.secrets where name = 'binance_credentials_key') then
    perform vault.create_secret(
      encode(extensions.gen_random_bytes(32), 'hex'),
      'binance_credentials_key',
      'pgcrypto key for private.binance_credentials'
    );
  end if;
end
$$;

create function private.binance_credentials_key() returns text
language plpgsql stable
security definer
set search_path = ''
as $$
declare
  data_key text;
begin
  select decrypted_secret into data_key from vault.decrypted_secrets where name = 'binance_credentials_key';
  if data_key is null then
    raise exception 'vault secret binance_credentials_key is missing' using errcode = '55000';
  end if;
  return data_key;
end
$$;
revoke execute on function private.binance_credentials_key() from public, anon, authenticated, service_role, trader_machine;

-- Store (or replace) the caller's keys.
create function public.set_binance_keys(api_key text, secret_key text) returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  caller uuid := auth.uid();
  data_key text;
begin
  if caller is null then
    raise exception 'not signed in' using errcode = '42501';
  end if;
  if api_key is null or api_key !~ '^[A-Za-z0-9]{16,128}$' then
    raise exception 'api_key must be 16 to 128 letters and digits' using errcode = '22023';
  end if;
  if secret_key is null or secret_key !~ '^[A-Za-z0-9]{16,128}$' then
    raise exception 'secret_key must be 16 to 128 letters and digits' using errcode = '22023';
  end if;
  data_key := private.binance_credentials_key();
  insert into private.binance_credentials (user_id, api_key_encrypted, secret_key_encrypted, api_key_hint)
  values (
    caller,
    extensions.pgp_sym_encrypt(api_key, data_key, 'cipher-algo=aes256'),
    extensions.pgp_sym_encrypt(secret_key, data_key, 'cipher-algo=aes256'),
    left(api_key, 4) || '…' || right(api_key, 4)
  )
  on conflict (user_id) do update
    set api_key_encrypted = excluded.api_key_encrypted,
        secret_key_encrypted = excluded.secret_key_encrypted,
        api_key_hint = excluded.api_key_hint;
end
$$;

-- Forget the caller's keys; real trading is switched off with them.
create function public.delete_binance_keys() returns void
language plpgsql
security definer
set search_path = ''
as $$
begin
  if auth.uid() is null then
    raise exception 'not signed in' using errcode = '42501';
  end if;
  update public.users set real_trading_enabled = false where id = auth.uid();
  delete from private.binance_credentials where user_id = auth.uid();
end
$$;

-- What the settings page shows: whether keys are stored, and a masked hint.
create function public.binance_keys_status()
returns table (has_keys boolean, api_key_masked text, updated_at timestamptz)
language sql stable
security definer
set search_path = ''
as $$
  select c.user_id is not null, c.api_key_hint, c.updated_at
  from (select auth.uid() as uid) as caller
  left join private.binance_credentials c on c.user_id = caller.uid
  where caller.uid is not null
$$;

-- For provision-machine only: the plaintext keys go straight into the machine's secrets.
create function public.decrypt_binance_keys(user_id uuid)
returns table (api_key text, secret_key text)
language sql stable
security definer
set search_path = ''
as $$
  select extensions.pgp_sym_decrypt(c.api_key_encrypted, private.binance_credentials_key()),
         extensions.pgp_sym_decrypt(c.secret_key_encrypted, private.binance_credentials_key())
  from private.binance_credentials c
  where c.user_id = decrypt_binance_keys.user_id
$$;

revoke execute on function public.set_binance_keys(text, text), public.delete_binance_keys(),
  public.binance_keys_status(), public.decrypt_binance_keys(uuid)
  from public, anon, authenticated, service_role, trader_machine;
grant execute on function public.set_binance_keys(text, text), public.delete_binance_keys(),
  public.binance_keys_status() to authenticated;
grant execute on function public.decrypt_binance_keys(uuid) to service_role;

-- Real trading needs keys: refuse to switch it on without them.
create function private.check_real_trading_has_keys() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if new.real_trading_enabled
     and not exists (select from private.binance_credentials where user_id = new.id) then
    raise exception 'real trading needs Binance API keys: store them first' using errcode = '23514';
  end if;
  return new;
end
$$;
revoke execute on function private.check_real_trading_has_keys() from public;

create trigger users_real_trading_needs_keys before insert or update of real_trading_enabled on public.users
  for each row when (new.real_trading_enabled)
  execute function private.check_real_trading_has_keys();
