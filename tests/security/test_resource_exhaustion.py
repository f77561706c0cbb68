"""Denial of service by holding or burning what the gateway has little of: connections,
memory for request bodies, and argon2 time.

Timeouts are shortened through the gateway's own settings (GATEWAY_IDLE_TIMEOUT) or the form
reader's constant, and the tests wait for the gateway to act, never for the clock; the
hasher is made busy on cue instead of by racing a slow hash.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from email.message import EmailMessage

import asyncpg
import pytest

from auth.credentials.passwords import PasswordHasher
from auth.mail import Mail, Outbox, OutboxWorker, Transport
from auth.pages import forms
from tests.helpers import (
    FAST_ARGON2,
    PASSWORD,
    Gateway,
    MakeGateway,
    add_patron,
    answer_before_the_end,
    as_chunk,
    attempt,
    csrf_in,
    fetch,
    form_token,
    hasher_held,
    jar_cookie,
    login,
    post_form,
    routes_for,
)
from tests.security.wire import GIVE_UP, RecordingBackend, exchange, statuses

HALF_OPEN = 200


@pytest.fixture
async def hasher() -> AsyncIterator[PasswordHasher]:
    """One hashing thread and no queue: the smallest hasher, saturated by one check."""
    one_slot = PasswordHasher(max_workers=1, max_queue=0, **FAST_ARGON2)
    yield one_slot
    one_slot.close()


@pytest.fixture
async def gw(make_gateway: MakeGateway, recorder: RecordingBackend) -> Gateway:
    return await make_gateway(routes_for(recorder.port))


# --- Connections ----------------------------------------------------------------------------


async def test_slowloris_connections_are_closed_and_others_are_served_meanwhile(
    make_gateway: MakeGateway, recorder: RecordingBackend
) -> None:
    """Slowloris (CVE-2007-6750): many connections, each with a request whose headers never
    end. aiohttp's keep-alive timer runs from the moment a connection opens until its
    request's headers are complete, so GATEWAY_IDLE_TIMEOUT cuts every one of them, while a
    normal request is answered at once (ASVS 11.1.4)."""
    gw = await make_gateway(routes_for(recorder.port), env={"GATEWAY_IDLE_TIMEOUT": "1"})
    assert gw.port is not None
    held = []
    for n in range(HALF_OPEN):
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(b"GET /open/slow HTTP/1.1\r\nHost: x\r\nX-Padding-%d: " % n)
        await writer.drain()
        held.append((reader, writer))
    silent_reader, silent_writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        resp = await gw.get("/open/normal")
        assert resp.status == 200
        async with asyncio.timeout(GIVE_UP):
            leftovers = await asyncio.gather(
                *(reader.read() for reader, _ in held), silent_reader.read()
            )
        # Closed by the gateway, without an answer: nothing of theirs was ever a request.
        assert set(leftovers) == {b""}
        assert [r.target for r in recorder.requests] == ["/open/normal"]
    finally:
        for _, writer in [*held, (silent_reader, silent_writer)]:
            writer.close()


async def test_a_login_form_that_stops_arriving_is_given_up_with_408(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow POST ("R-U-Dead-Yet", the body-side slowloris) holds a handler, not just a
    socket; the form reader gives up on it (ASVS 11.1.4). The limit is shortened for the
    test; in service it is ten seconds."""
    monkeypatch.setattr(forms, "FORM_READ_TIMEOUT", 0.5)
    assert gw.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        writer.write(
            b"POST /auth/login HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 100\r\n\r\nusername=drip"
        )
        await writer.drain()
        async with asyncio.timeout(GIVE_UP):
            head = await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 408 ")


