"""The local keys are the Supabase CLI's, and minted tokens carry what PostgREST and policies need."""

from __future__ import annotations

import uuid

import jwt
import pytest

from devstack import keys


@pytest.mark.parametrize(("key", "role"), [(keys.ANON_KEY, "anon"), (keys.SERVICE_ROLE_KEY, "service_role")])
def test_well_known_keys_are_signed_with_the_local_secret(key: str, role: str) -> None:
    claims = jwt.decode(key, keys.JWT_SECRET, algorithms=["HS256"])

    assert claims == {"iss": "supabase-demo", "role": role, "exp": 1983812996}


def test_minted_machine_token_carries_role_sub_and_machine_id() -> None:
    user_id = uuid.uuid4()

    token = keys.mint_jwt("trader_machine", user_id, valid_for_secs=60, extra_claims={"machine_id": "m-1"})

    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    claims = keys.decode(token)
    assert (claims["role"], claims["sub"], claims["machine_id"]) == ("trader_machine", str(user_id), "m-1")
    assert (claims["aud"], claims["machine_gen"]) == ("authenticated", 1)
    assert claims["exp"] - claims["iat"] == 60


def test_minting_an_unknown_role_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown role 'postgres'"):
        keys.mint_jwt("postgres")


def test_minting_with_a_malformed_sub_is_refused() -> None:
    with pytest.raises(ValueError):
        keys.mint_jwt("authenticated", "not-a-uuid")
