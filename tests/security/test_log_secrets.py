"""The log of a real `library-gateway run` at its most talkative (`GATEWAY_LOG_LEVEL=DEBUG`),
read from the attacker's side: someone who can read the log collector but nothing else must
not find a credential there (ASVS 7.1.1, 7.1.2; CWE-532). Every secret of a patron's day
passes through the process: a wrong and a right password, the session cookie and a backend's
own cookie, a bearer header and tokens in a query string, a password-reset token mailed and
used, and an OpenID Connect exchange (the code, the client secret in Basic and in the form,
the PKCE verifier, the access, refresh and ID tokens).
"""

from __future__ import annotations

import base64
import email
import email.policy
import hashlib
import json
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, quote_plus, urlencode, urlsplit

import aiohttp
import pytest
from pytest_aiohttp import AiohttpServer

from tests.gateway_processes import (
    PASSWORD,
    Gateway,
    Gateways,
    add_account,
    base_env,
    echo_app,
    http_client,
    log_in,
    new_cookie_keys,
    routes_file,
)
from tests.helpers import COOKIE, csrf_in, free_port

pytestmark = pytest.mark.slow

CLIENT_SECRET = "client-secret-" + secrets.token_hex(20)
CALLBACK = "https://online.example.nl/callback"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with http_client() as session:
        yield session


async def anonymous_form(http: aiohttp.ClientSession, url: str) -> tuple[str, str]:
    """The anonymous session cookie and the CSRF token a form page hands out."""
    async with http.get(url) as resp:
        assert resp.status == 200, url
        return resp.cookies[COOKIE].value, csrf_in(await resp.text())


async def test_no_secret_of_a_patrons_day_reaches_the_debug_log(
    tmp_path: Path, database_url: str, aiohttp_server: AiohttpServer, http: aiohttp.ClientSession
) -> None:
    backend = await aiohttp_server(echo_app())
    routes = routes_file(tmp_path, backend.port)
    (tmp_path / "clients.yaml").write_text(
        "clients:\n"
        "  - client_id: online-library\n"
        "    name: De Online Bibliotheek\n"
        f"    redirect_uris: [{CALLBACK}]\n"
        "    secret_env: LOG_TEST_CLIENT_SECRET\n",
        encoding="utf-8",
    )
    cookie_keys = new_cookie_keys()
    env = {
        **base_env(database_url, cookie_keys),
        "GATEWAY_LOG_LEVEL": "DEBUG",
        "LOG_TEST_CLIENT_SECRET": CLIENT_SECRET,
    }
    gateways = Gateways(http, tmp_path)
    try:
        gateway = await gateways.start(routes, env, admin_port=free_port())
        secrets_seen = await a_patrons_day(http, gateway, env, tmp_path)
    finally:
        await gateways.stop()

    written = json.dumps(gateway.logs)
    paths = {entry.get("path") for entry in gateway.logs if entry.get("message") == "request"}
    # The day was logged (so the log was there to leak into), each step by its path only.
    assert {"/auth/login", "/echo/shelf", "/auth/oidc/token", "/auth/reset-password"} <= paths
    leaked = [
        name
        for name, value in {**secrets_seen, "cookie keys": cookie_keys}.items()
        if value in written
    ]
    assert leaked == []


