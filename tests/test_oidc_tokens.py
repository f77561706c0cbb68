"""The provider's tokens: ID, access and logout tokens that a client verifies with the published
keys, and the checks that turn away every token that is not one of our own access tokens (or ID
tokens, for an id_token_hint): other kinds of our tokens, `alg: none`, HMAC over our public key,
foreign keys, other issuers, expired ones."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from typing import Any

import asyncpg
import jwt
import pytest
from cryptography.fernet import MultiFernet
from cryptography.hazmat.primitives import serialization

from auth import keys
from auth.identity import Identity
from auth.oidc.tokens import OidcSigner, token_hash
from auth.services import SERVICES
from auth.signing import IDENTITY_TYPE, IdentitySigner, KeyStore, SigningUnavailable
from tests.helpers import Gateway

ISSUER = "https://login.example.org"
CLIENT = "online-library"
SUB = "6f1c3a52-8a7e-4d4b-9d1c-2f6a3b9e0c11"
SID = "4b1f" * 8
HASHES = {"RS256": hashlib.sha256, "ES256": hashlib.sha256, "EdDSA": hashlib.sha512}


@pytest.fixture
async def store(pool: asyncpg.Pool, cookie_keys: MultiFernet) -> KeyStore:
    store = KeyStore(pool, cookie_keys)
    await store.load()
    return store


@pytest.fixture
def signer(store: KeyStore) -> OidcSigner:
    return OidcSigner(store, ISSUER)


def jwks(store: KeyStore) -> jwt.PyJWKSet:
    return jwt.PyJWKSet.from_json(store.jwks_body.decode())


def as_client(store: KeyStore, token: str, alg: str, **options: Any) -> dict[str, Any]:
    """Verify a token the way a client library does: the key by kid from the JWKS."""
    key = jwks(store)[jwt.get_unverified_header(token)["kid"]]
    claims: dict[str, Any] = jwt.decode(
        token, key, algorithms=[alg], audience=CLIENT, issuer=ISSUER, **options
    )
    return claims


def id_token(signer: OidcSigner, alg: str = "RS256", **extra: Any) -> str:
    arguments: dict[str, Any] = {
        "client_id": CLIENT,
        "sub": SUB,
        "alg": alg,
        "nonce": "n-0S6_WzA2Mj",
        "auth_time": int(time.time()) - 30,
        "sid": SID,
        "claims": {"preferred_username": "max"},
    }
    return signer.id_token(**(arguments | extra))


def access_token(signer: OidcSigner, **extra: Any) -> str:
    arguments: dict[str, Any] = {
        "client_id": CLIENT,
        "sub": SUB,
        "scope": "openid profile",
        "sid": SID,
        "jti": "at-1",
        "auth_time": int(time.time()) - 30,
    }
    return signer.access_token(**(arguments | extra))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_parts(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())


# --- What clients get --------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_an_id_token_verifies_with_the_published_key_of_its_algorithm(
    store: KeyStore, signer: OidcSigner, alg: str
) -> None:
    auth_time = int(time.time()) - 30
    token = id_token(signer, alg, auth_time=auth_time, claims={"email": "max@example.org"})
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "JWT" and header["alg"] == alg
    key = store.oidc_key(alg)
    assert key is not None and header["kid"] == key.kid
    claims = as_client(store, token, alg, options={"require": ["exp", "iat", "sub"]})
    assert claims["sub"] == SUB and claims["azp"] == CLIENT and claims["sid"] == SID
    assert claims["nonce"] == "n-0S6_WzA2Mj" and claims["auth_time"] == auth_time
    assert claims["email"] == "max@example.org"
    assert claims["exp"] - claims["iat"] == 300
    assert "at_hash" not in claims and "c_hash" not in claims


def test_an_id_token_has_no_nonce_unless_given_and_the_scopes_claims_cannot_override_ours(
    store: KeyStore, signer: OidcSigner
) -> None:
    token = id_token(
        signer,
        nonce=None,
        claims={"sub": "someone-else", "iss": "https://evil.example", "nonce": "x", "aud": "y"},
    )
    claims = as_client(store, token, "RS256")
    assert "nonce" not in claims
    assert (claims["sub"], claims["iss"], claims["aud"]) == (SUB, ISSUER, CLIENT)


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_at_hash_and_c_hash_are_the_left_half_of_the_algorithms_hash(
    store: KeyStore, signer: OidcSigner, alg: str
) -> None:
    access, code = access_token(signer), "SplxlOBeZQQYbYS6WxSbIA"
    claims = as_client(store, id_token(signer, alg, access_token=access, code=code), alg)
    for claim, value in (("at_hash", access), ("c_hash", code)):
        digest = HASHES[alg](value.encode()).digest()
        assert claims[claim] == b64(digest[: len(digest) // 2])


def test_token_hash_matches_published_vectors() -> None:
    """The values panva's oidc-token-hash (used by node-openid-client) expects for one token."""
    token = (
        "YmJiZTAwYmYtMzgyOC00NzhkLTkyOTItNjJjNDM3MGYzOWIy9sFhvH8K_x8UIHj1osisS57f5DduL-"
        "ar_qw5jl3lthwpMjm283aVMQXDmoqqqydDSqJfbhptzw8rUVwkuQbolw"
    )
    assert token_hash(token, "RS256") == "x7vk7f6BvQj0jQHYFIk4ag"
    assert token_hash(token, "EdDSA") == "EGEAhGYyfuwDaVTifvrWSoD5MSy_5hZPy6I7Vm-7pTQ"


