"""Key material for the signing keys: making a key for a JWS algorithm, its public JWK, and
reading it back. Pure functions, no I/O; the key store (auth/signing.py) keeps the keys.

A published JWK is built from the public key alone and then cut down to the public members
of its key type, so no private member (`d`, `p`, `q`, `dp`, `dq`, `qi`) can reach the JWKS,
whatever a stored row holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

PrivateKey = Ed25519PrivateKey | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

# 2048 bits: the size every RS256 verifier takes, 112-bit strength, which NIST allows for
# new signatures through 2030; these sign tokens that live minutes, and they rotate. 3072
# bits would make every ID and access token cost 2.5 times as much to sign (0.3 against
# 0.75 ms here) for strength nobody needs within a key's lifetime; the day 2048 is retired,
# raising this number and rotating is the whole change.
RSA_KEY_BITS = 2048

ALGORITHMS = ("RS256", "ES256", "EdDSA")

# The members a published JWK may carry: its type's public parameters and our labels.
_PUBLIC_MEMBERS = {
    "RSA": {"n", "e"},
    "EC": {"crv", "x", "y"},
    "OKP": {"crv", "x"},
}
_LABELS = {"kty", "kid", "alg", "use"}


def generate(algorithm: str) -> PrivateKey:
    if algorithm == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "EdDSA":
        return Ed25519PrivateKey.generate()
    raise ValueError(f"no signing keys for algorithm {algorithm!r}")


def private_pem(private: PrivateKey) -> bytes:
    return private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private(pem: bytes, algorithm: str) -> PrivateKey:
    """The private key in `pem`, which must be of the kind `algorithm` signs with."""
    private = serialization.load_pem_private_key(pem, password=None)
    if algorithm == "RS256" and isinstance(private, rsa.RSAPrivateKey):
        return private
    if (
        algorithm == "ES256"
        and isinstance(private, ec.EllipticCurvePrivateKey)
        and isinstance(private.curve, ec.SECP256R1)
    ):
        return private
    if algorithm == "EdDSA" and isinstance(private, Ed25519PrivateKey):
        return private
    raise ValueError(f"the stored key is not a key for {algorithm}")


def public_jwk(private: PrivateKey, kid: str, algorithm: str) -> dict[str, Any]:
    """The JWK a verifier needs: the public key, its `kid`, `alg` and `use: sig`."""
    public = private.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        jwk = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
    jwk.update({"kid": kid, "alg": algorithm, "use": "sig"})
    return published(jwk)


def published(jwk: Mapping[str, Any]) -> dict[str, Any]:
    """`jwk` with nothing but the public members of its key type and our labels."""
    allowed = _LABELS | _PUBLIC_MEMBERS.get(str(jwk.get("kty")), set())
    return {name: value for name, value in jwk.items() if name in allowed}
