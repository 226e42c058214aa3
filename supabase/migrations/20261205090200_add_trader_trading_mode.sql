-- Paper or real trading per trader (traders.trading_mode, paper by default).
--
-- A trader may trade for real only while its user has stored Binance keys and a paid plan with an active
-- subscription; otherwise the write is refused with SQLSTATE PT403, which PostgREST answers with HTTP 403 and
-- the message below. users.real_trading_enabled stays the account-wide switch that lets provisioning hand the
-- keys to the user's machine. Deleting the keys puts every real trader of the user back on paper.

alter table public.traders add column trading_mode public.trading_mode not null default 'paper';
grant update (trading_mode) on public.traders to authenticated;

create function private.check_trader_real_mode() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  owner public.users;
begin
  select * into owner from public.users where id = new.user_id;
  if owner.tier = 'free' or owner.subscription_status is distinct from 'active' then
    raise exception 'real trading needs a paid plan (pro, elite or power) with an active subscription; this account is % (%)',
      owner.tier, coalesce(owner.subscription_status::text, 'no subscription') using errcode = 'PT403';
  end if;
  if not exists (select from private.binance_credentials c where c.user_id = new.user_id) then
    raise exception 'real trading needs Binance API keys: store them first (trademind keys set)' using errcode = 'PT403';
  end if;
  return new;
end
$$;
revoke execute on function private.check_trader_real_mode() from public;

create trigger traders_real_mode_allowed before insert or update of trading_mode on public.traders
  for each row when (new.trading_mode = 'real')
  execute function private.check_trader_real_mode();

-- Forget the caller's keys; real trading is switched off with them, account-wide and on every trader.
create or replace function public.delete_binance_keys() returns void
language plpgsql
security definer
set search_path = ''
as $$
begin
  if auth.uid() is null then
    raise exception 'not signed in' using errcode = '42501';
  end if;
  update public.traders set trading_mode = 'paper' where user_id = auth.uid() and trading_mode = 'real';
  update public.users set real_trading_enabled = false where id = auth.uid();
  delete from private.binance_credentials where user_id = auth.uid();
end
$$;
