"""When the database is away: the gateway reaches the test PostgreSQL through a TCP relay that
can refuse connections (and cut the open ones) or swallow every byte and never answer.

Either way a login answers 503 with Retry-After within the deadline (never 500, never a wait
of half a minute), a patron whose session this instance confirmed within
GATEWAY_DATABASE_GRACE keeps being served, a session known to be over stays refused, one it
cannot vouch for gets a 503 (never the login again), and once the database is back
everything works as before. The registry's ttl is 0 here, so every request asks the database
as a request whose cached entry has run out would.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from auth import notify
from auth.credentials.passwords import PasswordHasher
from auth.services import SERVICES
from auth.store.availability import DatabaseUnavailable, unavailable
from tests.helpers import (
    Gateway,
    MakeGateway,
    add_patron,
    fetch,
    form_token,
    identity_seen,
    jar_cookie,
    login,
    post_form,
    routes_for,
)

# Each step with the database gets a second; a login meets at most a few of them.
DEADLINE = 1
BOUND = 8 * DEADLINE


class Mode(enum.Enum):
    HEALTHY = "healthy"
    UNREACHABLE = "unreachable"  # connections refused, open ones cut
    HANGING = "hanging"  # connections accepted, every byte swallowed, nothing answered


class _Pipe:
    """One client connection through the relay, and its connection to PostgreSQL."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.writers = [client]
        self.hung = False

    def abort(self) -> None:
        for writer in self.writers:
            writer.transport.abort()