async def a_patrons_day(
    http: aiohttp.ClientSession, gateway: Gateway, env: dict[str, str], tmp_path: Path
) -> dict[str, str]:
    """Everything a patron and a connected library do in a day, through `gateway`; returns
    every secret that went by, by name."""
    _account_id, username = await add_account(env, tmp_path)
    wrong = "not-the-password-" + secrets.token_hex(6)
    assert (await log_in(http, gateway, username, wrong))[0] == 401
    status, cookie = await log_in(http, gateway, username)
    assert status == 303 and cookie is not None
    seen = {"password": PASSWORD, "wrong password": wrong, "session cookie": cookie}

    # A proxied request with everything a client may send along.
    seen |= {"backend cookie": "shelf-" + secrets.token_hex(8), "bearer": secrets.token_hex(12)}
    seen |= {"query token": secrets.token_hex(10), "query code": secrets.token_hex(10)}
    async with http.get(
        gateway.url + f"/echo/shelf?token={seen['query token']}&code={seen['query code']}",
        headers={
            "Cookie": f"{COOKIE}={cookie}; shelf={seen['backend cookie']}",
            "Authorization": f"Bearer {seen['bearer']}",
        },
    ) as resp:
        assert resp.status == 200

    seen |= await a_connected_librarys_exchange(http, gateway, cookie)

    # A forgotten password: the mailed link, opened and used.
    anonymous, token = await anonymous_form(http, gateway.url + "/auth/forgot-password")
    since = len(gateway.logs)
    async with http.post(
        gateway.url + "/auth/forgot-password",
        headers={"Cookie": f"{COOKIE}={anonymous}"},
        data={"csrf_token": token, "identifier": username},
    ) as resp:
        assert resp.status == 200
    await gateway.wait_for_log(
        lambda entry: entry["message"] == "mail written to the outbox folder", since
    )
    [mail_file] = (tmp_path / "gateway-0" / "outbox").glob("*.eml")
    mail = email.message_from_bytes(mail_file.read_bytes(), policy=email.policy.default)
    plain = mail.get_body(preferencelist=("plain",))
    assert isinstance(plain, email.message.EmailMessage)
    found = re.search(r"[?&]token=([^&\s]+)", plain.get_content())
    assert found is not None
    seen["reset token"] = reset = found.group(1)
    anonymous, token = await anonymous_form(
        http, gateway.url + "/auth/reset-password?token=" + reset
    )
    seen["new password"] = "a new page in the ledger " + secrets.token_hex(4)
    async with http.post(
        gateway.url + "/auth/reset-password",
        headers={"Cookie": f"{COOKIE}={anonymous}"},
        data={"csrf_token": token, "token": reset, "new_password": seen["new password"]},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303
    return seen


async def a_connected_librarys_exchange(
    http: aiohttp.ClientSession, gateway: Gateway, cookie: str
) -> dict[str, str]:
    """The code flow with PKCE, the tokens used and refreshed; returns its secrets."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    query = urlencode(
        {
            "response_type": "code",
            "client_id": "online-library",
            "redirect_uri": CALLBACK,
            "scope": "openid profile email offline_access",
            "state": "st-" + secrets.token_hex(4),
            "nonce": "n-" + secrets.token_hex(4),
            "code_challenge": challenge.rstrip(b"=").decode(),
            "code_challenge_method": "S256",
        }
    )
    async with http.get(
        gateway.url + "/auth/oidc/authorize?" + query,
        headers={"Cookie": f"{COOKIE}={cookie}"},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 302
        [code] = parse_qs(urlsplit(resp.headers["Location"]).query)["code"]
    basic = base64.b64encode(f"online-library:{quote_plus(CLIENT_SECRET)}".encode()).decode()
    async with http.post(
        gateway.url + "/auth/oidc/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": CALLBACK,
            "code_verifier": verifier,
        },
        headers={"Authorization": "Basic " + basic},
    ) as resp:
        assert resp.status == 200
        tokens = await resp.json()
    async with http.get(
        gateway.url + "/auth/oidc/userinfo",
        headers={"Authorization": "Bearer " + tokens["access_token"]},
    ) as resp:
        assert resp.status == 200
    async with http.post(
        gateway.url + "/auth/oidc/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": "online-library",
            "client_secret": CLIENT_SECRET,
        },
    ) as resp:
        assert resp.status == 200
        refreshed = await resp.json()
    return {
        "code": code,
        "PKCE verifier": verifier,
        "client secret": CLIENT_SECRET,
        "Basic credentials": basic,
        "access token": tokens["access_token"],
        "refresh token": tokens["refresh_token"],
        "ID token": tokens["id_token"],
        "refreshed access token": refreshed["access_token"],
        "refreshed refresh token": refreshed["refresh_token"],
    }
