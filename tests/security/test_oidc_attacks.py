"""The OpenID Connect provider attacked the way a hostile client, a stolen token or a meddled
URL would, and checked against what the specifications ask of every provider (RFC 6749,
RFC 7009, OpenID Connect Core 1.0). Driven over real HTTP with a real PostgreSQL, as a
library's server and a patron's browser would."""

from __future__ import annotations

import base64
import json
import re
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import asyncpg
import jwt
import pytest
from aiohttp.test_utils import TestServer

from auth.credentials.passwords import PasswordHasher
from auth.oidc.provider import PROVIDER
from auth.store.accounts import Account
from tests.helpers import (
    Gateway,
    MakeGateway,
    add_patron,
    csrf_in,
    fetch,
    jar_cookie,
    login,
    post_form,
    routes_for,
)
from tests.test_oidc_provider import (
    CLIENTS,
    ISSUER,
    OTHER_HOST,
    PARTNER,
    SECRET,
    WEB,
    answer,
    authorize_url,
    code_for,
    exchange,
    patron,
)
from tests.test_oidc_refresh import basic, introspect, refresh, tokens_for, userinfo_status

__all__ = ["patron"]  # a fixture, imported to be used here

# A secret with the characters RFC 6749 2.3.1 form-encodes: a space becomes `+`.
SPACED_SECRET = "a secret with spaces + plus & amp " + "z" * 32
SPACED = """\
  - client_id: spaced
    name: Spaced
    redirect_uris: [https://spaced.example.org/cb]
    secret_env: OIDC_SPACED_SECRET
"""
# A third-party client registered by someone who means harm (or whose site was taken over).
HOSTILE_URI = "https://hostile.example.com/cb"
HOSTILE = f"""\
  - client_id: hostile
    name: Hostile Reader
    redirect_uris: [{HOSTILE_URI}]
    secret_env: OIDC_TEST_SECRET
    first_party: false
"""


@pytest.fixture
async def gw(
    make_gateway: MakeGateway, backend: TestServer, monkeypatch: pytest.MonkeyPatch
) -> Gateway:
    monkeypatch.setenv("OIDC_TEST_SECRET", SECRET)
    monkeypatch.setenv("OIDC_SPACED_SECRET", SPACED_SECRET)
    return await make_gateway(routes_for(backend.port), clients=CLIENTS + SPACED + HOSTILE)


def repeated(url: str, name: str, value: str) -> str:
    """`url` with `name` given a second time."""
    return f"{url}&{urlencode({name: value})}"


@pytest.mark.parametrize(
    ("name", "value"),
    [("scope", "openid"), ("state", "other"), ("prompt", "none"), ("nonce", "n2")],
)
async def test_a_parameter_given_twice_at_authorize_is_invalid_request(
    gw: Gateway, patron: Account, name: str, value: str
) -> None:
    """RFC 6749 3.1: parameters must not be included more than once; a provider that takes
    one of the copies lets whoever adds the second choose what the client did not ask."""
    await login(gw, patron.username)
    url = repeated(authorize_url(state="s1", nonce="n1", prompt="login"), name, value)
    target, params = answer(await gw.get(url, allow_redirects=False))
    assert target == WEB
    assert params["error"] == "invalid_request" and params["iss"] == ISSUER
    assert "code" not in params


@pytest.mark.parametrize(("name", "value"), [("client_id", "partner"), ("redirect_uri", PARTNER)])
async def test_a_client_or_redirect_uri_given_twice_gets_our_page(
    gw: Gateway, patron: Account, name: str, value: str
) -> None:
    await login(gw, patron.username)
    resp = await gw.get(repeated(authorize_url(), name, value), allow_redirects=False)
    assert resp.status == 400 and "Location" not in resp.headers


async def test_the_login_page_wears_no_clients_colours_for_a_request_naming_two(
    gw: Gateway,
) -> None:
    """A login page for `client_id=partner&...&client_id=online-library` must not show the
    trusted library's name while the request is another client's."""
    next_path = repeated(authorize_url("partner", PARTNER), "client_id", "online-library")
    page = await gw.get(
        "/auth/login?" + urlencode({"next": next_path}), headers={"Accept-Language": "en"}
    )
    text = await page.text()
    assert page.status == 200
    assert "De Online Bibliotheek" not in text and "Partner Library" not in text


