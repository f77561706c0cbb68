"""The OpenID Connect provider, driven the way a relying party drives it: the browser's
redirects by hand, the back channel with plain HTTP. Tokens are verified with PyJWT against
the published JWKS, not with our own code. Clients nobody here wrote are in
test_oidc_clients.py.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any
from urllib.parse import parse_qs, quote_plus, urlencode, urlsplit

import asyncpg
import jwt
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestServer

from auth.credentials.passwords import PasswordHasher
from auth.oidc.grants import Grants
from auth.store.accounts import Account
from tests.helpers import (
    PASSWORD,
    Gateway,
    MakeGateway,
    add_patron,
    csrf_in,
    login,
    post_form,
    routes_for,
)

ISSUER = "http://127.0.0.1:8080"  # the test gateway's public URL (its settings' default)
SECRET = "s3cret-" + "x" * 40
WEB = "https://online.example.nl/callback"
PARTNER = "https://partner.example.org/cb"
OTHER_HOST = "https://elsewhere.example.com/cb"

CLIENTS = f"""\
clients:
  - client_id: online-library
    name: De Online Bibliotheek
    redirect_uris: [{WEB}]
    secret_env: OIDC_TEST_SECRET
    theme: {{name: De Online Bibliotheek, colour: "#e4003b", text_colour: "#ffffff"}}
  - client_id: app
    name: Bibliotheek App
    redirect_uris: [http://127.0.0.1:9/app]
  - client_id: partner
    name: Partner Library
    redirect_uris: [{PARTNER}]
    secret_env: OIDC_TEST_SECRET
    first_party: false
    subject: pairwise
  - client_id: elsewhere
    name: Elsewhere
    redirect_uris: [{OTHER_HOST}]
    secret_env: OIDC_TEST_SECRET
    subject: pairwise
  - client_id: edwards
    name: Ed Library
    redirect_uris: [https://ed.example.org/cb]
    secret_env: OIDC_TEST_SECRET
    id_token_signed_response_alg: EdDSA
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


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorize_url(client_id: str = "online-library", redirect_uri: str = WEB, **extra: str) -> str:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": "openid profile email library",
        "state": "st-" + secrets.token_hex(4),
        "nonce": "n-" + secrets.token_hex(4),
        **extra,
    }
    return "/auth/oidc/authorize?" + urlencode({k: v for k, v in params.items() if v != ""})


def answer(resp: ClientResponse) -> tuple[str, dict[str, str]]:
    """Where a redirect to the client goes, and its query parameters."""
    assert resp.status == 302, resp.status
    location = resp.headers["Location"]
    parts = urlsplit(location)
    return f"{parts.scheme}://{parts.netloc}{parts.path}", {
        k: v[0] for k, v in parse_qs(parts.query).items()
    }


async def code_for(gw: Gateway, url: str) -> dict[str, str]:
    resp = await gw.get(url, allow_redirects=False)
    _, params = answer(resp)
    return params


async def exchange(
    gw: Gateway,
    code: str,
    *,
    client_id: str = "online-library",
    redirect_uri: str = WEB,
    verifier: str | None = None,
    secret: str | None = SECRET,
    post_secret: bool = False,
) -> ClientResponse:
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    if verifier is not None:
        data["code_verifier"] = verifier
    headers = {}
    if secret is None or post_secret:
        data["client_id"] = client_id
        if secret is not None:
            data["client_secret"] = secret
    else:
        # RFC 6749 2.3.1: each part form-encoded, then Basic.
        pair = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    return await gw.post("/auth/oidc/token", data=data, headers=headers)


async def jwks(gw: Gateway) -> jwt.PyJWKSet:
    return jwt.PyJWKSet.from_dict(await (await gw.get("/.well-known/jwks.json")).json())


async def verified(gw: Gateway, token: str, audience: str) -> dict[str, Any]:
    header = jwt.get_unverified_header(token)
    key = (await jwks(gw))[header["kid"]]
    claims: dict[str, Any] = jwt.decode(
        token, key.key, algorithms=[header["alg"]], audience=audience, issuer=ISSUER
    )
    return claims


async def test_discovery_names_every_endpoint_under_the_issuer(gw: Gateway) -> None:
    doc = await (await gw.get("/.well-known/openid-configuration")).json()
    assert doc["issuer"] == ISSUER
    for name in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri"):
        assert doc[name].startswith(ISSUER + "/")
    assert doc["response_types_supported"] == ["code"]
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert "none" not in doc["id_token_signing_alg_values_supported"]
    assert doc["authorization_response_iss_parameter_supported"] is True


async def test_the_code_flow_gives_verifiable_tokens_and_userinfo(
    gw: Gateway, patron: Account
) -> None:
    assert (await login(gw, patron.username)).status == 303
    verifier, challenge = pkce()
    url = authorize_url(code_challenge=challenge, code_challenge_method="S256", nonce="n-1")
    resp = await gw.get(url, allow_redirects=False)
    target, params = answer(resp)
    assert target == WEB and params["iss"] == ISSUER and params["state"].startswith("st-")
    tokens_resp = await exchange(gw, params["code"], verifier=verifier)
    assert tokens_resp.status == 200
    assert tokens_resp.headers["Cache-Control"] == "no-store"
    tokens = await tokens_resp.json()
    assert tokens["token_type"] == "Bearer"
    id_token = await verified(gw, tokens["id_token"], "online-library")
    assert jwt.get_unverified_header(tokens["id_token"])["alg"] == "RS256"
    assert id_token["sub"] == patron.id and id_token["nonce"] == "n-1"
    assert id_token["preferred_username"] == patron.username
    assert id_token["pass_number"] == patron.pass_number
    assert isinstance(id_token["auth_time"], int) and id_token["sid"]
    assert jwt.get_unverified_header(tokens["access_token"])["typ"] == "at+jwt"
    info = await gw.get(
        "/auth/oidc/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert info.status == 200
    claims = await info.json()
    assert claims["sub"] == patron.id and claims["email"] == patron.email


async def test_a_client_may_ask_for_eddsa_id_tokens(gw: Gateway, patron: Account) -> None:
    await login(gw, patron.username)
    url = authorize_url("edwards", "https://ed.example.org/cb")
    params = await code_for(gw, url)
    resp = await exchange(
        gw, params["code"], client_id="edwards", redirect_uri="https://ed.example.org/cb"
    )
    token = (await resp.json())["id_token"]
    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"
    assert (await verified(gw, token, "edwards"))["sub"] == patron.id


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ({"client_id": "nobody"}, "not known"),
        ({"redirect_uri": "https://evil.example/cb"}, "not registered"),
        ({"redirect_uri": WEB + "/../evil"}, "not registered"),
        ({"redirect_uri": WEB + "?x=1"}, "not registered"),
        ({"redirect_uri": "https://online.example.nl/callback/"}, "not registered"),
    ],
)
async def test_an_unknown_client_or_redirect_uri_gets_our_page_never_a_redirect(
    gw: Gateway, query: dict[str, str], reason: str
) -> None:
    params = {"response_type": "code", "client_id": "online-library", "redirect_uri": WEB}
    params.update(query)
    resp = await gw.get(
        "/auth/oidc/authorize?" + urlencode({**params, "scope": "openid"}),
        allow_redirects=False,
        headers={"Accept-Language": "en"},
    )
    assert resp.status == 400 and "Location" not in resp.headers
    assert reason in await resp.text()


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"scope": "profile"}, "invalid_scope"),
        ({"code_challenge": "a" * 43, "code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": "short", "code_challenge_method": "S256"}, "invalid_request"),
        ({"request": "eyJ..."}, "request_not_supported"),
        ({"max_age": "-1"}, "invalid_request"),
    ],
)
async def test_other_mistakes_go_back_to_the_client_with_state_and_iss(
    gw: Gateway, extra: dict[str, str], error: str
) -> None:
    target, params = answer(
        await gw.get(authorize_url(state="keep-me", **extra), allow_redirects=False)
    )
    assert target == WEB
    assert params["error"] == error and params["state"] == "keep-me" and params["iss"] == ISSUER


