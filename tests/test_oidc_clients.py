"""The OpenID Connect provider, proven by relying parties nobody here wrote, both OpenID
Certified: panva's openid-client (Node.js) and Apache httpd's mod_auth_openidc (Debian's
packages). Each one checks what it is given its own way (the ID token's signature against
the JWKS, iss, aud, nonce, the answer's state and iss), so a provider that gets any of it
wrong fails here even where our own tests, which read our code's intent, would not. What
openid-client leaves unchecked (at_hash), the test checks.

A real `library-gateway run` with a clients.yaml, a real PostgreSQL, patrons made with
`library-gateway accounts add`; the browser's part (following redirects, the login form) is
an aiohttp session with its own cookie jar. Nothing is skipped: a missing npm, apache2 or
mod_auth_openidc fails the test with how to install it (tests/system_packages.py).
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import hashlib
import html
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from yarl import URL

from tests import npm, system_packages
from tests.helpers import cli, free_port, link_in, plain_text, received, wait_for_port

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent / "oidc_clients"
RELYING_PARTY = HERE / "relying_party.mjs"
APACHE_CONF = HERE / "apache.conf"
# Exact versions, openid-client's dependencies too: a new release must not change the test on
# its own. Raise them on purpose.
OPENID_CLIENT = {"openid-client": "6.9.1", "jose": "6.2.18", "oauth4webapi": "3.8.9"}
OPENID_CLIENT_PREFIX = npm.CACHE / "openid-client"
PASSWORD = "a long shelf of atlases by the window"
STARTUP = 60.0
"""Seconds a process may take to listen or to finish a step; not a timing claim, a bound."""
# Never contacted: the test hands the redirect to the relying party itself.
NODE_CALLBACK = "http://127.0.0.1:9/node/callback"
# What a browser asks for; mod_auth_openidc tells browsers (redirect to log in) from scripts
# (401) by it.
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')
_ACTION = re.compile(r'<form method="post" action="([^"]*)"')


@dataclass(frozen=True)
class Client:
    """A client in the gateway's clients.yaml, and how its relying party authenticates."""

    client_id: str
    redirect_uri: str
    auth: str  # client_secret_basic, client_secret_post or none (a public client)
    secret: str | None = field(default=None, repr=False)
    backchannel_logout_uri: str | None = None

    def yaml(self) -> str:
        secret_env = f"\n    secret_env: {self.secret_env}" if self.secret else ""
        if self.backchannel_logout_uri is not None:
            secret_env += f"\n    backchannel_logout_uri: {self.backchannel_logout_uri}"
        return (
            f"  - client_id: {self.client_id}\n"
            f"    name: {self.client_id.title()} Library\n"
            f"    redirect_uris: [{self.redirect_uri}]{secret_env}\n"
            f'    theme: {{name: {self.client_id.title()} Library, colour: "#006400",'
            ' text_colour: "#ffffff"}\n'
        )

    @property
    def secret_env(self) -> str:
        return "RP_SECRET_" + re.sub(r"\W", "_", self.client_id).upper()


def _secret() -> str:
    return secrets.token_urlsafe(32)


NODE_CLIENTS = [
    Client("node-basic", NODE_CALLBACK, "client_secret_basic", _secret()),
    Client("node-post", NODE_CALLBACK, "client_secret_post", _secret()),
    Client("node-public", NODE_CALLBACK, "none"),
]


@dataclass
class Provider:
    """The running gateway: its issuer, and the environment its command line needs."""

    issuer: str
    env: dict[str, str]
    data_dir: Path


@dataclass(frozen=True)
class Patron:
    account_id: str
    username: str
    email: str


@pytest.fixture(scope="module")
def apache_ports() -> tuple[int, int]:
    """The ports of the two applications behind Apache, known before the gateway starts:
    their redirect URIs are in its clients.yaml."""
    return free_port(), free_port()


@pytest.fixture(scope="module")
def apache_clients(apache_ports: tuple[int, int]) -> tuple[Client, Client]:
    # mod_auth_openidc takes back-channel logouts at its redirect URI (`?logout=backchannel`).
    first, second = (
        Client(
            f"apache-{name}",
            f"http://127.0.0.1:{port}/protected/callback",
            "client_secret_basic",
            _secret(),
            f"http://127.0.0.1:{port}/protected/callback?logout=backchannel",
        )
        for name, port in zip("ab", apache_ports, strict=True)
    )
    return first, second