async def test_revoking_a_refresh_token_under_the_access_token_hint_still_ends_its_grant(
    gw: Gateway, patron: Account
) -> None:
    """RFC 7009 2.1: a wrong hint widens the search, it never makes the revocation a no-op."""
    await login(gw, patron.username)
    tokens = await tokens_for(gw)
    resp = await gw.post(
        "/auth/oidc/revoke",
        data={"token": tokens["refresh_token"], "token_type_hint": "access_token"},
        headers=basic("online-library"),
    )
    assert resp.status == 200
    refused = await refresh(gw, tokens["refresh_token"])
    assert refused.status == 400 and (await refused.json())["error"] == "invalid_grant"
    assert await userinfo_status(gw, tokens["access_token"]) == 401


async def test_a_narrower_scope_on_refresh_narrows_the_access_token_not_the_grant(
    gw: Gateway, patron: Account
) -> None:
    """RFC 6749 6: the new refresh token's scope is identical to the presented one's."""
    await login(gw, patron.username)
    first = await tokens_for(gw, scope="openid profile email")
    narrow = await refresh(gw, first["refresh_token"], scope="openid")
    assert narrow.status == 200
    narrowed = await narrow.json()
    assert narrowed["scope"] == "openid"
    assert (await introspect(gw, narrowed["access_token"]))["scope"] == "openid"
    assert set((await introspect(gw, narrowed["refresh_token"]))["scope"].split()) == {
        "openid",
        "profile",
        "email",
    }
    whole = await refresh(gw, narrowed["refresh_token"], scope="openid profile email")
    assert whole.status == 200, await whole.text()
    assert set((await whole.json())["scope"].split()) == {"openid", "profile", "email"}


async def test_basic_credentials_are_form_decoded_so_a_plus_is_a_space(
    gw: Gateway, patron: Account
) -> None:
    """RFC 6749 2.3.1: client_id and secret are application/x-www-form-urlencoded before
    Basic; `+` is a space there (as node-oidc-provider reads it)."""
    await login(gw, patron.username)
    redirect = "https://spaced.example.org/cb"
    code = (await code_for(gw, authorize_url("spaced", redirect)))["code"]
    resp = await exchange(gw, code, client_id="spaced", redirect_uri=redirect, secret=SPACED_SECRET)
    assert resp.status == 200, await resp.text()
    # %20 for the space is the same secret; the raw `+` is a space, so a wrong secret.
    for encoded in (quote(SPACED_SECRET, safe=""), SPACED_SECRET.replace(" ", "+")):
        pair = f"spaced:{encoded}".encode()
        code = (await code_for(gw, authorize_url("spaced", redirect)))["code"]
        resp = await gw.post(
            "/auth/oidc/token",
            data={"grant_type": "authorization_code", "code": code, "redirect_uri": redirect},
            headers={"Authorization": "Basic " + base64.b64encode(pair).decode()},
        )
        expected = 200 if "%20" in encoded else 401
        assert resp.status == expected, encoded


@pytest.mark.parametrize(
    "path",
    ["/auth/oidc/authorize", "/auth/oidc/token", "/auth/oidc/revoke", "/auth/oidc/introspect"],
)
async def test_a_form_that_is_not_utf8_is_a_clean_400_never_a_500(gw: Gateway, path: str) -> None:
    resp = await gw.post(
        path,
        data=b"client_id=online-library&code=\xff\xfe&redirect_uri=x",
        headers={**basic("online-library"), "Content-Type": "application/x-www-form-urlencoded"},
        allow_redirects=False,
    )
    assert resp.status == 400 and "Location" not in resp.headers
    if path != "/auth/oidc/authorize":
        assert (await resp.json())["error"] == "invalid_request"


async def test_a_replayed_code_also_ends_the_tokens_its_refresh_token_bought(
    gw: Gateway, patron: Account
) -> None:
    """RFC 6749 4.1.2: a code used twice was stolen, so every token issued on it is revoked,
    also those minted since by refreshing, and also when its first access token was revoked
    on its own already."""
    await login(gw, patron.username)
    code = (await code_for(gw, authorize_url()))["code"]
    first = await (await exchange(gw, code)).json()
    revoked = await gw.post(
        "/auth/oidc/revoke", data={"token": first["access_token"]}, headers=basic("online-library")
    )
    assert revoked.status == 200
    second = await (await refresh(gw, first["refresh_token"])).json()
    assert await userinfo_status(gw, second["access_token"]) == 200
    replay = await exchange(gw, code)
    assert replay.status == 400 and (await replay.json())["error"] == "invalid_grant"
    assert await userinfo_status(gw, second["access_token"]) == 401
    assert (await introspect(gw, second["refresh_token"])) == {"active": False}
    assert (await refresh(gw, second["refresh_token"])).status == 400