async def test_a_public_client_must_use_pkce(gw: Gateway, patron: Account) -> None:
    await login(gw, patron.username)
    app_uri = "http://127.0.0.1:9/app"
    _, refused = answer(await gw.get(authorize_url("app", app_uri), allow_redirects=False))
    assert refused["error"] == "invalid_request"
    verifier, challenge = pkce()
    params = await code_for(
        gw, authorize_url("app", app_uri, code_challenge=challenge, code_challenge_method="S256")
    )
    wrong = await exchange(
        gw, params["code"], client_id="app", redirect_uri=app_uri, verifier=pkce()[0], secret=None
    )
    assert wrong.status == 400 and (await wrong.json())["error"] == "invalid_grant"
    params = await code_for(
        gw, authorize_url("app", app_uri, code_challenge=challenge, code_challenge_method="S256")
    )
    missing = await exchange(gw, params["code"], client_id="app", redirect_uri=app_uri, secret=None)
    assert (await missing.json())["error"] == "invalid_grant"
    params = await code_for(
        gw, authorize_url("app", app_uri, code_challenge=challenge, code_challenge_method="S256")
    )
    right = await exchange(
        gw, params["code"], client_id="app", redirect_uri=app_uri, verifier=verifier, secret=None
    )
    assert right.status == 200