def test_an_access_token_is_an_rfc_9068_jwt_signed_es256(
    store: KeyStore, signer: OidcSigner
) -> None:
    token = access_token(signer, ttl=120)
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt" and header["alg"] == "ES256"
    es256 = store.oidc_key("ES256")
    assert es256 is not None and header["kid"] == es256.kid
    claims = as_client(store, token, "ES256")
    assert claims["client_id"] == CLIENT and claims["jti"] == "at-1"
    assert claims["scope"] == "openid profile" and claims["sid"] == SID
    assert claims["exp"] - claims["iat"] == 120 and "auth_time" in claims
    assert signer.verify_access_token(token) == claims


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_a_logout_token_carries_the_event_and_never_a_nonce(
    store: KeyStore, signer: OidcSigner, alg: str
) -> None:
    token = signer.logout_token(client_id=CLIENT, sub=SUB, sid=SID, alg=alg)
    assert jwt.get_unverified_header(token)["typ"] == "logout+jwt"
    claims = as_client(store, token, alg, options={"require": ["jti", "iat", "exp"]})
    assert claims["events"] == {"http://schemas.openid.net/event/backchannel-logout": {}}
    assert "nonce" not in claims
    assert (claims["sub"], claims["sid"]) == (SUB, SID)
    assert claims["exp"] - claims["iat"] == 120
    again = signer.logout_token(client_id=CLIENT, sub=SUB, sid=SID, alg=alg)
    assert as_client(store, again, alg)["jti"] != claims["jti"]


async def test_no_token_is_signed_without_a_usable_key_or_with_another_algorithm(
    pool: asyncpg.Pool, store: KeyStore, signer: OidcSigner
) -> None:
    for alg in ("none", "HS256", "RS512"):
        with pytest.raises(ValueError, match=alg):
            id_token(signer, alg)
    # Keys this instance cannot decrypt (replaced cookie keys) sign nothing.
    await pool.execute(
        "UPDATE signing_keys SET private_key = 'not a fernet token'"
        " WHERE active AND purpose = 'oidc'"
    )
    await store.refresh()
    with pytest.raises(SigningUnavailable):
        id_token(signer)
    with pytest.raises(SigningUnavailable):
        access_token(signer)


# --- What the provider takes back ---------------------------------------------------------------


