"""What a backend learns about a logged-in patron: the identity headers, that nobody else can
set them, and the signed JWT a backend can verify against the published keys."""

from __future__ import annotations

import base64
import json
from typing import Any

import asyncpg
import jwt
import pytest
from cryptography.fernet import MultiFernet

from auth.credentials.passwords import PasswordHasher
from auth.services import SERVICES
from auth.signing import TOKEN_TTL
from auth.store.accounts import Account
from gateway import appkeys as app_keys
from tests.helpers import (
    Gateway,
    add_patron,
    fetch,
    identity_seen,
    jar_cookie,
    login,
    open_cookie,
    received,
    unique_pass_number,
)

SPOOFED = {
    "X-Library-User-Id": "00000000-0000-0000-0000-000000000001",
    "X-Library-Username": "librarian",
    "X-Library-Pass-Number": "1",
    "X-Library-Identity": "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.",
    "X-Library-Role": "admin",
}


@pytest.fixture
async def patron(gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher) -> tuple[Account, str]:
    """A patron logged in on `gw`: the account and its session cookie."""
    account = await add_patron(pool, hasher)
    assert (await login(gw, account.username)).status == 303
    cookie = jar_cookie(gw)
    assert cookie is not None
    return account, cookie


async def backend_sees(
    client: Gateway, path: str, cookie: str | None, headers: dict[str, str] | None = None
) -> dict[str, str]:
    resp = await fetch(client, path, cookie, headers=headers)
    assert resp.status == 200
    return identity_seen(await resp.json())


async def published_keys(client: Gateway) -> jwt.PyJWKSet:
    resp = await client.get("/.well-known/jwks.json")
    assert resp.status == 200
    return jwt.PyJWKSet.from_dict(await resp.json())


async def verify(client: Gateway, token: str, audience: str) -> dict[str, Any]:
    """Verify a token the way a backend team would: key by kid from the JWKS."""
    key = (await published_keys(client))[jwt.get_unverified_header(token)["kid"]]
    issuer = client.app[app_keys.SETTINGS].public_url
    claims: dict[str, Any] = jwt.decode(
        token,
        key,
        algorithms=["EdDSA"],
        audience=audience,
        issuer=issuer,
        options={"require": ["exp", "iat", "sub", "aud", "iss"]},
    )
    return claims


# --- The identity headers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/reservations/mine", "/catalogue/search?q=x", "/reservations/opening-hours"]
)
async def test_a_logged_in_patron_is_named_to_the_backend(
    gw: Gateway, patron: tuple[Account, str], path: str
) -> None:
    account, cookie = patron
    seen = await backend_sees(gw, path, cookie)
    assert seen["x-library-user-id"] == account.id
    assert seen["x-library-username"] == account.username
    assert seen["x-library-pass-number"] == account.pass_number
    assert seen["x-library-identity"].count(".") == 2
    # The account's pass is its membership of the (built-in) default institution.
    assert seen["x-library-memberships"] == "default::"
    assert set(seen) == {
        "x-library-user-id",
        "x-library-username",
        "x-library-pass-number",
        "x-library-identity",
        "x-library-memberships",
    }


async def test_spoofed_identity_headers_are_replaced_by_the_real_ones(
    gw: Gateway, patron: tuple[Account, str]
) -> None:
    """Defends against a patron claiming to be somebody else next to a valid session."""
    account, cookie = patron
    for path in ("/reservations/mine", "/catalogue/search"):
        seen = await backend_sees(gw, path, cookie, headers=SPOOFED)
        assert seen["x-library-user-id"] == account.id
        assert seen["x-library-username"] == account.username
        assert seen["x-library-pass-number"] == account.pass_number
        assert seen["x-library-identity"] != SPOOFED["X-Library-Identity"]
        assert "x-library-role" not in seen


@pytest.mark.parametrize(
    "path", ["/catalogue/search", "/reservations/opening-hours", "/open/hours"]
)
async def test_spoofed_identity_headers_without_a_session_are_dropped(
    gw: Gateway, path: str
) -> None:
    assert await backend_sees(gw, path, None, headers=SPOOFED) == {}


async def test_the_session_cookie_never_reaches_the_backend(
    gw: Gateway, patron: tuple[Account, str]
) -> None:
    """Defends against a backend (or its logs) collecting replayable session cookies."""
    _, cookie = patron
    gw.session.cookie_jar.clear()
    resp = await gw.get(
        "/reservations/mine",
        headers={
            "Cookie": f"theme=dark; library_session={cookie}; basket=3",
        },
    )
    seen = received(await resp.json())
    assert seen["cookie"] == ["theme=dark; basket=3"]
    assert cookie not in json.dumps(
        await (await gw.get("/catalogue/", headers={"Cookie": f"library_session={cookie}"})).json()
    )