async def test_a_replayed_code_fails_and_revokes_what_the_first_use_issued(
    gw: Gateway, patron: Account
) -> None:
    await login(gw, patron.username)
    params = await code_for(gw, authorize_url())
    first = await (await exchange(gw, params["code"])).json()
    bearer = {"Authorization": f"Bearer {first['access_token']}"}
    assert (await gw.get("/auth/oidc/userinfo", headers=bearer)).status == 200
    replay = await exchange(gw, params["code"])
    assert replay.status == 400 and (await replay.json())["error"] == "invalid_grant"
    assert replay.headers["Cache-Control"] == "no-store"
    revoked = await gw.get("/auth/oidc/userinfo", headers=bearer)
    assert revoked.status == 401 and "invalid_token" in revoked.headers["WWW-Authenticate"]


async def test_an_expired_code_fails(gw: Gateway, patron: Account, pool: asyncpg.Pool) -> None:
    await login(gw, patron.username)
    params = await code_for(gw, authorize_url())
    await pool.execute("UPDATE oidc_codes SET expires_at = now() - interval '1 second'")
    resp = await exchange(gw, params["code"])
    assert (await resp.json())["error"] == "invalid_grant"


async def test_a_code_is_bound_to_its_client_and_redirect_uri(gw: Gateway, patron: Account) -> None:
    await login(gw, patron.username)
    params = await code_for(gw, authorize_url())
    other = await exchange(gw, params["code"], client_id="elsewhere", redirect_uri=OTHER_HOST)
    assert (await other.json())["error"] == "invalid_grant"
    params = await code_for(gw, authorize_url())
    moved = await exchange(gw, params["code"], redirect_uri=WEB + "?x")
    assert (await moved.json())["error"] == "invalid_grant"


@pytest.mark.parametrize("how", ["basic", "post", "none"])
async def test_a_wrong_or_missing_secret_is_invalid_client_401(
    gw: Gateway, patron: Account, how: str
) -> None:
    await login(gw, patron.username)
    params = await code_for(gw, authorize_url())
    resp = await exchange(
        gw,
        params["code"],
        secret=None if how == "none" else SECRET + "x",
        post_secret=how == "post",
    )
    assert resp.status == 401 and (await resp.json())["error"] == "invalid_client"
    assert resp.headers["WWW-Authenticate"].startswith("Basic")
    assert resp.headers["Cache-Control"] == "no-store"


