"""The local project's JWT signing keys: an ES256 key file like `supabase gen signing-key` writes, its JWKS.

Hosted projects keep their signing keys inside Supabase; an operator who needs to mint tokens (our machine
tokens) imports a private key they generated and rotates to it (docs: guides/auth/signing-keys, "How to create
(mint) JWTs"). The local stack mirrors that end state: one in-use ES256 key, generated on first use into
`.devstack/auth/signing_keys.json`, with which the Auth stand-in signs sessions and the functions sign machine
tokens. Its public half is what `/auth/v1/.well-known/jwks.json` serves and PostgREST and Realtime trust.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

KEYS_FILE_NAME = "signing_keys.json"
_PUBLIC_FIELDS = ("kty", "crv", "x", "y", "kid", "alg")


@dataclass(frozen=True)
class SigningKey:
    """One ES256 key: its id, the private JWK (for signing) and the public JWK (for the JWKS)."""

    kid: str
    private_jwk: dict[str, Any]

    @property
    def public_jwk(self) -> dict[str, Any]:
        # The shape Supabase Auth's discovery endpoint serves.
        public = {name: self.private_jwk[name] for name in _PUBLIC_FIELDS if name in self.private_jwk}
        return {**public, "use": "sig", "key_ops": ["verify"], "ext": True}

    def sign(self, claims: dict[str, Any]) -> str:
        private_key = ECAlgorithm.from_jwk(json.dumps(self.private_jwk))
        assert isinstance(private_key, ec.EllipticCurvePrivateKey)
        return jwt.encode(claims, private_key, algorithm="ES256", headers={"kid": self.kid, "typ": "JWT"})


def generate() -> SigningKey:
    """A fresh P-256 key with a random kid (as `supabase gen signing-key --algorithm ES256`)."""
    key = ec.generate_private_key(ec.SECP256R1())
    kid = str(uuid.uuid4())
    jwk: dict[str, Any] = ECAlgorithm.to_jwk(key, as_dict=True)
    jwk.update({"kid": kid, "alg": "ES256", "use": "sig", "key_ops": ["sign", "verify"], "ext": True})
    return SigningKey(kid, jwk)


def load_or_create(path: Path) -> list[SigningKey]:
    """The keys in `path` (the first signs), creating the file with one new key when it does not exist."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = generate()
        try:
            # O_EXCL: two processes starting at once keep whichever key was written first.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as keys_file:
                json.dump([key.private_jwk], keys_file, indent=2)
    keys = [SigningKey(str(jwk["kid"]), jwk) for jwk in json.loads(path.read_text())]
    if not keys or any(jwk.get("alg") != "ES256" for jwk in (k.private_jwk for k in keys)):
        raise ValueError(f"{path} must hold a JSON list of ES256 private JWKs")
    return keys


def jwks(keys: list[SigningKey]) -> dict[str, Any]:
    return {"keys": [key.public_jwk for key in keys]}


def legacy_oct_jwk(secret: str) -> dict[str, Any]:
    """The legacy JWT secret as a JWK, so one JWKS verifies both (as the Supabase CLI sets PostgREST up)."""
    k = base64.urlsafe_b64encode(secret.encode()).rstrip(b"=").decode()
    return {"kty": "oct", "k": k, "alg": "HS256"}