@pytest.fixture(scope="module")
def provider(
    database_url: str,
    apache_clients: tuple[Client, Client],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Provider]:
    """`library-gateway run --clients clients.yaml`, as an operator runs it."""
    folder = tmp_path_factory.mktemp("provider")
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    clients = [*NODE_CLIENTS, *apache_clients]
    (folder / "routes.yaml").write_text(
        "routes:\n  - name: shelf\n    prefix: /shelf\n    backend: http://127.0.0.1:9\n"
        "    auth: required\n",
        encoding="utf-8",
    )
    (folder / "clients.yaml").write_text(
        "clients:\n" + "".join(client.yaml() for client in clients), encoding="utf-8"
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("GATEWAY_")}
    env.update(
        GATEWAY_DATABASE_URL=database_url,
        GATEWAY_PUBLIC_URL=issuer,
        **{client.secret_env: client.secret for client in clients if client.secret},
    )
    log = folder / "gateway.log"
    with (
        open(log, "wb") as out,
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway",
                "run",
                "--routes",
                str(folder / "routes.yaml"),
                "--clients",
                str(folder / "clients.yaml"),
                "--port",
                str(port),
                "--admin-port",
                "0",
                "--data-dir",
                str(folder / "data"),
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        ) as process,
    ):
        try:
            wait_for_port(process, port, deadline=STARTUP, log=log)
            yield Provider(issuer, env, folder / "data")
        finally:
            _stop(process)


def _stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STARTUP)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def patron(provider: Provider) -> Patron:
    """A patron created the way an operator creates one."""
    number = str(10**8 + secrets.randbelow(9 * 10**8))
    username, email = f"reader.{number}", f"reader.{number}@example.org"
    done = cli(
        "accounts",
        "add",
        "--pass-number",
        number,
        "--email",
        email,
        "--username",
        username,
        "--password-stdin",
        "--data-dir",
        str(provider.data_dir),
        stdin=PASSWORD + "\n",
        env=provider.env,
    )
    assert done.returncode == 0, done.stderr
    found = re.match(r"account (\S+) created", done.stdout)
    assert found is not None, done.stdout
    return Patron(found.group(1), username, email)


@pytest.fixture
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    """One patron's browser: its own cookie jar, which keeps cookies of IP-address hosts.

    Unlike a browser it keeps a cookie deleted with `Expires` at the epoch (aiohttp 3.14,
    aio-libs/aiohttp#13692): mod_auth_openidc deletes its state cookies that way, and when an
    emptied one comes back it logs, harmlessly, that it cannot decode it."""
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True), headers={"Accept": BROWSER_ACCEPT}
    ) as session:
        yield session


# --- the browser's part -----------------------------------------------------------------------


@dataclass
class Arrival:
    """Where following the redirects from a URL ended, and what was on the way."""

    url: URL
    status: int
    body: str
    visited: list[URL]
    login_forms: int


async def browse(
    browser: aiohttp.ClientSession,
    url: str,
    *,
    patron: Patron | None = None,
    stop_at: str | None = None,
) -> Arrival:
    """Follow redirects from `url` as a browser does, filling in the gateway's login form with
    the patron's name and password when it is shown (failing when no patron was given). Ends at
    the first answer that is not a redirect or a login form, or, not requesting it, at the
    first URL that starts with `stop_at` (a relying party's redirect URI)."""
    at, visited, login_forms = URL(url), [], 0
    for _ in range(20):
        visited.append(at)
        if stop_at is not None and str(at).startswith(stop_at):
            return Arrival(at, 0, "", visited, login_forms)
        async with browser.get(at, allow_redirects=False) as resp:
            body = await resp.text()
            if resp.status in (301, 302, 303, 307):
                at = at.join(URL(resp.headers["Location"]))
                continue
            action = _ACTION.search(body)
            if resp.status != 200 or at.path != "/auth/login" or action is None:
                return Arrival(at, resp.status, body, visited, login_forms)
        assert patron is not None, f"the gateway asked for a login at {at}"
        login_forms += 1
        fields = {name: html.unescape(value) for name, value in _HIDDEN.findall(body)}
        fields.update(username=patron.username, password=PASSWORD)
        async with browser.post(
            at.join(URL(html.unescape(action.group(1)))), data=fields, allow_redirects=False
        ) as resp:
            assert resp.status == 303, f"the login answered {resp.status}: {await resp.text()}"
            at = at.join(URL(resp.headers["Location"]))
    raise AssertionError("more than 20 redirects:\n" + "\n".join(map(str, visited)))


