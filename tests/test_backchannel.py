"""Back-channel logout (OpenID Back-Channel Logout 1.0): every way a gateway session ends tells
the libraries the patron signed in to in that session, and only those, with a logout token
verified here with PyJWT against the published JWKS. The libraries' receivers are real
servers on 127.0.0.1: one that is down, refuses or never answers never holds up a logout,
gets its token once it is back, and is given up on after the configured time.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import asyncpg
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.fernet import MultiFernet
from pytest_aiohttp import AiohttpClient, AiohttpServer

from auth.credentials.passwords import PasswordHasher
from auth.mail import SmtpTransport
from auth.oidc.backchannel import (
    NO_URI,
    UNKNOWN_CLIENT,
    BackchannelQueue,
    BackchannelTiming,
    BackchannelWorker,
    retry_delay,
)
from auth.oidc.tokens import BACKCHANNEL_LOGOUT_EVENT, OidcSigner
from auth.sessions.registry import SessionRegistry
from auth.signing import KeyStore
from auth.store.accounts import Account
from gateway.config.clients_file import parse_clients
from gateway.config.reload import ClientMap
from gateway.demo.mailcatcher import MailCatcher
from gateway.ops.admin import create_admin_app
from tests.helpers import (
    PASSWORD,
    Gateway,
    MakeGateway,
    add_patron,
    cli,
    csrf_in,
    form_token,
    free_port,
    login,
    post_form,
    routes_for,
    token_of,
)
from tests.test_federation_examples import example
from tests.test_metrics import scrape, value
from tests.test_oidc_provider import ISSUER, SECRET, authorize_url, code_for, exchange, jwks
from tests.test_recovery import NEW_PASSWORD, post_reset, reset_link

# Short pauses between attempts, so a retry comes within the test; a timeout far longer than
# any test holds a request.
FAST = BackchannelTiming(retry_delays=(0.05,), timeout=30.0)
METRIC = "gateway_backchannel_logouts_total"
REDIRECTS = {
    "online-library": "https://online.example.nl/callback",
    "partner": "https://partner.example.org/cb",
    "quiet": "https://quiet.example.org/cb",
}


def clients_yaml(receiver: str) -> str:
    """Two libraries with a receiver under `receiver` (one public with RS256 ID tokens, one
    pairwise with ES256) and one without a back-channel logout URI."""
    return f"""\
clients:
  - client_id: online-library
    name: De Online Bibliotheek
    redirect_uris: [{REDIRECTS["online-library"]}]
    secret_env: OIDC_TEST_SECRET
    backchannel_logout_uri: {receiver}/online-library
  - client_id: partner
    name: Partner Library
    redirect_uris: [{REDIRECTS["partner"]}]
    secret_env: OIDC_TEST_SECRET
    subject: pairwise
    id_token_signed_response_alg: ES256
    backchannel_logout_uri: {receiver}/partner
  - client_id: quiet
    name: Quiet Library
    redirect_uris: [{REDIRECTS["quiet"]}]
    secret_env: OIDC_TEST_SECRET