@pytest.mark.parametrize(
    "attack",
    [
        pytest.param(
            b"GET /open/x HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-H%d: v\r\n" % n for n in range(150))
            + b"\r\n",
            id="150-headers-ASVS-11.1.4",
        ),
        pytest.param(
            b"GET /open/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            id="9000-byte-request-line-ASVS-11.1.4",
        ),
        pytest.param(
            b"GET /open/x HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 9000 + b"\r\n\r\n",
            id="9000-byte-header-ASVS-11.1.4",
        ),
    ],
)
async def test_oversized_heads_are_refused_by_the_parser_before_any_work(
    gw: Gateway, recorder: RecordingBackend, attack: bytes
) -> None:
    """Memory and CPU for a request head are bounded before routing, sessions or backends
    are involved (aiohttp's max_line_size, max_field_size and max_headers)."""
    assert gw.port is not None
    assert statuses(await exchange(gw.port, attack)) == [400]
    assert recorder.requests == []


# --- Request bodies -------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/auth/login", "/auth/forgot-password"])
async def test_a_huge_form_is_refused_by_its_content_length_before_a_byte_is_read(
    gw: Gateway, path: str
) -> None:
    """A one-megabyte form is refused on its announced length alone: the answer arrives
    though the body is never sent (ASVS 12.1.1, 11.1.4)."""
    assert gw.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {1024 * 1024}\r\n\r\n".encode()
        )
        await writer.drain()
        # The head of the answer is awaited, not the end of the connection: aiohttp lingers
        # a while to drain an unread body before it closes.
        async with asyncio.timeout(GIVE_UP):
            head = await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 413 ")


@pytest.mark.parametrize("path", ["/auth/login", "/auth/forgot-password"])
async def test_a_huge_form_without_a_length_is_cut_off_while_it_streams(
    gw: Gateway, path: str
) -> None:
    """Chunked, a huge form has no length to refuse up front; reading stops at the limit
    instead of buffering it all (ASVS 12.1.1): past the limit, and with the body never
    finished, the 413 comes."""
    assert gw.port is not None
    head = await answer_before_the_end(
        gw.port,
        f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        "Transfer-Encoding: chunked\r\n\r\n",
        as_chunk(b"username=") + as_chunk(b"a" * 2 * forms.MAX_FORM_BYTES),
    )
    assert head.startswith(b"HTTP/1.1 413 ")


# --- Password hashing -----------------------------------------------------------------------


async def test_a_saturated_hasher_answers_logins_503_at_once_and_proxies_on(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, recorder: RecordingBackend
) -> None:
    """A login flood must not queue argon2 work without bound (memory, latency) nor slow
    down patrons who are already logged in: beyond the queue a login is turned away busy,
    with Retry-After, while pages that need no hashing and the proxy carry on
    (ASVS 11.1.4, 2.2.1)."""
    patron = await add_patron(pool, hasher)
    reader = await add_patron(pool, hasher)
    assert (await login(gw, reader.username)).status == 303
    logged_in = jar_cookie(gw)
    gw.session.cookie_jar.clear()
    token = await form_token(gw)
    async with hasher_held(hasher):
        busy = await post_form(
            gw,
            "/auth/login",
            {"csrf_token": token, "username": patron.username, "password": PASSWORD},
        )
        assert busy.status == 503
        assert busy.headers["Retry-After"].isdigit()
        assert (await gw.get("/auth/login")).status == 200
        assert (await gw.get("/open/during")).status == 200
        assert (await fetch(gw, "/reservations/during", logged_in)).status == 200
    assert [r.target for r in recorder.requests] == ["/open/during", "/reservations/during"]
    # Once the hasher is free again, the same login goes through.
    gw.session.cookie_jar.clear()
    assert (await login(gw, patron.username)).status == 303