def identity_header(store: KeyStore) -> str:
    identity = Identity(user_id=SUB, username="max", pass_number="1234", session=SID * 2)
    return IdentitySigner(store, ISSUER).token(identity, CLIENT)


def test_the_identity_header_has_its_own_type_and_still_verifies_as_the_readme_says(
    store: KeyStore,
) -> None:
    token = identity_header(store)
    assert jwt.get_unverified_header(token)["typ"] == IDENTITY_TYPE == "library-identity+jwt"
    # The README's backend check: a key by kid from the JWKS, EdDSA, audience and issuer.
    key = jwks(store)[jwt.get_unverified_header(token)["kid"]].key
    claims = jwt.decode(token, key, algorithms=["EdDSA"], audience=CLIENT, issuer=ISSUER)
    assert claims["sub"] == SUB


async def test_the_readmes_pyjwkclient_example_verifies_the_identity_header(
    gw: Gateway,
) -> None:
    """The README's lines for backend teams, against a running gateway whose JWKS holds the
    provider's RSA and P-256 keys too."""
    token = identity_header(gw.app[SERVICES].keys)
    client = jwt.PyJWKClient(str(gw.make_url("/.well-known/jwks.json")))
    key = (await asyncio.to_thread(client.get_signing_key_from_jwt, token)).key
    claims = jwt.decode(token, key, algorithms=["EdDSA"], audience=CLIENT, issuer=ISSUER)
    assert claims["sub"] == SUB


def test_each_kind_of_token_is_refused_where_another_kind_is_expected(
    signer: OidcSigner, store: KeyStore
) -> None:
    identity = identity_header(store)
    identity_token = id_token(signer)
    logout = signer.logout_token(client_id=CLIENT, sub=SUB, sid=SID, alg="RS256")
    access = access_token(signer)
    for token in (identity, identity_token, logout):
        assert signer.verify_access_token(token) is None
    for token in (identity, logout, access):
        assert signer.verify_id_token_hint(token) is None
    # The genuine ones pass, so the refusals above are the type's doing.
    assert signer.verify_access_token(access) is not None
    assert signer.verify_id_token_hint(identity_token) is not None


def test_a_token_of_the_right_type_signed_with_the_identity_key_is_refused(
    store: KeyStore, signer: OidcSigner
) -> None:
    """A key of one purpose never verifies a token of another, whatever the token says."""
    assert store.active is not None
    claims = jwt.decode(access_token(signer), options={"verify_signature": False})
    forged = jwt.encode(
        claims,
        store.active.private,
        algorithm="EdDSA",
        headers={"typ": "at+jwt", "kid": store.active.kid},
    )
    assert signer.verify_access_token(forged) is None


def forged_claims(signer: OidcSigner) -> dict[str, Any]:
    return dict(jwt.decode(access_token(signer), options={"verify_signature": False}))


def test_alg_none_is_refused(store: KeyStore, signer: OidcSigner) -> None:
    rs256 = store.oidc_key("RS256")
    assert rs256 is not None
    for alg in ("none", "None", "NONE"):
        header = {"alg": alg, "typ": "at+jwt", "kid": rs256.kid}
        token = unsigned_parts(header, forged_claims(signer)) + "."
        assert signer.verify_access_token(token) is None
        header["typ"] = "JWT"
        token = unsigned_parts(header, forged_claims(signer)) + "."
        assert signer.verify_id_token_hint(token) is None


def test_hmac_keyed_with_our_public_key_is_refused(store: KeyStore, signer: OidcSigner) -> None:
    """The classic key confusion: a verifier that lets the token pick HS256 would check an
    HMAC keyed with the public key, which anyone can make."""
    rs256 = store.oidc_key("RS256")
    assert rs256 is not None
    public = rs256.private.public_key()
    guesses = [
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1),
        json.dumps(keys.public_jwk(rs256.private, rs256.kid, "RS256")).encode(),
    ]
    for alg, digest in (("HS256", hashlib.sha256), ("HS512", hashlib.sha512)):
        for secret in guesses:
            signing_input = unsigned_parts(
                {"alg": alg, "typ": "at+jwt", "kid": rs256.kid}, forged_claims(signer)
            )
            mac = hmac.new(secret, signing_input.encode(), digest).digest()
            assert signer.verify_access_token(signing_input + "." + b64(mac)) is None