"""


@dataclass(frozen=True)
class Arrival:
    client_id: str
    content_type: str
    token: str


class Receiver:
    """Libraries' back-channel logout endpoints (`/<client_id>`): keeps every request,
    answers `status` (with `location`, when set), and while `hold` is set (an Event not yet
    set) keeps each request (for `hold_only`, when set, only that library's) waiting on it.
    `peak` is the most requests one library had open at once."""

    def __init__(self) -> None:
        self.arrivals: list[Arrival] = []
        self.status = 200
        self.location: str | None = None
        self.hold: asyncio.Event | None = None
        self.hold_only: str | None = None
        self.answered = 0
        self.peak: collections.Counter[str] = collections.Counter()
        self._open: collections.Counter[str] = collections.Counter()
        self._changed = asyncio.Condition()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{client_id}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        form = await request.post()
        token = form["logout_token"]
        assert isinstance(token, str)
        arrival = Arrival(request.match_info["client_id"], request.content_type, token)
        async with self._changed:
            self.arrivals.append(arrival)
            self._changed.notify_all()
        self._open[arrival.client_id] += 1
        self.peak[arrival.client_id] = max(
            self.peak[arrival.client_id], self._open[arrival.client_id]
        )
        try:
            if self.hold is not None and self.hold_only in (None, arrival.client_id):
                await self.hold.wait()
        finally:
            self._open[arrival.client_id] -= 1
        self.answered += 1
        headers = {"Location": self.location} if self.location else None
        return web.Response(status=self.status, headers=headers)

    async def wait_for(self, count: int) -> list[Arrival]:
        """The first `count` requests, once they have arrived."""
        async with asyncio.timeout(15), self._changed:
            await self._changed.wait_for(lambda: len(self.arrivals) >= count)
        return self.arrivals[:count]

    def claims(self, arrival: Arrival) -> dict[str, Any]:
        return jwt.decode(arrival.token, options={"verify_signature": False})


@pytest.fixture(autouse=True)
async def no_leftover_logouts(pool: asyncpg.Pool) -> None:
    """The tests of this module share a database: logouts an earlier test left open must not
    reach this test's receivers."""
    await pool.execute(
        "UPDATE backchannel_logouts SET given_up_at = now()"
        " WHERE delivered_at IS NULL AND given_up_at IS NULL"
    )


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


@pytest.fixture
async def receiver_url(receiver: Receiver, aiohttp_server: AiohttpServer) -> str:
    server = await aiohttp_server(receiver.app())
    return f"http://127.0.0.1:{server.port}"


@pytest.fixture
def federated(
    make_gateway: MakeGateway, backend: TestServer, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Any]:
    """A gateway serving `clients_yaml(receiver)`, its worker on short retries."""
    monkeypatch.setenv("OIDC_TEST_SECRET", SECRET)

    async def make(receiver: str, **kwargs: Any) -> Gateway:
        kwargs.setdefault("backchannel_timing", FAST)
        return await make_gateway(
            routes_for(backend.port), clients=clients_yaml(receiver), **kwargs
        )

    return make


@pytest.fixture
async def patron(pool: asyncpg.Pool, hasher: PasswordHasher) -> Account:
    return await add_patron(pool, hasher)


@pytest.fixture
async def standalone(
    receiver_url: str, pool: asyncpg.Pool, cookie_keys: MultiFernet
) -> tuple[ClientMap, OidcSigner]:
    """The client table and the signer a worker needs, without a gateway (whose own worker
    would take a share of the rows)."""
    keys = KeyStore(pool, cookie_keys)
    await keys.load()
    env = {"OIDC_TEST_SECRET": SECRET}
    return ClientMap(parse_clients(clients_yaml(receiver_url), env=env)), OidcSigner(keys, ISSUER)


async def queue_rows(pool: asyncpg.Pool, client_id: str, count: int) -> list[str]:
    """`count` logouts for `client_id`, queued as ending a session queues them but without
    the notification; their sessions."""
    sessions = [secrets.token_hex(32) for _ in range(count)]
    await pool.executemany(
        "INSERT INTO backchannel_logouts (client_id, session, sub) VALUES ($1, $2, 'someone')",
        [(client_id, session) for session in sessions],
    )
    return sessions


async def browser(aiohttp_client: AiohttpClient, gw: Gateway) -> Gateway:
    """Another browser (a cookie jar of its own) on the same gateway."""
    return cast(Gateway, await aiohttp_client(gw.server))


async def id_token_at(browser: Gateway, client_id: str) -> str:
    """The browser's session signs in at `client_id` (code flow, code exchanged); the ID
    token the library got."""
    redirect = REDIRECTS[client_id]
    params = await code_for(browser, authorize_url(client_id, redirect))
    resp = await exchange(browser, params["code"], client_id=client_id, redirect_uri=redirect)
    assert resp.status == 200
    id_token: str = (await resp.json())["id_token"]
    return id_token


async def signed_in_at(browser: Gateway, client_id: str) -> dict[str, Any]:
    """`id_token_at`, the token's claims verified with the published keys."""
    id_token = await id_token_at(browser, client_id)
    header = jwt.get_unverified_header(id_token)
    key = (await jwks(browser))[header["kid"]]
    claims: dict[str, Any] = jwt.decode(
        id_token, key.key, algorithms=[header["alg"]], audience=client_id, issuer=ISSUER
    )
    return claims


async def log_out(browser: Gateway) -> int:
    page = await browser.get("/auth/logout")
    resp = await post_form(browser, "/auth/logout", {"csrf_token": csrf_in(await page.text())})
    return resp.status


async def logout_row(
    pool: asyncpg.Pool, client_id: str, sid: str, done: Callable[[asyncpg.Record], bool]
) -> asyncpg.Record:
    """The queued logout of session `sid` for `client_id`, once `done` holds for it."""
    async with asyncio.timeout(15):
        while True:
            row = await pool.fetchrow(
                "SELECT * FROM backchannel_logouts WHERE client_id = $1 AND left(session, 32) = $2",
                client_id,
                sid,
            )
            if row is not None and done(row):
                return row
            await asyncio.sleep(0.02)  # polling the table, not waiting for time to pass


def delivered(row: asyncpg.Record) -> bool:
    return row["delivered_at"] is not None


def closed(row: asyncpg.Record) -> bool:
    return row["given_up_at"] is not None


async def queued_for(pool: asyncpg.Pool, sid: str) -> int:
    return int(
        await pool.fetchval(
            "SELECT count(*) FROM backchannel_logouts WHERE left(session, 32) = $1", sid
        )
    )


# --- What the library receives ------------------------------------------------------------------


async def test_a_logout_sends_each_library_a_logout_token_it_can_verify(
    federated: Callable[..., Any],
    receiver: Receiver,
    receiver_url: str,
    patron: Account,
    pool: asyncpg.Pool,
) -> None:
    """The token names the session and the patron as that library's ID token did (the
    pairwise library's own `sub`), is signed with that library's algorithm and the gateway's
    published key, and is a logout token, never an ID token (typ, events, no nonce)."""
    gw = await federated(receiver_url)
    assert (await login(gw, patron.username)).status == 303
    id_tokens = {client: await signed_in_at(gw, client) for client in ("online-library", "partner")}
    assert id_tokens["partner"]["sub"] != patron.id  # pairwise
    assert await log_out(gw) == 303

    arrivals = {arrival.client_id: arrival for arrival in await receiver.wait_for(2)}
    keys = await jwks(gw)
    for client_id, alg in (("online-library", "RS256"), ("partner", "ES256")):
        arrival = arrivals[client_id]
        assert arrival.content_type == "application/x-www-form-urlencoded"
        header = jwt.get_unverified_header(arrival.token)
        assert header["typ"] == "logout+jwt" and header["alg"] == alg
        claims = jwt.decode(
            arrival.token,
            keys[header["kid"]].key,
            algorithms=[alg],
            audience=client_id,
            issuer=ISSUER,
            options={"require": ["iss", "aud", "iat", "exp", "jti", "sid", "sub", "events"]},
        )
        assert claims["sid"] == id_tokens[client_id]["sid"]
        assert claims["sub"] == id_tokens[client_id]["sub"]
        assert claims["events"] == {BACKCHANNEL_LOGOUT_EVENT: {}}
        assert "nonce" not in claims
        row = await logout_row(pool, client_id, claims["sid"], delivered)
        assert row["attempts"] == 1 and row["last_error"] is None
    assert (
        receiver.claims(arrivals["online-library"])["jti"]
        != receiver.claims(arrivals["partner"])["jti"]
    )


async def test_the_federation_guides_check_takes_a_logout_token_and_nothing_else(
    federated: Callable[..., Any],
    receiver: Receiver,
    receiver_url: str,
    patron: Account,
) -> None:
    """docs/federation.md's Python lines for a library's receiver, run as printed (but for
    the gateway's address and the client's name)."""
    gw = await federated(receiver_url)
    assert (await login(gw, patron.username)).status == 303
    id_token = await id_token_at(gw, "online-library")
    assert await log_out(gw) == 303
    [arrival] = await receiver.wait_for(1)

    code = (
        example("Back-channel logout", "python")
        .replace("https://login.example.org/", str(gw.make_url("/")))
        .replace('"https://login.example.org"', repr(ISSUER))
        .replace('"public-library"', '"online-library"')
    )
    namespace: dict[str, Any] = {}
    exec(code, namespace)
    logout_sid = namespace["logout_sid"]
    sid = jwt.decode(id_token, options={"verify_signature": False})["sid"]
    assert await asyncio.to_thread(logout_sid, arrival.token) == sid
    with pytest.raises(ValueError, match="not a logout token"):
        await asyncio.to_thread(logout_sid, id_token)


async def test_only_the_libraries_of_the_session_that_ended_are_told(
    federated: Callable[..., Any],
    receiver: Receiver,
    receiver_url: str,
    patron: Account,
    pool: asyncpg.Pool,
    aiohttp_client: AiohttpClient,
) -> None:
    """The same patron, the same library, two browsers: logging out in one ends only that
    session at the library; the other browser's session there lives on."""
    gw = await federated(receiver_url)
    other = await browser(aiohttp_client, gw)
    assert (await login(gw, patron.username)).status == 303
    assert (await login(other, patron.username)).status == 303
    here = await signed_in_at(gw, "online-library")
    there = await signed_in_at(other, "online-library")
    assert here["sid"] != there["sid"]

    assert await log_out(gw) == 303
    [arrival] = await receiver.wait_for(1)
    assert receiver.claims(arrival)["sid"] == here["sid"]
    await logout_row(pool, "online-library", here["sid"], delivered)
    assert await queued_for(pool, there["sid"]) == 0

    assert await log_out(other) == 303
    second = (await receiver.wait_for(2))[1]
    assert receiver.claims(second)["sid"] == there["sid"]


# --- Every way a session ends -------------------------------------------------------------------


async def test_a_password_change_tells_the_libraries_of_the_other_sessions(
    federated: Callable[..., Any],
    receiver: Receiver,
    receiver_url: str,
    patron: Account,
    pool: asyncpg.Pool,
    aiohttp_client: AiohttpClient,
) -> None:
    """The patron changes their password in one browser: the other browser's session ends,
    and so does its session at the library; the changing browser stays logged in, there too."""
    gw = await federated(receiver_url)
    other = await browser(aiohttp_client, gw)
    assert (await login(gw, patron.username)).status == 303
    assert (await login(other, patron.username)).status == 303
    kept = await signed_in_at(gw, "online-library")
    ended = await signed_in_at(other, "partner")

    resp = await post_form(
        gw,
        "/auth/account/password",
        {
            "csrf_token": await form_token(gw, "/auth/account"),
            "current_password": PASSWORD,
            "new_password": NEW_PASSWORD,
        },
    )
    assert resp.status == 303
    [arrival] = await receiver.wait_for(1)
    assert arrival.client_id == "partner"
    assert receiver.claims(arrival)["sid"] == ended["sid"]
    await logout_row(pool, "partner", ended["sid"], delivered)
    assert await queued_for(pool, kept["sid"]) == 0


async def test_a_password_reset_tells_the_libraries_of_every_session(
    federated: Callable[..., Any],
    receiver: Receiver,
    receiver_url: str,
    patron: Account,
    pool: asyncpg.Pool,
    mail_catcher: MailCatcher,
    fresh_recovery_mails: None,
    aiohttp_client: AiohttpClient,
) -> None:
    """A reset (the patron's own, or somebody who took over their mail) ends every session,
    at the libraries too."""
    gw = await federated(receiver_url, mail_transport=SmtpTransport(mail_catcher.url))
    assert (await login(gw, patron.username)).status == 303
    session = await signed_in_at(gw, "online-library")
    stranger = await browser(aiohttp_client, gw)
    link = await reset_link(stranger, mail_catcher, patron)
    assert (await post_reset(stranger, token_of(link), NEW_PASSWORD)).status == 303

    [arrival] = await receiver.wait_for(1)
    assert receiver.claims(arrival)["sid"] == session["sid"]
    await logout_row(pool, "online-library", session["sid"], delivered)


async def test_disabling_an_account_on_the_command_line_tells_the_libraries(
    federated: Callable[..., Any],
    receiver: Receiver,
    receiver_url: str,
    patron: Account,
    pool: asyncpg.Pool,
    database_url: str,
    tmp_path: Path,
) -> None:
    """`library-gateway accounts disable` (a lost pass) runs in a process of its own, with no
    client configuration: the running gateway hears of the queued logouts and delivers them."""
    gw = await federated(receiver_url)
    assert (await login(gw, patron.username)).status == 303
    session = await signed_in_at(gw, "partner")
    done = await asyncio.to_thread(
        cli,
        "accounts",
        "disable",
        "--pass-number",
        patron.pass_number,
        env={"GATEWAY_DATABASE_URL": database_url},
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    [arrival] = await receiver.wait_for(1)
    assert arrival.client_id == "partner"
    assert receiver.claims(arrival)["sid"] == session["sid"]
    await logout_row(pool, "partner", session["sid"], delivered)


# --- Receivers that are down, refuse or never answer ---------------------------------------------


async def test_a_library_answering_503_gets_the_token_once_it_is_back(
    federated: Callable[..., Any],
    receiver: Receiver,
    receiver_url: str,
    patron: Account,
    pool: asyncpg.Pool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The failure is logged with the library and the attempt, never the token or the
    patron's `sub`."""
    gw = await federated(receiver_url)
    receiver.status = 503
    assert (await login(gw, patron.username)).status == 303
    session = await signed_in_at(gw, "online-library")
    with caplog.at_level(logging.WARNING, logger="auth.oidc.backchannel"):
        assert await log_out(gw) == 303
        failed = await logout_row(
            pool, "online-library", session["sid"], lambda r: r["attempts"] >= 1
        )
    assert failed["last_error"] == "HTTP 503" and failed["delivered_at"] is None
    [warning, *_] = [r for r in caplog.records if r.name == "auth.oidc.backchannel"]
    assert warning.__dict__["client_id"] == "online-library"
    assert warning.__dict__["attempt"] == 1 and warning.__dict__["error"] == "HTTP 503"
    logged = repr(warning.__dict__)
    token = receiver.arrivals[0].token
    assert token not in logged and token.split(".")[1] not in logged
    assert session["sub"] not in logged

    receiver.status = 200
    row = await logout_row(pool, "online-library", session["sid"], delivered)
    assert row["attempts"] >= 2 and row["last_error"] is None
    sids = {receiver.claims(arrival)["sid"] for arrival in receiver.arrivals}
    assert sids == {session["sid"]}


async def test_a_library_whose_server_is_down_gets_the_token_once_it_is_up(
    federated: Callable[..., Any],
    receiver: Receiver,
    aiohttp_server: AiohttpServer,
    patron: Account,
    pool: asyncpg.Pool,
) -> None:
    """Nothing listens at the library's address at first (connection refused), then its
    server starts there."""
    port = free_port()
    gw = await federated(f"http://127.0.0.1:{port}")
    assert (await login(gw, patron.username)).status == 303
    session = await signed_in_at(gw, "online-library")
    assert await log_out(gw) == 303
    failed = await logout_row(pool, "online-library", session["sid"], lambda r: r["attempts"] >= 1)
    assert failed["last_error"].startswith("ClientConnectorError")

    await aiohttp_server(receiver.app(), port=port)
    [arrival] = await receiver.wait_for(1)
    assert receiver.claims(arrival)["sid"] == session["sid"]
    await logout_row(pool, "online-library", session["sid"], delivered)


async def test_a_library_that_answers_too_late_gets_the_token_again(
    federated: Callable[..., Any],
    receiver: Receiver,
    receiver_url: str,
    patron: Account,
    pool: asyncpg.Pool,
) -> None:
    """An attempt ends at its timeout; the next one, once the library answers, delivers."""
    gw = await federated(
        receiver_url, backchannel_timing=BackchannelTiming(retry_delays=(0.05,), timeout=0.2)
    )
    receiver.hold = asyncio.Event()
    assert (await login(gw, patron.username)).status == 303
    session = await signed_in_at(gw, "online-library")
    assert await log_out(gw) == 303
    failed = await logout_row(pool, "online-library", session["sid"], lambda r: r["attempts"] >= 1)
    assert failed["last_error"] == "TimeoutError"

    receiver.hold.set()
    row = await logout_row(pool, "online-library", session["sid"], delivered)
    assert row["attempts"] >= 2


async def test_a_redirect_from_the_library_is_not_followed(
    federated: Callable[..., Any],
    receiver: Receiver,
    receiver_url: str,
    patron: Account,
    pool: asyncpg.Pool,
) -> None:
    """The library must answer itself (Back-Channel Logout 1.0, 2.8): a redirect, here to
    another library's receiver, is a failed attempt, and the token goes nowhere else."""
    gw = await federated(receiver_url)
    receiver.status, receiver.location = 307, f"{receiver_url}/partner"
    assert (await login(gw, patron.username)).status == 303
    session = await signed_in_at(gw, "online-library")
    assert await log_out(gw) == 303
    failed = await logout_row(pool, "online-library", session["sid"], lambda r: r["attempts"] >= 1)
    assert failed["last_error"] == "HTTP 307" and failed["delivered_at"] is None
    assert {arrival.client_id for arrival in receiver.arrivals} == {"online-library"}


async def test_a_library_that_never_answers_holds_up_no_logout(
    federated: Callable[..., Any],
    receiver: Receiver,
    receiver_url: str,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
    aiohttp_client: AiohttpClient,
) -> None:
    """The receiver keeps each request until the test lets go, which it does only after the
    logouts were answered: the first patron's logout is answered, and a second patron's too
    while the first token is still held, and both tokens are held at once (deliveries run
    side by side, not one after the other)."""
    gw = await federated(receiver_url)
    receiver.hold = asyncio.Event()
    first, second = await add_patron(pool, hasher), await add_patron(pool, hasher)
    other = await browser(aiohttp_client, gw)
    assert (await login(gw, first.username)).status == 303
    assert (await login(other, second.username)).status == 303
    sessions = [await signed_in_at(gw, "online-library"), await signed_in_at(other, "partner")]

    assert await log_out(gw) == 303
    await receiver.wait_for(1)
    assert receiver.answered == 0
    assert await log_out(other) == 303
    held = await receiver.wait_for(2)
    assert receiver.answered == 0
    assert {receiver.claims(arrival)["sid"] for arrival in held} == {s["sid"] for s in sessions}

    receiver.hold.set()
    for client_id, session in zip(("online-library", "partner"), sessions, strict=True):
        row = await logout_row(pool, client_id, session["sid"], delivered)
        assert row["attempts"] == 1
    assert receiver.answered == 2


async def test_a_logout_past_the_give_up_time_is_dropped_and_counted(
    federated: Callable[..., Any],
    receiver: Receiver,
    receiver_url: str,
    patron: Account,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
    aiohttp_client: AiohttpClient,
) -> None:
    """GATEWAY_BACKCHANNEL_GIVE_UP_AFTER: a failed attempt at a logout older than that is the
    last one. The logout is made older than the (short) give-up time while its first attempt
    is under way, so the test does not depend on how fast it runs."""
    gw = await federated(receiver_url, env={"GATEWAY_BACKCHANNEL_GIVE_UP_AFTER": "60"})
    admin = await aiohttp_client(create_admin_app(gw.app))
    before = await scrape(admin)
    receiver.status, receiver.hold = 503, asyncio.Event()
    assert (await login(gw, patron.username)).status == 303
    session = await signed_in_at(gw, "online-library")
    assert await log_out(gw) == 303
    await receiver.wait_for(1)
    await pool.execute(
        "UPDATE backchannel_logouts SET created_at = created_at - interval '61 seconds'"
        " WHERE left(session, 32) = $1",
        session["sid"],
    )
    receiver.hold.set()
    row = await logout_row(pool, "online-library", session["sid"], closed)
    assert row["attempts"] == 1 and row["delivered_at"] is None
    assert row["last_error"] == "HTTP 503"

    # The worker goes on (another patron's logout is delivered) without trying it again.
    receiver.status = 200
    later = await add_patron(pool, hasher)
    assert (await login(gw, later.username)).status == 303
    next_session = await signed_in_at(gw, "online-library")
    assert await log_out(gw) == 303
    await logout_row(pool, "online-library", next_session["sid"], delivered)
    assert [receiver.claims(a)["sid"] for a in receiver.arrivals] == [
        session["sid"],
        next_session["sid"],
    ]
    after = await scrape(admin)
    for outcome, grew in (("given_up", 1), ("failed", 0), ("delivered", 1)):
        assert value(after, METRIC, outcome=outcome) - value(before, METRIC, outcome=outcome) == (
            grew
        )


# --- Restarts, libraries without a receiver, several instances ----------------------------------


async def test_a_logout_queued_while_no_gateway_runs_is_delivered_by_the_next_one(
    federated: Callable[..., Any],
    receiver: Receiver,
    receiver_url: str,
    patron: Account,
    pool: asyncpg.Pool,
) -> None:
    gw = await federated(receiver_url)
    assert (await login(gw, patron.username)).status == 303
    session = await signed_in_at(gw, "online-library")
    await gw.close()
    await SessionRegistry(pool).revoke_account(patron.id)  # as the command line does
    assert await queued_for(pool, session["sid"]) == 1
    assert receiver.arrivals == []

    await federated(receiver_url)
    [arrival] = await receiver.wait_for(1)
    assert receiver.claims(arrival)["sid"] == session["sid"]
    await logout_row(pool, "online-library", session["sid"], delivered)


async def test_a_library_without_a_receiver_is_skipped_not_failed(
    federated: Callable[..., Any],
    receiver: Receiver,
    receiver_url: str,
    patron: Account,
    pool: asyncpg.Pool,
    aiohttp_client: AiohttpClient,
) -> None:
    """No backchannel_logout_uri, or a library no longer in clients.yaml: nothing is sent, the
    logout is closed with the reason, and no failure is counted or retried."""
    gw = await federated(receiver_url)
    admin = await aiohttp_client(create_admin_app(gw.app))
    before = await scrape(admin)
    assert (await login(gw, patron.username)).status == 303
    session = await signed_in_at(gw, "quiet")
    retired = secrets.token_hex(32)
    await pool.execute(
        "INSERT INTO backchannel_logouts (client_id, session, sub) VALUES ('retired', $1, $2)",
        retired,
        patron.id,
    )
    assert await log_out(gw) == 303

    row = await logout_row(pool, "quiet", session["sid"], closed)
    assert row["last_error"] == NO_URI and row["attempts"] == 0 and row["delivered_at"] is None
    gone = await logout_row(pool, "retired", retired[:32], closed)
    assert gone["last_error"] == UNKNOWN_CLIENT and gone["attempts"] == 0
    assert receiver.arrivals == []
    after = await scrape(admin)
    assert value(after, METRIC, outcome="skipped") - value(before, METRIC, outcome="skipped") == 2
    assert value(after, METRIC, outcome="failed") == value(before, METRIC, outcome="failed")


async def test_two_instances_sharing_the_table_deliver_each_logout_once(
    receiver: Receiver,
    standalone: tuple[ClientMap, OidcSigner],
    pool: asyncpg.Pool,
) -> None:
    """Each worker leases the rows it claims, so two of them never post the same logout."""
    clients, signer = standalone
    sessions = await queue_rows(pool, "online-library", 9)
    workers = [BackchannelWorker(pool, clients, signer, timing=FAST) for _ in range(2)]

    async def drain(worker: BackchannelWorker) -> None:
        while await worker.deliver_due(batch=2):
            pass

    try:
        await asyncio.gather(*(drain(worker) for worker in workers))
    finally:
        for worker in workers:
            await worker.close()
    sids = [receiver.claims(arrival)["sid"] for arrival in receiver.arrivals]
    assert sorted(sids) == sorted(session[:32] for session in sessions)
    rows = await pool.fetch(
        "SELECT attempts, delivered_at FROM backchannel_logouts WHERE session = ANY($1::text[])",
        sessions,
    )
    assert all(row["delivered_at"] and row["attempts"] == 1 for row in rows)


async def test_a_library_that_hangs_holds_up_no_other_library(
    receiver: Receiver,
    standalone: tuple[ClientMap, OidcSigner],
    pool: asyncpg.Pool,
) -> None:
    """A library whose server holds every request gets no more than its share of the
    worker's deliveries, however many of its logouts are due first: the other libraries'
    tokens go out meanwhile."""
    clients, signer = standalone
    receiver.hold, receiver.hold_only = asyncio.Event(), "partner"
    stuck = await queue_rows(pool, "partner", 20)
    [other] = await queue_rows(pool, "online-library", 1)
    worker = BackchannelWorker(pool, clients, signer, timing=FAST, concurrency=6, per_client=2)
    running = asyncio.create_task(worker.run())
    try:
        await logout_row(pool, "online-library", other[:32], delivered)
        await receiver.wait_for(3)  # the other library's one, and the hung library's two
        assert receiver.peak["partner"] == 2 and len(receiver.arrivals) == 3
        receiver.hold.set()
        for session in stuck:
            await logout_row(pool, "partner", session[:32], delivered)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    assert receiver.peak["partner"] == 2


async def test_housekeeping_forgets_finished_logouts_after_a_week(pool: asyncpg.Pool) -> None:
    old, fresh, open_ = (secrets.token_hex(32) for _ in range(3))
    await pool.execute(
        "INSERT INTO backchannel_logouts (client_id, session, sub, delivered_at, given_up_at,"
        " created_at, next_attempt_at) VALUES"
        " ('a', $1, 's', now() - interval '8 days', NULL, now() - interval '9 days', now()),"
        " ('b', $1, 's', NULL, now() - interval '8 days', now() - interval '9 days', now()),"
        " ('a', $2, 's', now() - interval '1 day', NULL, now() - interval '9 days', now()),"
        " ('a', $3, 's', NULL, NULL, now() - interval '9 days', now() + interval '1 hour')",
        old,
        fresh,
        open_,
    )
    assert await BackchannelQueue(pool).purge() >= 2
    left = await pool.fetch(
        "SELECT session FROM backchannel_logouts WHERE session = ANY($1::text[])",
        [old, fresh, open_],
    )
    assert sorted(row["session"] for row in left) == sorted([fresh, open_])


def test_retries_back_off_to_the_longest_pause_and_stay_there() -> None:
    assert [retry_delay(n, (5, 15, 60)) for n in (1, 2, 3, 4, 20)] == [5, 15, 60, 60, 60]
    assert retry_delay(1, (0.05,)) == retry_delay(9, (0.05,)) == 0.05
