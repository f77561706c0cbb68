"""A WebSocket ends with the session it was opened under.

Its backend takes a socket for the patron's as long as it is open, so when the session ends
(a logout, a password change, a revocation missed while the listening connection was away)
the gateway closes both sides with 4401, on whichever instance the socket is, and leaves
every other socket alone. Real PostgreSQL, a real WebSocket backend on loopback, gateways
assembled from real parts (two of them on one database, each with its own listener), and
patrons logged in through the real form. Nothing sleeps: a close is awaited with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.fernet import MultiFernet

from auth.credentials.passwords import PasswordHasher
from auth.services import SERVICES
from auth.sessions.held import HeldConnections
from auth.sessions.registry import sid_hash
from auth.store.availability import DatabaseUnavailable
from gateway.proxy.websocket import SESSION_ENDED
from tests.helpers import (
    COOKIE,
    PASSWORD,
    Gateway,
    MakeGateway,
    add_patron,
    form_token,
    jar_cookie,
    login,
    open_cookie,
    post_form,
    routes_for,
)

DEADLINE = 30.0  # seconds a close may take to arrive before the test fails
NEW_PASSWORD = "a wholly different passphrase"


@dataclass
class SocketBackend:
    """A WebSocket echo service that tells each socket who the gateway said it was, and
    keeps the close code it got on each (by the socket's last path segment); `opened`, the
    test's ends of the sockets, closed after the test whatever happened."""

    server: TestServer
    closed: dict[str, asyncio.Future[int | None]] = field(default_factory=dict)
    opened: list[aiohttp.ClientWebSocketResponse] = field(default_factory=list)

    def closed_with(self, name: str) -> asyncio.Future[int | None]:
        return self.closed.setdefault(name, asyncio.get_running_loop().create_future())


@pytest.fixture
async def sockets(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> AsyncIterator[SocketBackend]:
    backend: SocketBackend

    async def live(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(json.dumps({"user": request.headers.get("X-Library-User-Id")}))
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str("echo:" + message.data)
        backend.closed_with(request.match_info["name"]).set_result(ws.close_code)
        return ws

    app = web.Application()
    app.router.add_get("/reservations/live/{name}", live)
    backend = SocketBackend(await aiohttp_server(app))
    yield backend
    # Before the servers stop: one left open would hold the backend's shutdown.
    for ws in backend.opened:
        await ws.close()


async def signed_in(client: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher) -> Patron:
    patron = await add_patron(pool, hasher)
    return Patron(patron.id, patron.username, await new_session(client, patron.username))


@dataclass
class Patron:
    id: str
    username: str
    cookie: str


async def new_session(client: Gateway, username: str, password: str = PASSWORD) -> str:
    """Log in through the real form in a fresh browser; its session cookie."""
    client.session.cookie_jar.clear()
    assert (await login(client, username, password)).status == 303
    cookie = jar_cookie(client)
    assert cookie is not None
    return cookie


async def open_socket(
    client: Gateway, backend: SocketBackend, name: str, cookie: str, user_id: str
) -> aiohttp.ClientWebSocketResponse:
    """A socket opened with exactly this session cookie, its backend told it is `user_id`'s."""
    client.session.cookie_jar.clear()
    ws = await client.ws_connect(
        f"/reservations/live/{name}", headers={"Cookie": f"{COOKIE}={cookie}"}
    )
    backend.opened.append(ws)
    assert json.loads(await ws.receive_str()) == {"user": user_id}
    return ws


async def log_out(client: Gateway, cookie: str) -> None:
    client.session.cookie_jar.clear()
    client.session.cookie_jar.update_cookies({COOKIE: cookie})
    token = await form_token(client, "/auth/logout")
    assert (await post_form(client, "/auth/logout", {"csrf_token": token})).status == 303


async def change_password(client: Gateway, cookie: str) -> None:
    client.session.cookie_jar.clear()
    client.session.cookie_jar.update_cookies({COOKIE: cookie})
    token = await form_token(client, "/auth/account")
    fields = {"csrf_token": token, "current_password": PASSWORD, "new_password": NEW_PASSWORD}
    assert (await post_form(client, "/auth/account/password", fields)).status == 303


async def closed_for_the_session(
    ws: aiohttp.ClientWebSocketResponse, backend: SocketBackend, name: str
) -> None:
    """The socket is closed by the gateway with SESSION_ENDED, and so is the backend's side."""
    async with asyncio.timeout(DEADLINE):
        message = await ws.receive()
        assert message.type == aiohttp.WSMsgType.CLOSE, message
        assert ws.close_code == SESSION_ENDED
        assert await backend.closed_with(name) == SESSION_ENDED


async def still_open(
    ws: aiohttp.ClientWebSocketResponse, backend: SocketBackend, name: str
) -> None:
    await ws.send_str("still there?")
    async with asyncio.timeout(DEADLINE):
        assert await ws.receive_str() == "echo:still there?"
    assert not backend.closed_with(name).done()


async def test_a_logout_closes_the_patrons_open_socket_and_its_backend_side(
    make_gateway: MakeGateway,
    sockets: SocketBackend,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
) -> None:
    """Defends against a socket talking to the backend as the patron after the logout."""
    gw = await make_gateway(routes_for(sockets.server.port))
    patron = await signed_in(gw, pool, hasher)
    ws = await open_socket(gw, sockets, "mine", patron.cookie, patron.id)
    await still_open(ws, sockets, "mine")

    await log_out(gw, patron.cookie)

    await closed_for_the_session(ws, sockets, "mine")
    assert gw.app[SERVICES].registry.held == 0  # nothing of the socket is kept once closed


async def test_a_logout_leaves_another_patrons_socket_open(
    make_gateway: MakeGateway,
    sockets: SocketBackend,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
) -> None:
    gw = await make_gateway(routes_for(sockets.server.port))
    leaving = await signed_in(gw, pool, hasher)
    staying = await signed_in(gw, pool, hasher)
    gone = await open_socket(gw, sockets, "leaving", leaving.cookie, leaving.id)
    kept = await open_socket(gw, sockets, "staying", staying.cookie, staying.id)

    await log_out(gw, leaving.cookie)

    await closed_for_the_session(gone, sockets, "leaving")
    await still_open(kept, sockets, "staying")
    assert gw.app[SERVICES].registry.held == 1


async def test_a_logout_on_one_instance_closes_the_socket_on_another(
    make_gateway: MakeGateway,
    sockets: SocketBackend,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
) -> None:
    """Defends against a socket outliving its session on an instance that only hears of the
    logout (each gateway has its own listening connection to the shared database)."""
    first = await make_gateway(routes_for(sockets.server.port))
    second = await make_gateway(routes_for(sockets.server.port))
    patron = await signed_in(first, pool, hasher)
    other = await signed_in(first, pool, hasher)
    ws = await open_socket(second, sockets, "elsewhere", patron.cookie, patron.id)
    kept = await open_socket(second, sockets, "other", other.cookie, other.id)
    assert first.app[SERVICES].registry.held == 0

    await log_out(first, patron.cookie)

    await closed_for_the_session(ws, sockets, "elsewhere")
    await still_open(kept, sockets, "other")


@pytest.mark.parametrize("instances", [1, 2])
async def test_a_password_change_closes_the_sockets_of_the_patrons_other_sessions(
    make_gateway: MakeGateway,
    sockets: SocketBackend,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
    instances: int,
) -> None:
    """The sessions a new password ends (all but the one that changed it) take their sockets
    with them; the changing session and its socket go on. On another instance, which hears
    only "this account changed", the sessions of its sockets are looked up again and those
    that ended close."""
    first = await make_gateway(routes_for(sockets.server.port))
    second = first if instances == 1 else await make_gateway(routes_for(sockets.server.port))
    patron = await signed_in(first, pool, hasher)
    here = await new_session(first, patron.username)
    forgotten = await open_socket(second, sockets, "left-open", patron.cookie, patron.id)
    current = await open_socket(second, sockets, "current", here, patron.id)

    await change_password(first, here)

    await closed_for_the_session(forgotten, sockets, "left-open")
    await still_open(current, sockets, "current")


async def test_when_the_listener_is_back_only_the_sockets_of_ended_sessions_close(
    make_gateway: MakeGateway,
    sockets: SocketBackend,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
    cookie_keys: MultiFernet,
) -> None:
    """A revocation this instance never heard (its listening connection was away) ends the
    socket once the connection is back; the patron's live sessions keep theirs."""
    gw = await make_gateway(routes_for(sockets.server.port))
    patron = await signed_in(gw, pool, hasher)
    live = await new_session(gw, patron.username)
    missed = await open_socket(gw, sockets, "missed", patron.cookie, patron.id)
    kept = await open_socket(gw, sockets, "kept", live, patron.id)
    sid = open_cookie(cookie_keys, patron.cookie)["session"]["sid"]
    # Revoked in the database with no notification: what a lost listener misses.
    revoked = await pool.execute(
        "UPDATE sessions SET revoked_at = now() WHERE sid_hash = $1", sid_hash(sid)
    )
    assert revoked == "UPDATE 1"
    await still_open(missed, sockets, "missed")  # nothing was heard yet

    gw.app[SERVICES].registry.listening_up()  # what the listener calls when it is back

    await closed_for_the_session(missed, sockets, "missed")
    await still_open(kept, sockets, "kept")


async def test_a_socket_ends_when_its_sessions_lifetime_runs_out(
    make_gateway: MakeGateway,
    sockets: SocketBackend,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
    cookie_keys: MultiFernet,
) -> None:
    """Nothing is pushed when a session's lifetime runs out: the once-a-minute look-up of the
    held sessions ends its socket then; another patron's stays open."""
    gw = await make_gateway(routes_for(sockets.server.port))
    patron = await signed_in(gw, pool, hasher)
    other = await signed_in(gw, pool, hasher)
    ending = await open_socket(gw, sockets, "ending", patron.cookie, patron.id)
    kept = await open_socket(gw, sockets, "other", other.cookie, other.id)
    sid = open_cookie(cookie_keys, patron.cookie)["session"]["sid"]
    # The session's lifetime over, as time would make it (GATEWAY_SESSION_LIFETIME).
    expired = await pool.execute(
        "UPDATE sessions SET expires_at = now() - interval '1 second' WHERE sid_hash = $1",
        sid_hash(sid),
    )
    assert expired == "UPDATE 1"
    await still_open(ending, sockets, "ending")  # nothing is pushed for it

    # The activity's writes, which the gateway runs once a minute, here every 50 ms.
    writes = asyncio.create_task(gw.app[SERVICES].registry.record_activity(every=0.05))
    try:
        await closed_for_the_session(ending, sockets, "ending")
        await still_open(kept, sockets, "other")
    finally:
        writes.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writes


# --- What is held, and what a check ends ---------------------------------------------------


class Ended:
    """The end functions of held connections, and which of them were called."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def __call__(self, name: str) -> Callable[[], None]:
        return lambda: self.names.append(name)


async def test_nothing_of_a_closed_connection_is_kept() -> None:
    asked: list[list[str]] = []

    async def live(sessions: list[str]) -> dict[str, str]:
        asked.append(sessions)
        return {}

    held, ended = HeldConnections(live), Ended()
    releases = [
        held.hold("aa", "patron", ended("first")),
        held.hold("aa", "patron", ended("second")),
        held.hold("bb", "patron", ended("third")),
    ]
    assert len(held) == 3
    for release in releases:
        release()
        release()  # twice is harmless
    assert len(held) == 0
    held.end(["aa", "bb"])
    held.check_all()
    held.check_account("patron")
    await held.checked()
    assert ended.names == []
    assert asked == []  # nothing held, nothing looked up


async def test_a_check_ends_the_connections_of_sessions_over_or_of_another_account() -> None:
    asked: list[list[str]] = []

    async def live(sessions: list[str]) -> dict[str, str]:
        asked.append(sorted(sessions))
        return {"aa": "patron", "cc": "someone else"}

    held, ended = HeldConnections(live), Ended()
    held.hold("aa", "patron", ended("live"))
    held.hold("bb", "patron", ended("revoked"))
    held.hold("cc", "patron", ended("not the patron's"))
    held.hold("dd", "other", ended("another account's"))
    held.check_account("patron")
    await held.checked()
    assert asked == [["aa", "bb", "cc"]]  # one query, the account's sessions only
    assert sorted(ended.names) == ["not the patron's", "revoked"]
    assert len(held) == 2


async def test_a_database_away_ends_nothing_and_a_fault_ends_all_it_was_checking() -> None:
    failure: Exception = OSError("unreachable")

    async def live(_sessions: list[str]) -> dict[str, str]:
        raise failure

    held, ended = HeldConnections(live), Ended()
    held.hold("aa", "patron", ended("first"))
    held.hold("bb", "other", ended("second"))
    failure = DatabaseUnavailable("away")
    held.check_all()
    await held.checked()
    assert ended.names == []  # kept: the database cannot tell, and it checks again later
    failure = ValueError("a bug")
    held.check_all()
    await held.checked()
    assert sorted(ended.names) == ["first", "second"]  # fail closed
    assert len(held) == 0
