"""RP-initiated logout: a connected library sends the patron to the end-session endpoint.

With a valid hint for the current session the patron is logged out at once; without one
they are asked, with a CSRF-protected form, so a link on any site cannot log anyone out. A
redirect afterwards goes only to a registered post_logout_redirect_uri.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlsplit

import asyncpg
import jwt
import pytest
from aiohttp.test_utils import TestServer

from auth.credentials.passwords import PasswordHasher
from auth.oidc.provider import PROVIDER
from auth.store.accounts import Account
from tests.helpers import Gateway, MakeGateway, add_patron, csrf_in, login, post_form, routes_for
from tests.test_oidc_provider import SECRET, WEB, authorize_url, code_for, exchange

AFTER = "https://online.example.nl/goodbye"
CLIENTS = f"""\
clients:
  - client_id: online-library
    name: De Online Bibliotheek
    redirect_uris: [{WEB}]
    post_logout_redirect_uris: [{AFTER}]
    secret_env: OIDC_TEST_SECRET
  - client_id: partner
    name: Partner Library
    redirect_uris: [https://partner.example.org/cb]
    post_logout_redirect_uris: [https://partner.example.org/bye]
    secret_env: OIDC_TEST_SECRET
"""


@pytest.fixture
async def gw(
    make_gateway: MakeGateway, backend: TestServer, monkeypatch: pytest.MonkeyPatch
) -> Gateway:
    monkeypatch.setenv("OIDC_TEST_SECRET", SECRET)
    return await make_gateway(routes_for(backend.port), clients=CLIENTS)


@pytest.fixture
async def patron(pool: asyncpg.Pool, hasher: PasswordHasher) -> Account:
    return await add_patron(pool, hasher)


async def id_token(gw: Gateway) -> str:
    params = await code_for(gw, authorize_url())
    token: str = (await (await exchange(gw, params["code"])).json())["id_token"]
    return token


async def logged_in(gw: Gateway) -> bool:
    """Whether the browser's session still logs it in at a client without a form."""
    resp = await gw.get(authorize_url(prompt="none"), allow_redirects=False)
    query = parse_qs(urlsplit(resp.headers["Location"]).query)
    return "code" in query


def logout_url(**params: str) -> str:
    return "/auth/oidc/logout?" + urlencode(params)


async def test_discovery_names_the_logout_revocation_and_introspection_endpoints(
    gw: Gateway,
) -> None:
    doc = await (await gw.get("/.well-known/openid-configuration")).json()
    assert doc["end_session_endpoint"] == "http://127.0.0.1:8080/auth/oidc/logout"
    assert doc["revocation_endpoint"].endswith("/auth/oidc/revoke")
    assert doc["introspection_endpoint"].endswith("/auth/oidc/introspect")
    assert doc["backchannel_logout_supported"] is True
    assert doc["backchannel_logout_session_supported"] is True
    assert "refresh_token" in doc["grant_types_supported"]


async def test_a_hint_for_this_session_logs_out_at_once_and_returns_with_state(
    gw: Gateway, patron: Account, pool: asyncpg.Pool
) -> None:
    await login(gw, patron.username)
    hint = await id_token(gw)
    resp = await gw.get(
        logout_url(id_token_hint=hint, post_logout_redirect_uri=AFTER, state="bye-1"),
        allow_redirects=False,
    )
    assert resp.status == 303
    assert resp.headers["Location"] == AFTER + "?state=bye-1"
    assert not await logged_in(gw)
    # The library the session signed in to is told (delivered by the back-channel worker).
    queued = await pool.fetchval(
        "SELECT count(*) FROM backchannel_logouts WHERE client_id = 'online-library' AND sub = $1",
        patron.id,
    )
    assert queued == 1


async def test_without_a_hint_the_patron_is_asked_and_a_forged_answer_fails(
    gw: Gateway, patron: Account
) -> None:
    await login(gw, patron.username)
    page = await gw.get(
        logout_url(client_id="online-library", post_logout_redirect_uri=AFTER, state="s2"),
        headers={"Accept-Language": "en"},
    )
    assert page.status == 200
    text = await page.text()
    assert "De Online Bibliotheek asks you to log out." in text
    assert await logged_in(gw)  # asking ended nothing
    forged = await post_form(gw, "/auth/oidc/logout", {"decision": "logout"})
    assert forged.status == 403 and await logged_in(gw)
    resp = await post_form(
        gw, "/auth/oidc/logout", {"decision": "logout", "csrf_token": csrf_in(text)}
    )
    assert resp.status == 303 and resp.headers["Location"] == AFTER + "?state=s2"
    assert not await logged_in(gw)


async def test_the_patron_may_stay_logged_in(gw: Gateway, patron: Account) -> None:
    await login(gw, patron.username)
    page = await gw.get(logout_url(client_id="online-library"))
    resp = await post_form(
        gw, "/auth/oidc/logout", {"decision": "stay", "csrf_token": csrf_in(await page.text())}
    )
    assert resp.status == 303 and resp.headers["Location"] == "/auth/account"
    assert await logged_in(gw)


@pytest.mark.parametrize(
    "params",
    [
        {"client_id": "online-library", "post_logout_redirect_uri": "https://evil.example/"},
        {"post_logout_redirect_uri": AFTER},  # no client named: nothing to check it against
        {"client_id": "partner", "post_logout_redirect_uri": AFTER},  # another client's
        {"client_id": "nobody"},
        {"id_token_hint": "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."},
    ],
)
async def test_a_request_we_cannot_check_gets_our_page_and_ends_nothing(
    gw: Gateway, patron: Account, params: dict[str, str]
) -> None:
    await login(gw, patron.username)
    resp = await gw.get(logout_url(**params), allow_redirects=False)
    assert resp.status == 400 and "Location" not in resp.headers
    assert await logged_in(gw)


async def test_a_hint_and_a_client_that_disagree_are_refused(gw: Gateway, patron: Account) -> None:
    await login(gw, patron.username)
    hint = await id_token(gw)  # issued to online-library
    resp = await gw.get(logout_url(id_token_hint=hint, client_id="partner"), allow_redirects=False)
    assert resp.status == 400 and await logged_in(gw)


async def test_a_tampered_hint_is_refused(gw: Gateway, patron: Account) -> None:
    await login(gw, patron.username)
    head, payload, signature = (await id_token(gw)).split(".")
    claims = jwt.utils.base64url_decode(payload)
    forged_payload = jwt.utils.base64url_encode(claims.replace(b'"aud"', b'"aux"')).decode()
    resp = await gw.get(
        logout_url(id_token_hint=f"{head}.{forged_payload}.{signature}"), allow_redirects=False
    )
    assert resp.status == 400 and await logged_in(gw)


async def test_a_hint_from_another_session_asks_first(gw: Gateway, patron: Account) -> None:
    await login(gw, patron.username)
    old_hint = await id_token(gw)
    gw.session.cookie_jar.clear()
    await login(gw, patron.username)  # a new session in this browser
    resp = await gw.get(logout_url(id_token_hint=old_hint), allow_redirects=False)
    assert resp.status == 200 and "csrf_token" in await resp.text()
    assert await logged_in(gw)


async def test_without_a_session_the_patron_is_sent_on(gw: Gateway) -> None:
    resp = await gw.get(
        logout_url(client_id="online-library", post_logout_redirect_uri=AFTER),
        allow_redirects=False,
    )
    assert resp.status == 303 and resp.headers["Location"] == AFTER
    done = await gw.get(logout_url(), headers={"Accept-Language": "en"})
    assert done.status == 200 and "You are logged out" in await done.text()


async def test_an_expired_hint_still_names_the_session(gw: Gateway, patron: Account) -> None:
    """RP-Initiated Logout 1.0 section 2: the OP should accept an expired ID token as a hint.
    The hint is made here with the gateway's own key, as the gateway would have made it
    five minutes before it expired."""
    await login(gw, patron.username)
    fresh = jwt.decode(await id_token(gw), options={"verify_signature": False})
    signer = gw.app[PROVIDER].signer
    expired = signer.id_token(
        client_id="online-library",
        sub=fresh["sub"],
        alg="RS256",
        nonce=None,
        auth_time=fresh["auth_time"],
        sid=fresh["sid"],
        claims={},
        ttl=-60,
    )
    resp = await gw.get(
        logout_url(id_token_hint=expired), headers={"Accept-Language": "en"}, allow_redirects=False
    )
    assert resp.status == 200 and "You are logged out" in await resp.text()
    assert not await logged_in(gw)
