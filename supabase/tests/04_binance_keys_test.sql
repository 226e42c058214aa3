-- Binance keys: encrypted at rest, write-only for the user (masked hint back), decryptable by service_role only.
begin;
select plan(17);

select tests.create_user('a0000000-0000-4000-8000-000000000001', 'a@example.com');
select tests.create_user('b0000000-0000-4000-8000-000000000001', 'b@example.com');

select is((select count(*) from vault.secrets where name = 'binance_credentials_key'), 1::bigint,
  'the data key lives in Vault');

select tests.authenticate_as('a0000000-0000-4000-8000-000000000001');
select lives_ok($$select public.set_binance_keys('AKIAbinanceApiKey0001xyz9', 'SuperSecretBinanceSecret77')$$,
  'a user stores its keys');
select throws_ok($$select public.set_binance_keys('short', 'SuperSecretBinanceSecret77')$$, '22023',
  'api_key must be 16 to 128 letters and digits', 'a malformed API key is refused with a reason');
select results_eq('select has_keys, api_key_masked from public.binance_keys_status()',
  $$values (true, 'AKIA…xyz9')$$, 'the user sees only a masked hint');
select lives_ok($$update public.users set real_trading_enabled = true where id = 'a0000000-0000-4000-8000-000000000001'$$,
  'with keys stored, real trading can be switched on');
select throws_ok($$select * from public.decrypt_binance_keys('a0000000-0000-4000-8000-000000000001')$$, '42501', null,
  'the user cannot decrypt its own keys through the API');

select tests.authenticate_as('b0000000-0000-4000-8000-000000000001');
select results_eq('select has_keys, api_key_masked from public.binance_keys_status()',
  $$values (false, null::text)$$, 'another user sees nothing of A''s keys');
select throws_ok($$update public.users set real_trading_enabled = true where id = 'b0000000-0000-4000-8000-000000000001'$$,
  '23514', 'real trading needs Binance API keys: store them first', 'real trading without keys is refused');

select tests.authenticate_as_machine('a0000000-0000-4000-8000-000000000001', 'machine-a');
select throws_ok($$select * from public.decrypt_binance_keys('a0000000-0000-4000-8000-000000000001')$$, '42501', null,
  'the machine cannot decrypt keys (provision-machine hands them over)');

select tests.authenticate_as_anon();
select throws_ok($$select public.set_binance_keys('AKIAbinanceApiKey0001xyz9', 'SuperSecretBinanceSecret77')$$,
  '42501', null, 'anon cannot store keys');

select tests.clear_authentication();
select is((select position('AKIAbinance' in encode(api_key_encrypted, 'escape')) from private.binance_credentials
  where user_id = 'a0000000-0000-4000-8000-000000000001'), 0,
  'the API key is not stored in clear');
select is((select position('SuperSecret' in encode(secret_key_encrypted, 'escape')) from private.binance_credentials
  where user_id = 'a0000000-0000-4000-8000-000000000001'), 0,
  'the secret is not stored in clear');
select throws_ok($$select extensions.pgp_sym_decrypt(api_key_encrypted, 'wrong key') from private.binance_credentials
  where user_id = 'a0000000-0000-4000-8000-000000000001'$$,
  '39000', null, 'the ciphertext does not open with another key');

select tests.authenticate_as_service_role();
select results_eq($$select api_key, secret_key from public.decrypt_binance_keys('a0000000-0000-4000-8000-000000000001')$$,
  $$values ('AKIAbinanceApiKey0001xyz9'::text, 'SuperSecretBinanceSecret77'::text)$$,
  'service_role decrypts the keys for provisioning');

select tests.authenticate_as('a0000000-0000-4000-8000-000000000001');
select lives_ok('select public.delete_binance_keys()', 'a user deletes its keys');
select results_eq('select has_keys from public.binance_keys_status()', $$values (false)$$, 'the keys are gone');
select is((select real_trading_enabled from public.users), false, 'deleting the keys switched real trading off');

select * from finish();
rollback;