def test_a_foreign_key_is_refused_even_under_one_of_our_kids(
    store: KeyStore, signer: OidcSigner
) -> None:
    for alg in ("RS256", "ES256", "EdDSA"):
        ours = store.oidc_key(alg)
        assert ours is not None
        foreign = keys.generate(alg)
        for kid in (ours.kid, "foreign-kid"):
            token = jwt.encode(
                forged_claims(signer), foreign, algorithm=alg, headers={"typ": "at+jwt", "kid": kid}
            )
            assert signer.verify_access_token(token) is None


def test_one_of_our_keys_under_another_algorithm_name_is_refused(
    store: KeyStore, signer: OidcSigner
) -> None:
    es256, rs256 = store.oidc_key("ES256"), store.oidc_key("RS256")
    assert es256 is not None and rs256 is not None
    token = jwt.encode(
        forged_claims(signer),
        es256.private,
        algorithm="ES256",
        headers={"typ": "at+jwt", "kid": rs256.kid},
    )
    assert signer.verify_access_token(token) is None


def test_another_issuer_an_expired_token_or_garbage_is_refused(
    store: KeyStore, signer: OidcSigner
) -> None:
    rs256 = store.oidc_key("RS256")
    assert rs256 is not None
    elsewhere = forged_claims(signer) | {"iss": "https://login.example.org.evil.example"}
    wrong_issuer = jwt.encode(
        elsewhere, rs256.private, algorithm="RS256", headers={"typ": "at+jwt", "kid": rs256.kid}
    )
    assert signer.verify_access_token(wrong_issuer) is None
    assert (
        OidcSigner(store, "https://elsewhere.example").verify_access_token(access_token(signer))
        is None
    )
    assert signer.verify_access_token(access_token(signer, ttl=-60)) is None
    no_jti = {name: value for name, value in forged_claims(signer).items() if name != "jti"}
    without_jti = jwt.encode(
        no_jti, rs256.private, algorithm="RS256", headers={"typ": "at+jwt", "kid": rs256.kid}
    )
    assert signer.verify_access_token(without_jti) is None
    token = access_token(signer)
    head, _body, signature = token.split(".")
    tampered = head + "." + b64(json.dumps(forged_claims(signer) | {"sub": "x"}).encode())
    for junk in ("", "garbage", "a.b.c", token + "x", tampered + "." + signature, head + ".."):
        assert signer.verify_access_token(junk) is None
        assert signer.verify_id_token_hint(junk) is None


def test_an_id_token_hint_may_be_expired_unless_the_caller_says_otherwise(
    signer: OidcSigner,
) -> None:
    expired = id_token(signer, ttl=-60)
    claims = signer.verify_id_token_hint(expired)
    assert claims is not None and claims["sub"] == SUB and claims["aud"] == CLIENT
    assert signer.verify_id_token_hint(expired, allow_expired=False) is None
    assert signer.verify_id_token_hint(id_token(signer), allow_expired=False) is not None


async def test_tokens_signed_before_a_rotation_still_verify(
    store: KeyStore, signer: OidcSigner
) -> None:
    access, hint = access_token(signer), id_token(signer, "ES256")
    await store.rotate()
    assert signer.verify_access_token(access) is not None
    assert signer.verify_id_token_hint(hint) is not None
    assert (
        jwt.get_unverified_header(access_token(signer))["kid"]
        != (jwt.get_unverified_header(access)["kid"])
    )
    await store.prune(older_than=0)
    assert signer.verify_access_token(access) is None