async def test_client_secret_post_works_too(gw: Gateway, patron: Account) -> None:
    await login(gw, patron.username)
    params = await code_for(gw, authorize_url())
    resp = await exchange(gw, params["code"], post_secret=True)
    assert resp.status == 200


async def test_prompt_none_without_a_session_is_login_required(gw: Gateway) -> None:
    target, params = answer(
        await gw.get(authorize_url(prompt="none", state="s1"), allow_redirects=False)
    )
    assert target == WEB and params == {
        "error": "login_required",
        "error_description": params["error_description"],
        "state": "s1",
        "iss": ISSUER,
    }


async def test_without_a_session_the_patron_logs_in_on_the_clients_page_then_returns(
    gw: Gateway, patron: Account
) -> None:
    url = authorize_url(theme="#000000", colour="#000000", name="Evil Corp")
    resp = await gw.get(url, allow_redirects=False, headers={"Accept-Language": "en"})
    assert resp.status == 302
    login_page = resp.headers["Location"]
    assert login_page.startswith("/auth/login?next=")
    page = await gw.get(login_page, headers={"Accept-Language": "en"})
    text = await page.text()
    assert "Log in to De Online Bibliotheek with your library account" in text
    assert "#e4003b" in text and "Evil Corp" not in text and "#000000" not in text
    assert "https://online.example.nl" in page.headers["Content-Security-Policy"]
    next_path = parse_qs(urlsplit(login_page).query)["next"][0]
    logged_in = await post_form(
        gw,
        "/auth/login",
        {
            "csrf_token": csrf_in(text),
            "username": patron.username,
            "password": PASSWORD,
            "next": next_path,
        },
    )
    assert logged_in.status == 303
    back = urlsplit(logged_in.headers["Location"])
    assert back.path == "/auth/oidc/authorize"
    assert parse_qs(back.query) == parse_qs(urlsplit(next_path).query)
    target, params = answer(await gw.get(next_path, allow_redirects=False))
    assert target == WEB and "code" in params


async def test_one_session_a_patron_logged_in_at_a_proxied_route_is_not_asked_again(
    gw: Gateway, patron: Account
) -> None:
    assert (await login(gw, patron.username, next="/reservations/mine")).status == 303
    target, params = answer(await gw.get(authorize_url(), allow_redirects=False))
    assert target == WEB and "code" in params


async def test_prompt_login_asks_for_the_password_even_with_a_session(
    gw: Gateway, patron: Account
) -> None:
    await login(gw, patron.username)
    resp = await gw.get(authorize_url(prompt="login"), allow_redirects=False)
    assert resp.headers["Location"].startswith("/auth/login?")
    next_path = parse_qs(urlsplit(resp.headers["Location"]).query)["next"][0]
    # Coming back without logging in again still asks for the login.
    again = await gw.get(next_path, allow_redirects=False)
    assert again.headers["Location"].startswith("/auth/login?")
    assert (await login(gw, patron.username, next=next_path)).status == 303
    _, params = answer(await gw.get(next_path, allow_redirects=False))
    assert "code" in params


async def test_a_third_party_client_asks_consent_once_and_deny_is_access_denied(
    gw: Gateway, patron: Account
) -> None:
    await login(gw, patron.username)
    page = await gw.get(authorize_url("partner", PARTNER), allow_redirects=False)
    assert page.status == 200
    text = await page.text()
    assert 'name="decision" value="allow"' in text and 'name="decision" value="deny"' in text
    denied = await post_form(
        gw, "/auth/oidc/consent", {"csrf_token": csrf_in(text), "decision": "deny"}
    )
    _, params = answer(denied)
    assert params["error"] == "access_denied" and params["iss"] == ISSUER
    page = await gw.get(authorize_url("partner", PARTNER), allow_redirects=False)
    allowed = await post_form(
        gw, "/auth/oidc/consent", {"csrf_token": csrf_in(await page.text()), "decision": "allow"}
    )
    _, params = answer(allowed)
    assert "code" in params
    # Remembered: the next time there is no question.
    _, params = answer(await gw.get(authorize_url("partner", PARTNER), allow_redirects=False))
    assert "code" in params