async def test_userinfo_refuses_an_access_token_without_the_openid_scope(
    gw: Gateway, patron: Account
) -> None:
    """A refresh may narrow the scope down to one without `openid` (no ID token then); that
    access token is not an OpenID Connect one, and UserInfo answers it 403
    `insufficient_scope` (OIDC Core 5.3, RFC 6750 3.1; as Keycloak and node-oidc-provider)."""
    await login(gw, patron.username)
    first = await tokens_for(gw, scope="openid profile email")
    narrow = await refresh(gw, first["refresh_token"], scope="profile")
    assert narrow.status == 200
    tokens = await narrow.json()
    assert tokens["scope"] == "profile" and "id_token" not in tokens
    resp = await gw.get(
        "/auth/oidc/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert resp.status == 403 and resp.headers["Cache-Control"] == "no-store"
    assert 'error="insufficient_scope"' in resp.headers["WWW-Authenticate"]
    assert "preferred_username" not in await resp.text()


ERROR_DESCRIPTION = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")
"""RFC 6749 4.1.2.1 and 5.2: what an error_description may hold."""
HOSTILE_NAME = 'é"<b>x\\'


async def test_an_error_description_never_echoes_a_parameter_name_sent_twice(
    gw: Gateway, patron: Account
) -> None:
    """Names of repeated parameters are the sender's choice: echoed, they would break the
    charset RFC 6749 allows an error_description, and reach a client's error page as given."""
    body = urlencode(
        [
            ("grant_type", "authorization_code"),
            ("code", "c"),
            (HOSTILE_NAME, "1"),
            (HOSTILE_NAME, "2"),
        ]
    )
    for path in ("/auth/oidc/token", "/auth/oidc/revoke"):
        resp = await gw.post(
            path,
            data=body.encode(),
            headers={
                **basic("online-library"),
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        error = await resp.json()
        assert resp.status == 400 and error["error"] == "invalid_request"
        assert ERROR_DESCRIPTION.fullmatch(error["error_description"]), error
    await login(gw, patron.username)
    url = repeated(repeated(authorize_url(), HOSTILE_NAME, "1"), HOSTILE_NAME, "2")
    _, params = answer(await gw.get(url, allow_redirects=False))
    assert params["error"] == "invalid_request"
    assert ERROR_DESCRIPTION.fullmatch(params["error_description"]), params


async def test_a_missing_response_type_or_grant_type_is_invalid_request(
    gw: Gateway, patron: Account
) -> None:
    """RFC 6749 4.1.2.1 and 5.2: a missing required parameter is `invalid_request`; the
    `unsupported_*` errors are for values the provider does not serve."""
    await login(gw, patron.username)
    _, params = answer(await gw.get(authorize_url(response_type=""), allow_redirects=False))
    assert params["error"] == "invalid_request"
    _, params = answer(await gw.get(authorize_url(response_type="token"), allow_redirects=False))
    assert params["error"] == "unsupported_response_type"
    missing = await gw.post("/auth/oidc/token", data={"code": "c"}, headers=basic("online-library"))
    assert missing.status == 400 and (await missing.json())["error"] == "invalid_request"
    other = await gw.post(
        "/auth/oidc/token", data={"grant_type": "password"}, headers=basic("online-library")
    )
    assert other.status == 400 and (await other.json())["error"] == "unsupported_grant_type"


async def codes_of(pool: asyncpg.Pool, account: Account) -> list[str]:
    """The clients the patron's account was ever given a code for."""
    rows = await pool.fetch(
        "SELECT client_id FROM oidc_codes WHERE account_id = $1::uuid ORDER BY client_id",
        account.id,
    )
    return [row["client_id"] for row in rows]


async def consents_of(pool: asyncpg.Pool, account: Account) -> list[str]:
    rows = await pool.fetch(
        "SELECT client_id FROM oidc_consents WHERE account_id = $1::uuid", account.id
    )
    return [row["client_id"] for row in rows]


async def test_a_consent_page_cannot_answer_the_request_that_replaced_it(
    gw: Gateway, patron: Account, pool: asyncpg.Pool
) -> None:
    """The consent swap: the patron reads the partner's question; a hostile site sends the
    browser (a top-level navigation, so the session cookie rides along) to the hostile
    client's authorization, whose question becomes the session's pending one; the patron's
    "Allow" on the partner's page must not answer it."""
    await login(gw, patron.username)
    partner_page = await gw.get(authorize_url("partner", PARTNER), allow_redirects=False)
    assert partner_page.status == 200
    partner_token = csrf_in(await partner_page.text())
    hostile_page = await gw.get(authorize_url("hostile", HOSTILE_URI), allow_redirects=False)
    assert hostile_page.status == 200 and "Hostile Reader" in await hostile_page.text()
    swapped = await post_form(
        gw,
        "/auth/oidc/consent",
        {"csrf_token": partner_token, "decision": "allow"},
        headers={"Accept-Language": "en"},
    )
    # What a form answering a question that is gone gets: our page, nobody redirected.
    assert swapped.status == 400 and "Location" not in swapped.headers
    assert "This question has expired" in await swapped.text()
    assert await codes_of(pool, patron) == []
    assert await consents_of(pool, patron) == []
    for client_id, uri in (("hostile", HOSTILE_URI), ("partner", PARTNER)):
        _, params = answer(
            await gw.get(authorize_url(client_id, uri, prompt="none"), allow_redirects=False)
        )
        assert params["error"] == "consent_required", client_id


async def test_a_consent_page_answers_its_own_question_once(
    gw: Gateway, patron: Account, pool: asyncpg.Pool
) -> None:
    """Allow and deny still work from the page shown; the same page sent twice (a double
    click: both posts carry the cookie the page came with) grants once."""
    await login(gw, patron.username)
    page = await gw.get(authorize_url("hostile", HOSTILE_URI), allow_redirects=False)
    denied = await post_form(
        gw, "/auth/oidc/consent", {"csrf_token": csrf_in(await page.text()), "decision": "deny"}
    )
    target, params = answer(denied)
    assert target == HOSTILE_URI and params["error"] == "access_denied"
    page = await gw.get(authorize_url("partner", PARTNER), allow_redirects=False)
    fields = {"csrf_token": csrf_in(await page.text()), "decision": "allow"}
    cookie_of_the_page = jar_cookie(gw)
    target, params = answer(await post_form(gw, "/auth/oidc/consent", fields))
    assert target == PARTNER and "code" in params
    again = await post_form(gw, "/auth/oidc/consent", fields)
    assert again.status == 400 and "Location" not in again.headers
    replayed = await fetch(gw, "/auth/oidc/consent", cookie_of_the_page, method="POST", data=fields)
    assert replayed.status == 400 and "Location" not in replayed.headers
    assert await codes_of(pool, patron) == ["partner"]
    assert await consents_of(pool, patron) == ["partner"]


async def id_token_for(gw: Gateway, client_id: str = "online-library", uri: str = WEB) -> str:
    """An ID token of ours for the patron logged in, issued to `client_id`."""
    code = (await code_for(gw, authorize_url(client_id, uri)))["code"]
    resp = await exchange(gw, code, client_id=client_id, redirect_uri=uri)
    assert resp.status == 200, await resp.text()
    token: str = (await resp.json())["id_token"]
    return token


def hinted(client_id: str, uri: str, hint: str, **extra: str) -> str:
    return authorize_url(client_id, uri, id_token_hint=hint, **extra)


async def test_a_hint_naming_the_patron_logged_in_gets_a_code_under_prompt_none(
    gw: Gateway, patron: Account
) -> None:
    """`elsewhere` has pairwise subjects: the hint is compared in the client's own space."""
    await login(gw, patron.username)
    hint = await id_token_for(gw, "elsewhere", OTHER_HOST)
    assert jwt.decode(hint, options={"verify_signature": False})["sub"] != patron.id
    target, params = answer(
        await gw.get(hinted("elsewhere", OTHER_HOST, hint, prompt="none"), allow_redirects=False)
    )
    assert target == OTHER_HOST and "code" in params


async def test_a_hint_naming_another_patron_is_never_answered_for_the_one_logged_in(
    gw: Gateway, patron: Account, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """OIDC Core 3.1.2.1: with prompt=none `login_required`; otherwise the login page, and
    the request is answered for whoever then logs in (the client sees the `sub`)."""
    other = await add_patron(pool, hasher)
    await login(gw, other.username)
    hint = await id_token_for(gw, "elsewhere", OTHER_HOST)
    gw.session.cookie_jar.clear()
    await login(gw, patron.username)
    _, params = answer(
        await gw.get(hinted("elsewhere", OTHER_HOST, hint, prompt="none"), allow_redirects=False)
    )
    assert params["error"] == "login_required" and "code" not in params
    resp = await gw.get(hinted("elsewhere", OTHER_HOST, hint), allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"].startswith("/auth/login?")
    next_path = parse_qs(urlsplit(resp.headers["Location"]).query)["next"][0]
    # Back without logging in: asked again, never answered for the patron logged in.
    again = await gw.get(next_path, allow_redirects=False)
    assert again.headers["Location"].startswith("/auth/login?")
    assert (await login(gw, other.username, next=next_path)).status == 303
    _, params = answer(await gw.get(next_path, allow_redirects=False))
    tokens = await (
        await exchange(gw, params["code"], client_id="elsewhere", redirect_uri=OTHER_HOST)
    ).json()
    issued = jwt.decode(tokens["id_token"], options={"verify_signature": False})
    assert issued["sub"] == jwt.decode(hint, options={"verify_signature": False})["sub"]


def with_claims(token: str, **changed: object) -> str:
    """`token` with its payload changed and its signature kept (no longer valid)."""
    head, payload, signature = token.split(".")
    claims = json.loads(jwt.utils.base64url_decode(payload))
    claims.update(changed)
    forged = jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()
    return f"{head}.{forged}.{signature}"


async def test_a_hint_we_did_not_issue_to_this_client_is_invalid_request(
    gw: Gateway, patron: Account
) -> None:
    await login(gw, patron.username)
    own = await id_token_for(gw, "elsewhere", OTHER_HOST)
    another_clients = await id_token_for(gw)
    code = (await code_for(gw, authorize_url("elsewhere", OTHER_HOST)))["code"]
    access_token = (
        await (await exchange(gw, code, client_id="elsewhere", redirect_uri=OTHER_HOST)).json()
    )["access_token"]
    for name, hint in (
        ("another client's", another_clients),
        ("a changed sub", with_claims(own, sub="someone-else")),
        ("an access token", access_token),
        ("not a token", "not-a-token"),
    ):
        _, params = answer(
            await gw.get(
                hinted("elsewhere", OTHER_HOST, hint, prompt="none"), allow_redirects=False
            )
        )
        assert params["error"] == "invalid_request" and "code" not in params, name
    # Also with nobody logged in: the request is wrong before anyone is asked to log in.
    gw.session.cookie_jar.clear()
    _, params = answer(
        await gw.get(hinted("elsewhere", OTHER_HOST, another_clients), allow_redirects=False)
    )
    assert params["error"] == "invalid_request"


async def test_an_expired_hint_of_ours_is_still_a_hint(gw: Gateway, patron: Account) -> None:
    """OIDC Core 3.1.2.1: the OP need not check a hint's expiry. Made with the gateway's own
    key, as it would have made it five minutes before it expired."""
    await login(gw, patron.username)
    fresh = jwt.decode(
        await id_token_for(gw, "elsewhere", OTHER_HOST), options={"verify_signature": False}
    )
    signer = gw.app[PROVIDER].signer

    def expired(sub: str) -> str:
        return signer.id_token(
            client_id="elsewhere",
            sub=sub,
            alg="RS256",
            nonce=None,
            auth_time=fresh["auth_time"],
            sid=fresh["sid"],
            claims={},
            ttl=-60,
        )

    _, params = answer(
        await gw.get(
            hinted("elsewhere", OTHER_HOST, expired(fresh["sub"]), prompt="none"),
            allow_redirects=False,
        )
    )
    assert "code" in params
    _, params = answer(
        await gw.get(
            hinted("elsewhere", OTHER_HOST, expired("someone-else"), prompt="none"),
            allow_redirects=False,
        )
    )
    assert params["error"] == "login_required"


async def test_an_access_token_narrowed_without_offline_access_ends_with_the_session(
    gw: Gateway, patron: Account
) -> None:
    """`offline_access` is what lets a token outlive the patron's session: an access token
    whose scope was narrowed to leave it out ends with the session, as one never granted it
    does, while the grant itself (the refresh token's whole scope) stays offline."""
    await login(gw, patron.username)
    first = await tokens_for(gw, scope="openid profile offline_access")
    narrow = await refresh(gw, first["refresh_token"], scope="openid profile")
    assert narrow.status == 200
    narrowed = await narrow.json()
    assert narrowed["scope"] == "openid profile"
    assert await userinfo_status(gw, narrowed["access_token"]) == 200
    page = await gw.get("/auth/logout")
    await post_form(gw, "/auth/logout", {"csrf_token": csrf_in(await page.text())})
    assert await userinfo_status(gw, narrowed["access_token"]) == 401
    assert await introspect(gw, narrowed["access_token"]) == {"active": False}
    # Without the session, only an offline access token can be had; asking for another is
    # refused without spending the refresh token or ending the grant.
    online = await refresh(gw, narrowed["refresh_token"], scope="openid profile")
    assert online.status == 400 and (await online.json())["error"] == "invalid_grant"
    offline = await refresh(gw, narrowed["refresh_token"])
    assert offline.status == 200, await offline.text()
    tokens = await offline.json()
    assert "offline_access" in tokens["scope"].split()
    assert await userinfo_status(gw, tokens["access_token"]) == 200