class Relay:
    """A TCP relay on 127.0.0.1 in front of the test PostgreSQL (its Unix socket, or its TCP
    port), with the failures a real network and database show."""

    def __init__(self, target_url: str) -> None:
        parts = urlsplit(target_url)
        query = parse_qs(parts.query)
        self.database = parts.path.lstrip("/")
        self._socket: str | None = None
        self._address: tuple[str, int] | None = None
        if "host" in query and query["host"][0].startswith("/"):
            [found] = [
                path
                for path in Path(query["host"][0]).glob(".s.PGSQL.*")
                if not path.name.endswith(".lock")
            ]
            self._socket = str(found)
        else:
            self._address = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self.mode = Mode.HEALTHY
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[_Pipe] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"postgresql://postgres:@127.0.0.1:{self.port}/{self.database}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def fail(self, mode: Mode) -> None:
        self.mode = mode
        if mode is Mode.UNREACHABLE:
            assert self._server is not None
            self._server.close()
            await self._server.wait_closed()
            self._server = None
            for pipe in tuple(self._pipes):
                pipe.abort()

    async def heal(self) -> None:
        """Healthy again. The connections that hung lost bytes on the way and are cut, as a
        database restarted after a hang would have cut them."""
        self.mode = Mode.HEALTHY
        for pipe in tuple(self._pipes):
            if pipe.hung:
                pipe.abort()
        if self._server is None:
            await self.start()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for pipe in tuple(self._pipes):
            pipe.abort()
        for task in tuple(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        pipe = _Pipe(writer)
        self._pipes.add(pipe)
        try:
            if self.mode is Mode.HANGING:
                pipe.hung = True
                while await reader.read(65536):
                    pass
                return
            if self._socket is not None:
                up_reader, up_writer = await asyncio.open_unix_connection(self._socket)
            else:
                assert self._address is not None
                up_reader, up_writer = await asyncio.open_connection(*self._address)
            pipe.writers.append(up_writer)
            await asyncio.gather(
                self._pump(pipe, reader, up_writer), self._pump(pipe, up_reader, writer)
            )
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._pipes.discard(pipe)
            pipe.abort()
            self._tasks.discard(task)

    async def _pump(
        self, pipe: _Pipe, source: asyncio.StreamReader, sink: asyncio.StreamWriter
    ) -> None:
        while data := await source.read(65536):
            if self.mode is not Mode.HEALTHY or pipe.hung:
                pipe.hung = True  # swallowed: this connection can never be trusted again
                continue
            sink.write(data)
            await sink.drain()
        pipe.abort()


@pytest.fixture
async def relay(database_url: str) -> AsyncIterator[Relay]:
    relay = Relay(database_url)
    await relay.start()
    yield relay
    await relay.close()


async def ready(client: Gateway) -> None:
    """Wait until the gateway reports the database reachable again."""
    while (await client.get("/readyz")).status != 200:
        pass


async def logged_in(client: Gateway, name: str) -> str:
    resp = await login(client, name)
    assert resp.status == 303
    cookie = jar_cookie(client)
    assert cookie is not None
    return cookie


@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode", [Mode.UNREACHABLE, Mode.HANGING], ids=lambda m: m.value)
async def test_a_database_outage_answers_503_and_keeps_serving_recent_patrons(
    make_gateway: MakeGateway,
    backend: TestServer,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
    relay: Relay,
    mode: Mode,
) -> None:
    gw = await make_gateway(
        routes_for(backend.port),
        database_url=relay.url,
        session_ttl=0,
        env={"GATEWAY_DATABASE_TIMEOUT": DEADLINE, "GATEWAY_DATABASE_GRACE": 300},
    )
    # A second instance, straight on the database, where one patron logs out.
    other = await make_gateway(routes_for(backend.port))
    kept, ended, unseen, later = [(await add_patron(pool, hasher)).username for _ in range(4)]
    kept_cookie = await logged_in(gw, kept)
    ended_cookie = await logged_in(gw, ended)
    unseen_cookie = await logged_in(gw, unseen)  # a live session this instance never read
    for cookie in (kept_cookie, ended_cookie):
        assert (await fetch(gw, "/reservations/mine", cookie)).status == 200

    # The ended patron logs out on the other instance; this one hears it and reads it.
    registry = gw.app[SERVICES].registry
    heard = registry.notified
    gw.session.cookie_jar.clear()
    other.session.cookie_jar.update_cookies({"library_session": ended_cookie})
    token = await form_token(other, "/auth/logout")
    assert (await post_form(other, "/auth/logout", {"csrf_token": token})).status == 303
    await registry.wait_notified(heard + 1)
    assert (await fetch(gw, "/reservations/mine", ended_cookie)).status == 401
    gw.session.cookie_jar.clear()
    login_token = await form_token(gw)

    await relay.fail(mode)

    async with asyncio.timeout(BOUND):
        resp = await post_form(
            gw,
            "/auth/login",
            {
                "csrf_token": login_token,
                "username": later,
                "password": "correct horse battery staple",
            },
            headers={"Accept": "text/html"},
        )
    assert resp.status == 503
    assert int(resp.headers["Retry-After"]) > 0
    assert "Location" not in resp.headers

    async with asyncio.timeout(BOUND):
        served = await fetch(gw, "/reservations/mine", kept_cookie)
    assert served.status == 200
    assert identity_seen(await served.json())["x-library-username"] == kept

    async with asyncio.timeout(BOUND):
        refused = await fetch(gw, "/reservations/mine", ended_cookie)
    assert refused.status == 401

    async with asyncio.timeout(BOUND):
        unknown = await fetch(gw, "/reservations/mine", unseen_cookie)
    assert unknown.status == 503
    assert (await unknown.json())["error"] == "service_unavailable"
    assert "Retry-After" in unknown.headers
    async with asyncio.timeout(BOUND):
        page = await fetch(gw, "/reservations/mine", unseen_cookie, headers={"Accept": "text/html"})
    assert page.status == 503
    assert "Location" not in page.headers
    assert "text/html" in page.headers["Content-Type"]
    assert not any(m.key == "library_session" for m in page.cookies.values())

    # A page that needs no login is served, anonymously, the cookie kept for later.
    async with asyncio.timeout(BOUND):
        public = await fetch(gw, "/open/hours", unseen_cookie)
    assert public.status == 200
    assert identity_seen(await public.json()) == {}

    async with asyncio.timeout(BOUND):
        assert (await gw.get("/readyz")).status == 503

    await relay.heal()
    async with asyncio.timeout(30):
        await ready(gw)
    gw.session.cookie_jar.clear()
    assert (await login(gw, later)).status == 303
    for cookie, name in ((unseen_cookie, unseen), (kept_cookie, kept)):
        back = await fetch(gw, "/reservations/mine", cookie)
        assert back.status == 200
        assert identity_seen(await back.json())["x-library-username"] == name
    assert (await fetch(gw, "/reservations/mine", ended_cookie)).status == 401


async def test_past_the_grace_a_session_is_no_longer_vouched_for(
    make_gateway: MakeGateway,
    backend: TestServer,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
    relay: Relay,
) -> None:
    """GATEWAY_DATABASE_GRACE=0: nobody is served from the cache while the database is away.

    Away means known to be away: while the listening connection is up, revocations are
    pushed and a session read once needs no read (SessionRegistry.listening_up); the cut
    connection is noticed a moment after the relay fails, and from then on the session can
    only be vouched for by the database, which cannot be asked: 503."""
    gw = await make_gateway(
        routes_for(backend.port),
        database_url=relay.url,
        session_ttl=0,
        env={"GATEWAY_DATABASE_TIMEOUT": DEADLINE, "GATEWAY_DATABASE_GRACE": 0},
    )
    name = (await add_patron(pool, hasher)).username
    cookie = await logged_in(gw, name)
    assert (await fetch(gw, "/reservations/mine", cookie)).status == 200
    await relay.fail(Mode.UNREACHABLE)
    async with asyncio.timeout(BOUND):
        while (resp := await fetch(gw, "/reservations/mine", cookie)).status == 200:
            pass  # still vouched for by the pushed revocations, until the cut is noticed
    assert resp.status == 503
    await relay.heal()
    async with asyncio.timeout(30):
        await ready(gw)
    assert (await fetch(gw, "/reservations/mine", cookie)).status == 200


def test_only_the_databases_failures_count_as_it_being_away() -> None:
    """A timeout or socket error of anything but asyncpg (a backend, a mail server) is a
    fault of its own, never taken for the database's absence."""
    assert unavailable(asyncpg.ConnectionDoesNotExistError("gone"))
    assert unavailable(asyncpg.CannotConnectNowError("starting up"))
    assert unavailable(asyncpg.TooManyConnectionsError("full"))
    assert not unavailable(TimeoutError())
    assert not unavailable(ConnectionRefusedError())
    assert not unavailable(asyncpg.UniqueViolationError("taken"))
    try:
        raise DatabaseUnavailable("away") from OSError()
    except DatabaseUnavailable as exc:
        assert unavailable(exc)
    try:
        raise RuntimeError("wrapped") from asyncpg.InterfaceError("closed")
    except RuntimeError as exc:
        assert unavailable(exc)


async def test_a_refused_connection_from_asyncpg_counts_as_the_database_away(
    relay: Relay,
) -> None:
    await relay.fail(Mode.UNREACHABLE)
    with pytest.raises(OSError) as caught:
        await asyncpg.connect(relay.url, timeout=DEADLINE)
    assert unavailable(caught.value)


async def test_the_listener_gives_up_a_connection_that_never_answers(relay: Relay) -> None:
    """The LISTEN connection is made with a deadline too: a database that accepts and never
    answers must not hold the listener (asyncpg's own default is a minute), or the instance
    would hear of the recovery that late."""
    await relay.fail(Mode.HANGING)
    lost: list[bool] = []
    async with asyncio.timeout(BOUND):
        async with notify.listening(
            relay.url, {}, lambda: None, on_lost=lambda: lost.append(True), connect_timeout=0.5
        ):
            assert lost == [True]  # the first attempt gave up and said so