async def test_an_over_long_password_fails_like_any_other_without_hashing(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """A long password makes every argon2 pass slower, so it is refused before hashing: with
    the hasher busy, a 2000-character password still gets the generic 401 while a normal
    wrong password is turned away busy (ASVS 2.1.2, 11.1.4)."""
    patron = await add_patron(pool, hasher)
    gw.session.cookie_jar.clear()
    page = await gw.get("/auth/login")
    token = csrf_in(await page.text())
    async with hasher_held(hasher):
        answers = []
        for password in ("wrong but normal", "x" * 2000, "wrong but normal"):
            resp = await post_form(
                gw,
                "/auth/login",
                {"csrf_token": token, "username": patron.username, "password": password},
            )
            answers.append(resp.status)
    assert answers == [503, 401, 503]


async def test_a_blocked_attempt_spends_no_hashing_work(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """During a block the answer comes from the throttle alone: an attacker who keeps
    hammering a blocked account cannot keep the hasher busy for everybody else
    (ASVS 2.2.1, 11.1.4)."""
    patron = await add_patron(pool, hasher)
    for n in range(5):
        assert (await attempt(gw, patron.username, f"guess {n}"))[0] == 401
    gw.session.cookie_jar.clear()
    token = await form_token(gw)
    async with hasher_held(hasher):
        resp = await post_form(
            gw,
            "/auth/login",
            {"csrf_token": token, "username": patron.username, "password": PASSWORD},
        )
    assert resp.status == 429


# --- Stopping -------------------------------------------------------------------------------


class _Recorded:
    """A mail transport that only keeps what it is given."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def deliver(self, message: EmailMessage) -> None:
        self.messages.append(message)


class _LosesCancellation:
    """A transport that behaves as aiosmtplib does on Python 3.11 when a cancellation arrives
    together with the server's reply: the reply wins and the cancellation is lost (its
    replies are read through asyncio.wait_for, CPython gh-86296)."""

    def __init__(self) -> None:
        self.delivering = asyncio.Event()

    async def deliver(self, message: EmailMessage) -> None:
        self.delivering.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.get_running_loop().create_future()


class _ObservedWorker(OutboxWorker):
    """The outbox worker, telling the test each time it has run out of mail to send (the
    moment just before it waits to be woken)."""

    def __init__(self, pool: asyncpg.Pool, transport: Transport | None = None) -> None:
        super().__init__(pool, transport or _Recorded(), "no-reply@library.example")
        self.idle = asyncio.Event()

    async def send_due(self, batch: int = 10) -> int:
        sent = await super().send_due(batch)
        if sent == 0:
            self.idle.set()
        return sent


async def stops(task: asyncio.Task[None]) -> bool:
    done, _ = await asyncio.wait({task}, timeout=GIVE_UP)
    return task in done and task.cancelled()


async def test_the_mail_worker_stops_when_cancelled_just_as_mail_arrives(
    pool: asyncpg.Pool,
) -> None:
    """A gateway must stop when told to, or every deploy and every SIGTERM under load turns
    into a kill (ASVS 1.11.3: no race in shared flows). On Python 3.11, `asyncio.wait_for`
    swallows a cancellation that arrives together with the event it waits for (CPython
    gh-86296): a forgot-password mail queued while the gateway shut down kept the worker,
    and with it the shutdown, waiting for ever."""
    worker = _ObservedWorker(pool)
    task = asyncio.create_task(worker.run(poll=3600.0))
    await worker.idle.wait()
    worker.wake()  # a mail was queued (pg_notify) ...
    task.cancel()  # ... just as the gateway began to shut down
    assert await stops(task)


async def test_the_mail_worker_stops_even_if_delivery_loses_the_cancellation(
    pool: asyncpg.Pool,
) -> None:
    """The same race one level down: the cancellation reaches the worker while an SMTP reply
    is being read, and the SMTP library drops it. The worker still stops before waiting for
    more mail (ASVS 1.11.3)."""
    transport = _LosesCancellation()
    worker = _ObservedWorker(pool, transport)
    await Outbox(pool).send(
        Mail(
            recipient="patron@example.org",
            subject="Set a new password",
            text="a link",
            html="<p>a link</p>",
        )
    )
    task = asyncio.create_task(worker.run(poll=3600.0))
    await transport.delivering.wait()
    task.cancel()
    assert await stops(task)