async def test_a_forged_consent_form_is_refused(gw: Gateway, patron: Account) -> None:
    await login(gw, patron.username)
    await gw.get(authorize_url("partner", PARTNER), allow_redirects=False)
    forged = await post_form(gw, "/auth/oidc/consent", {"csrf_token": "x", "decision": "allow"})
    assert forged.status == 403


async def test_pairwise_subjects_differ_between_hosts_and_stay_put_for_one(
    gw: Gateway, patron: Account
) -> None:
    await login(gw, patron.username)

    async def sub_at(client_id: str, uri: str) -> str:
        params = await code_for(gw, authorize_url(client_id, uri))
        tokens = await (
            await exchange(gw, params["code"], client_id=client_id, redirect_uri=uri)
        ).json()
        claims = await verified(gw, tokens["id_token"], client_id)
        info = await (
            await gw.get(
                "/auth/oidc/userinfo",
                headers={"Authorization": f"Bearer {tokens['access_token']}"},
            )
        ).json()
        assert info["sub"] == claims["sub"]
        return str(claims["sub"])

    elsewhere = await sub_at("elsewhere", OTHER_HOST)
    assert elsewhere != patron.id
    assert await sub_at("elsewhere", OTHER_HOST) == elsewhere
    assert await sub_at("online-library", WEB) == patron.id


async def test_userinfo_refuses_anything_but_our_access_tokens(
    gw: Gateway, patron: Account
) -> None:
    await login(gw, patron.username)
    params = await code_for(gw, authorize_url())
    tokens = await (await exchange(gw, params["code"])).json()
    for presented in (tokens["id_token"], "garbage", tokens["access_token"] + "x"):
        resp = await gw.get("/auth/oidc/userinfo", headers={"Authorization": f"Bearer {presented}"})
        assert resp.status == 401, presented
    assert (await gw.get("/auth/oidc/userinfo")).status == 401


async def test_a_logout_ends_what_the_tokens_can_do(gw: Gateway, patron: Account) -> None:
    await login(gw, patron.username)
    params = await code_for(gw, authorize_url())
    tokens = await (await exchange(gw, params["code"])).json()
    page = await gw.get("/auth/logout")
    await post_form(gw, "/auth/logout", {"csrf_token": csrf_in(await page.text())})
    resp = await gw.get(
        "/auth/oidc/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert resp.status == 401


async def test_without_a_clients_file_federation_is_off(
    make_gateway: MakeGateway, backend: TestServer
) -> None:
    gw = await make_gateway(routes_for(backend.port))
    for path in (
        "/.well-known/openid-configuration",
        "/auth/oidc/authorize",
        "/auth/oidc/userinfo",
    ):
        assert (await gw.get(path, allow_redirects=False)).status == 404
    assert (await gw.post("/auth/oidc/token", data={})).status == 404


async def test_housekeeping_drops_codes_and_token_records_a_day_past_their_end(
    gw: Gateway, patron: Account, pool: asyncpg.Pool
) -> None:
    await login(gw, patron.username)
    spent = await code_for(gw, authorize_url())
    await (await exchange(gw, spent["code"])).json()
    await code_for(gw, authorize_url())  # a fresh code, not yet used
    await pool.execute(
        "UPDATE oidc_codes SET expires_at = now() - interval '2 days' WHERE used_at IS NOT NULL"
    )
    await pool.execute("UPDATE oidc_tokens SET expires_at = now() - interval '2 days'")
    await Grants(pool).purge()
    assert await pool.fetchval("SELECT count(*) FROM oidc_codes WHERE used_at IS NOT NULL") == 0
    assert await pool.fetchval("SELECT count(*) FROM oidc_codes WHERE used_at IS NULL") >= 1
    assert await pool.fetchval("SELECT count(*) FROM oidc_tokens") == 0