def authorize_requests(arrival: Arrival, provider: Provider) -> list[dict[str, str]]:
    """The queries of the requests to the gateway's authorization endpoint on the way."""
    return [
        dict(url.query)
        for url in arrival.visited
        if str(url).startswith(provider.issuer + "/") and url.path == "/auth/oidc/authorize"
    ]


# --- openid-client --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def openid_client() -> Path:
    """The npm prefix openid-client is installed under (once, into .cache/)."""
    system_packages.require("npm")  # and with it Node.js, which runs the relying party
    return npm.install(OPENID_CLIENT_PREFIX, OPENID_CLIENT)


@dataclass
class Step:
    code: int
    out: dict[str, Any]
    err: str


async def relying_party(
    step: str, client: Client, provider: Provider, prefix: Path, given: object = None
) -> Step:
    """One step of tests/oidc_clients/relying_party.mjs, as its own Node.js process."""
    node = shutil.which("node")
    assert node is not None, "npm is installed but node is not on PATH"
    env = {
        **os.environ,
        "OPENID_CLIENT_PREFIX": str(prefix),
        "OIDC_ISSUER": provider.issuer,
        "OIDC_CLIENT_ID": client.client_id,
        "OIDC_CLIENT_AUTH": client.auth,
        "OIDC_REDIRECT_URI": client.redirect_uri,
        "OIDC_SCOPE": "openid profile email",
    }
    if client.secret:
        env["OIDC_CLIENT_SECRET"] = client.secret
    process = await asyncio.create_subprocess_exec(
        node,
        str(RELYING_PARTY),
        step,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(STARTUP):
            out, err = await process.communicate(json.dumps(given).encode())
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    text = err.decode("utf-8", "replace")
    try:
        answer = json.loads(out)
    except ValueError:
        raise AssertionError(f"{step} printed no JSON ({process.returncode}):\n{text}") from None
    return Step(process.returncode, answer, text)


async def authorization(
    client: Client, provider: Provider, prefix: Path
) -> tuple[str, dict[str, str]]:
    """The authorization URL openid-client builds, and the checks its callback must pass."""
    step = await relying_party("authorize", client, provider, prefix)
    assert step.code == 0, step.err
    return step.out["url"], step.out["checks"]


def at_hash(access_token: str) -> str:
    """An ID token's at_hash for this access token, signed RS256 (OpenID Connect Core 3.1.3.6)."""
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode("ascii")


@pytest.mark.parametrize("client", NODE_CLIENTS, ids=[c.auth for c in NODE_CLIENTS])
async def test_openid_client_logs_a_patron_in_and_reads_their_claims(
    client: Client,
    provider: Provider,
    patron: Patron,
    openid_client: Path,
    browser: aiohttp.ClientSession,
) -> None:
    url, checks = await authorization(client, provider, openid_client)
    query = URL(url).query
    assert url.startswith(provider.issuer + "/auth/oidc/authorize?")
    assert query["code_challenge_method"] == "S256"
    assert query["state"] == checks["state"] and query["nonce"] == checks["nonce"]

    arrival = await browse(browser, url, patron=patron, stop_at=client.redirect_uri)
    assert arrival.login_forms == 1

    step = await relying_party(
        "callback",
        client,
        provider,
        openid_client,
        {"callback": str(arrival.url), "checks": checks},
    )
    assert step.code == 0, step.out.get("refused") or step.err
    claims, userinfo = step.out["id_token"], step.out["userinfo"]
    assert step.out["id_token_header"]["alg"] == "RS256"
    assert claims["iss"] == provider.issuer
    assert claims["aud"] in (client.client_id, [client.client_id])
    assert claims["sub"] == patron.account_id
    assert claims["nonce"] == checks["nonce"]
    assert claims["at_hash"] == at_hash(step.out["access_token"])
    assert step.out["token_type"].lower() == "bearer"
    assert userinfo["sub"] == patron.account_id
    assert userinfo["preferred_username"] == patron.username
    assert userinfo["email"] == patron.email
    assert isinstance(userinfo["email_verified"], bool)


@pytest.mark.parametrize("parameter", ["state", "iss"])
async def test_openid_client_refuses_a_callback_that_was_tampered_with(
    parameter: str,
    provider: Provider,
    patron: Patron,
    openid_client: Path,
    browser: aiohttp.ClientSession,
) -> None:
    client = NODE_CLIENTS[0]
    url, checks = await authorization(client, provider, openid_client)
    arrival = await browse(browser, url, patron=patron, stop_at=client.redirect_uri)
    assert arrival.url.query[parameter]  # the gateway sent it
    forged = arrival.url.update_query({parameter: "forged-" + secrets.token_hex(8)})

    step = await relying_party(
        "callback", client, provider, openid_client, {"callback": str(forged), "checks": checks}
    )
    assert step.code == 3, step.out
    refused = step.out["refused"]
    assert refused["code"] == "OAUTH_INVALID_RESPONSE", refused
    assert f'unexpected "{parameter}"' in refused["cause"], refused

    # Refused before the code was spent: the client checked, the gateway was never asked.
    step = await relying_party(
        "callback",
        client,
        provider,
        openid_client,
        {"callback": str(arrival.url), "checks": checks},
    )
    assert step.code == 0, step.out.get("refused") or step.err
    assert step.out["id_token"]["sub"] == patron.account_id


# --- mod_auth_openidc -------------------------------------------------------------------------


@dataclass
class Applications:
    """Two applications behind Apache, each a client of the gateway of its own."""

    urls: tuple[str, str]
    error_log: Path


@pytest.fixture
def apache(
    provider: Provider,
    apache_ports: tuple[int, int],
    apache_clients: tuple[Client, Client],
    backend: TestServer,
    tmp_path: Path,
) -> Iterator[Applications]:
    """Apache httpd with mod_auth_openidc in the foreground, on tests/oidc_clients/apache.conf
    (and nothing of /etc/apache2), both applications proxied to the echo backend."""
    system_packages.require("apache2")
    system_packages.require("libapache2-mod-auth-openidc")
    root = tmp_path / "apache"
    root.mkdir()
    first, second = apache_clients
    env = {
        **os.environ,
        "RP_ROOT": str(root),
        "RP_PORT_A": str(apache_ports[0]),
        "RP_PORT_B": str(apache_ports[1]),
        "RP_CLIENT_A": first.client_id,
        "RP_SECRET_A": first.secret or "",
        "RP_CLIENT_B": second.client_id,
        "RP_SECRET_B": second.secret or "",
        "RP_BACKEND": f"http://127.0.0.1:{backend.port}",
        "RP_PASSPHRASE": secrets.token_urlsafe(32),
        "OIDC_METADATA_URL": provider.issuer + "/.well-known/openid-configuration",
    }
    log = root / "error.log"
    with subprocess.Popen(
        [system_packages.APACHE, "-f", str(APACHE_CONF), "-D", "FOREGROUND"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as process:
        try:
            for port in apache_ports:
                wait_for_port(process, port, deadline=STARTUP, log=log)
            first_url, second_url = (f"http://127.0.0.1:{port}/protected/" for port in apache_ports)
            yield Applications((first_url, second_url), log)
        finally:
            _stop(process)


def told(arrival: Arrival, apache: Applications) -> dict[str, str]:
    """What the application behind mod_auth_openidc was told about its user."""
    assert arrival.status == 200, (
        f"{arrival.url}: {arrival.status}\n{arrival.body}\n"
        + apache.error_log.read_text(errors="replace")[-4000:]
    )
    headers = received(json.loads(arrival.body))
    return {
        name: values[0]
        for name, values in headers.items()
        if name == "x-remote-user" or name.startswith("oidc_claim_")
    }


async def test_mod_auth_openidc_logs_a_patron_in_once_for_two_applications(
    apache: Applications,
    provider: Provider,
    apache_clients: tuple[Client, Client],
    patron: Patron,
    browser: aiohttp.ClientSession,
) -> None:
    first_url, second_url = apache.urls

    first = await browse(browser, first_url + "loans", patron=patron)
    seen = told(first, apache)
    assert first.login_forms == 1
    assert first.url == URL(first_url + "loans")
    # Once to find the patron unknown, once more after the login form.
    assert [q["client_id"] for q in authorize_requests(first, provider)] == [
        apache_clients[0].client_id
    ] * 2
    assert seen["x-remote-user"] == patron.account_id
    assert seen["oidc_claim_sub"] == patron.account_id
    assert seen["oidc_claim_preferred_username"] == patron.username
    assert seen["oidc_claim_email"] == patron.email

    # The second application has no session of its own: it sends the patron to the gateway,
    # which knows them and sends them straight back, no form in between.
    second = await browse(browser, second_url + "reading-list")
    assert second.login_forms == 0
    assert second.url == URL(second_url + "reading-list")
    assert [q["client_id"] for q in authorize_requests(second, provider)] == [
        apache_clients[1].client_id
    ]
    assert told(second, apache)["x-remote-user"] == patron.account_id


# --- logging out everywhere -------------------------------------------------------------------


async def turned_away(browser: aiohttp.ClientSession, url: str, provider: Provider) -> None:
    """Ask the application at `url` until mod_auth_openidc no longer knows the patron: it
    sends them to the gateway's authorization endpoint. The back-channel logout is delivered
    by the gateway's worker after the patron's own logout has answered, so this waits for it
    (bounded, not timed: each turn is a real request)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + STARTUP
    while loop.time() < end:
        async with browser.get(url, allow_redirects=False) as resp:
            location = resp.headers.get("Location", "")
            if resp.status == 302 and location.startswith(provider.issuer + "/auth/oidc/authorize"):
                return
            assert resp.status == 200, f"{url} answered {resp.status}"
    raise AssertionError(f"{url} still let the patron in {STARTUP} s after the logout")


async def both_logged_in(
    apache: Applications, browser: aiohttp.ClientSession, patron: Patron
) -> None:
    first_url, second_url = apache.urls
    assert told(await browse(browser, first_url + "loans", patron=patron), apache)
    assert told(await browse(browser, second_url + "loans"), apache)


async def gateway_form(browser: aiohttp.ClientSession, url: str) -> tuple[str, dict[str, str]]:
    """A gateway page's form: where it posts, and its hidden fields (the CSRF token)."""
    async with browser.get(url) as resp:
        body = await resp.text()
        assert resp.status == 200, body
    action = _ACTION.search(body)
    assert action is not None, body
    fields = {name: html.unescape(value) for name, value in _HIDDEN.findall(body)}
    return str(URL(url).join(URL(html.unescape(action.group(1))))), fields


async def test_a_logout_at_the_gateway_ends_the_apache_sessions(
    apache: Applications,
    provider: Provider,
    patron: Patron,
    browser: aiohttp.ClientSession,
) -> None:
    await both_logged_in(apache, browser, patron)
    action, fields = await gateway_form(browser, provider.issuer + "/auth/logout")
    async with browser.post(action, data=fields, allow_redirects=False) as resp:
        assert resp.status == 303
    for url in apache.urls:
        await turned_away(browser, url + "loans", provider)
    # Back at an application, the gateway asks for the password again: nothing lives on.
    again = await browse(browser, apache.urls[0] + "loans", patron=patron)
    assert again.login_forms == 1 and told(again, apache)["x-remote-user"] == patron.account_id


async def test_a_password_reset_ends_the_apache_sessions(
    apache: Applications,
    provider: Provider,
    patron: Patron,
    browser: aiohttp.ClientSession,
) -> None:
    await both_logged_in(apache, browser, patron)
    # The reset is asked for and done from another browser, as a patron who lost their
    # password at home and set a new one on their phone would.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as phone:
        action, fields = await gateway_form(phone, provider.issuer + "/auth/forgot-password")
        async with phone.post(action, data={**fields, "identifier": patron.username}) as resp:
            assert resp.status == 200
        link = await reset_link(provider, patron)
        action, fields = await gateway_form(phone, link)
        fields["new_password"] = "a new shelf of atlases by the door"
        async with phone.post(action, data=fields, allow_redirects=False) as resp:
            assert resp.status in (200, 303), await resp.text()
    for url in apache.urls:
        await turned_away(browser, url + "loans", provider)


async def reset_link(provider: Provider, patron: Patron) -> str:
    """The reset link in the mail the gateway wrote for the patron (no SMTP configured: the
    gateway writes its mails under DATA_DIR/outbox), waited for as for the logout above."""
    folder = provider.data_dir / "outbox"
    loop = asyncio.get_running_loop()
    end = loop.time() + STARTUP
    while loop.time() < end:
        for path in sorted(folder.glob("*.eml")) if folder.exists() else []:
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            assert isinstance(message, EmailMessage)
            if message["To"] == patron.email and "/auth/reset-password" in plain_text(message):
                return link_in(message)
        await asyncio.sleep(0)
    raise AssertionError(f"no reset mail for {patron.email} in {folder}")


async def test_disabling_the_account_ends_the_apache_sessions(
    apache: Applications,
    provider: Provider,
    patron: Patron,
    browser: aiohttp.ClientSession,
) -> None:
    await both_logged_in(apache, browser, patron)
    done = cli(
        "accounts",
        "disable",
        "--username",
        patron.username,
        "--data-dir",
        str(provider.data_dir),
        env=provider.env,
    )
    assert done.returncode == 0, done.stderr
    for url in apache.urls:
        await turned_away(browser, url + "loans", provider)