async def test_a_non_ascii_username_arrives_percent_encoded(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """Header values are bytes without a charset; the backend gets one unambiguous form."""
    account = await add_patron(pool, hasher, username=f"J\u00f6ns{unique_pass_number()}")
    await login(gw, account.username)
    seen = await backend_sees(gw, "/reservations/mine", jar_cookie(gw))
    assert seen["x-library-username"] == account.username.replace("\u00f6", "%C3%B6")


# --- The signed identity (JWT) ------------------------------------------------------------------


async def test_the_identity_token_verifies_against_the_published_keys(
    gw: Gateway, patron: tuple[Account, str]
) -> None:
    account, cookie = patron
    token = (await backend_sees(gw, "/reservations/mine", cookie))["x-library-identity"]
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA" and header["kid"]
    claims = await verify(gw, token, "reservations")
    assert claims["sub"] == account.id
    assert claims["iss"] == gw.app[app_keys.SETTINGS].public_url
    assert claims["aud"] == "reservations"
    assert 0 < claims["exp"] - claims["iat"] <= 300
    assert TOKEN_TTL <= 300
    assert claims["preferred_username"] == account.username
    assert claims["pass_number"] == account.pass_number


async def test_a_token_for_one_route_is_refused_by_another(
    gw: Gateway, patron: tuple[Account, str]
) -> None:
    """Defends against replaying a token a backend received at a different backend."""
    _, cookie = patron
    token = (await backend_sees(gw, "/reservations/mine", cookie))["x-library-identity"]
    with pytest.raises(jwt.InvalidAudienceError):
        await verify(gw, token, "catalogue")


def _with_claims(token: str, **changes: Any) -> str:
    head, body, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims.update(changes)
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{forged}.{signature}"


async def test_an_altered_token_fails_its_signature(
    gw: Gateway, patron: tuple[Account, str]
) -> None:
    """Defends against a client editing the claims of a token it got hold of."""
    _, cookie = patron
    token = (await backend_sees(gw, "/reservations/mine", cookie))["x-library-identity"]
    forged = _with_claims(token, sub="00000000-0000-0000-0000-000000000001")
    with pytest.raises(jwt.InvalidSignatureError):
        await verify(gw, forged, "reservations")


async def test_the_jwks_publishes_public_keys_only(
    gw: Gateway, patron: tuple[Account, str]
) -> None:
    resp = await gw.get("/.well-known/jwks.json")
    body = await resp.json()
    assert body["keys"]
    for key in body["keys"]:
        assert key["kid"] and key["use"] == "sig" and key["alg"] in {"EdDSA", "RS256", "ES256"}
        assert not {"d", "p", "q", "dp", "dq", "qi"} & key.keys()
    assert len((await published_keys(gw)).keys) == len(body["keys"])
    # The identity JWT's key is an Ed25519 one.
    _, cookie = patron
    token = (await backend_sees(gw, "/reservations/mine", cookie))["x-library-identity"]
    kid = jwt.get_unverified_header(token)["kid"]
    [identity_key] = [key for key in body["keys"] if key["kid"] == kid]
    assert identity_key["kty"] == "OKP" and identity_key["crv"] == "Ed25519"


async def test_tokens_are_reused_per_session_and_route_until_near_expiry(
    gw: Gateway, patron: tuple[Account, str], cookie_keys: MultiFernet
) -> None:
    account, cookie = patron
    first = (await backend_sees(gw, "/reservations/mine", cookie))["x-library-identity"]
    again = (await backend_sees(gw, "/reservations/other", cookie))["x-library-identity"]
    elsewhere = (await backend_sees(gw, "/catalogue/x", cookie))["x-library-identity"]
    assert first == again
    assert elsewhere != first
    # Ed25519 signatures are deterministic, so equal tokens within one second prove nothing
    # about the cache: ask the signer itself, half a minute and then four minutes on.
    services = gw.app[SERVICES]
    sid = open_cookie(cookie_keys, cookie)["session"]["sid"]
    identity = await services.registry.lookup(sid)
    assert identity is not None
    issued = jwt.decode(first, options={"verify_signature": False})["iat"]
    signer = services.authenticator.signer
    assert signer.token(identity, "reservations", now=issued + 30) == first
    renewed = signer.token(identity, "reservations", now=issued + TOKEN_TTL - 30)
    assert renewed != first
    assert jwt.decode(renewed, options={"verify_signature": False})["exp"] > issued + TOKEN_TTL
    assert (await verify(gw, elsewhere, "catalogue"))["sub"] == account.id
    # The same patron's second session gets its own token.
    gw.session.cookie_jar.clear()
    await login(gw, account.username)
    second = (await backend_sees(gw, "/reservations/mine", jar_cookie(gw)))["x-library-identity"]
    assert second != first
    assert (await verify(gw, second, "reservations"))["sub"] == account.id


async def test_after_a_key_rotation_new_tokens_use_the_new_key_and_old_ones_still_verify(
    gw: Gateway, patron: tuple[Account, str]
) -> None:
    """Backends caching the JWKS keep verifying tokens signed just before a rotation."""
    _, cookie = patron
    before = (await backend_sees(gw, "/reservations/mine", cookie))["x-library-identity"]
    old_kid = jwt.get_unverified_header(before)["kid"]
    new_kid = (await gw.app[SERVICES].keys.rotate())["identity", "EdDSA"]
    assert new_kid != old_kid
    after = (await backend_sees(gw, "/reservations/mine", cookie))["x-library-identity"]
    assert jwt.get_unverified_header(after)["kid"] == new_kid
    kids = {key.key_id for key in (await published_keys(gw)).keys}
    assert {old_kid, new_kid} <= kids
    assert (await verify(gw, before, "reservations"))["sub"] == (
        await verify(gw, after, "reservations")
    )["sub"]
