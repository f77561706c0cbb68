"""The upstream connection's flow control and framing, driven with a recording transport
(an interface of ours; the real socket paths are covered by the proxy tests)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.proxy.connection import (
    HIGH_WATER,
    LOW_WATER,
    BackendConnection,
    ConnectionClosed,
    ResponseHead,
)
from gateway.proxy.upstream import request_head


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.reading = True
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


async def connected() -> tuple[BackendConnection, RecordingTransport]:
    connection = BackendConnection(asyncio.get_running_loop())
    transport = RecordingTransport()
    connection.connection_made(transport)
    return connection, transport


async def answered(connection: BackendConnection, wire: bytes, method: str = "GET") -> ResponseHead:
    """Ask over `connection`, and let the backend send `wire` back in one read."""
    connection.start(f"{method} / HTTP/1.1\r\nHost: b\r\n\r\n".encode(), method)
    pending = connection.response_head(30)
    connection.data_received(wire)
    return await pending


async def test_a_slow_reader_pauses_the_backend_socket_and_draining_resumes_it() -> None:
    """Back-pressure: the gateway never buffers more than about HIGH_WATER of a backend's
    body for a client that is not reading; the backend socket is paused instead."""
    connection, transport = await connected()
    connection.start(b"GET /big HTTP/1.1\r\nHost: b\r\n\r\n", "GET")
    pending = connection.response_head(30)
    size = 4 * HIGH_WATER
    connection.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
    answer = await pending
    assert answer.status == 200
    chunk = b"x" * 16384
    fed = 0
    while transport.reading and fed < size:
        connection.data_received(chunk)
        fed += len(chunk)
    assert not transport.reading, "the socket must be paused once the buffer passes HIGH_WATER"
    assert fed <= HIGH_WATER + len(chunk)

    body = connection.body()
    drained = 0
    while not transport.reading:
        drained += len(await anext(body))
    assert fed - drained <= LOW_WATER, "reading resumes only once the buffer is low again"


async def test_a_head_answer_ends_at_its_headers() -> None:
    connection, _ = await connected()
    connection.start(b"HEAD / HTTP/1.1\r\nHost: b\r\n\r\n", "HEAD")
    pending = connection.response_head(30)
    connection.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
    assert (await pending).status == 200
    assert connection.complete and connection.reusable


async def test_one_connection_carries_answers_one_after_another() -> None:
    """Keep-alive: each answer is read whole and on its own, also right after a HEAD answer
    (whose Content-Length announces a body that never comes)."""
    connection, _ = await connected()
    exchanges = [
        ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst", b"first"),
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", None),
        ("GET", b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope", b"nope"),
        (
            "GET",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            b"abc",
        ),
    ]
    for method, wire, body in exchanges:
        answer = await answered(connection, wire, method)
        assert answer.status == int(wire.split()[1])
        assert connection.complete and connection.reusable
        if body is not None:
            assert connection.whole_body() == body


async def test_bytes_after_the_answer_end_the_connection_but_not_the_answer() -> None:
    """A backend that sends a second answer nobody asked for is out of step: the answer asked
    for still goes out, but the connection is dropped, so the stray one can never be taken
    for the answer to the next request (response desynchronisation)."""
    connection, transport = await connected()
    answer = await answered(
        connection,
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        b"HTTP/1.1 302 Found\r\nLocation: https://evil.example"
        b"\r\nContent-Length: 0\r\n\r\n",
    )
    assert answer.status == 200
    assert ("Location", "https://evil.example") not in answer.headers
    assert connection.whole_body() == b"ok"
    assert transport.closed and not connection.reusable


async def test_bytes_between_answers_end_the_connection() -> None:
    connection, transport = await connected()
    await answered(connection, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert connection.reusable
    connection.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert transport.closed and not connection.reusable


async def test_an_answer_late_for_a_short_deadline_fails_after_a_longer_one_was_met() -> None:
    """Two routes to one backend share its connections: a request on the route with the short
    timeout is held to it, even though the connection last served the long one."""
    connection, transport = await connected()
    connection.start(b"GET /slow-route HTTP/1.1\r\nHost: b\r\n\r\n", "GET")
    pending = connection.response_head(3600)
    connection.data_received(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert (await pending).status == 204

    connection.start(b"GET /quick-route HTTP/1.1\r\nHost: b\r\n\r\n", "GET")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(10):  # a safety net only: the checks below tell them apart
            await connection.response_head(0.05)
    assert transport.closed and not connection.reusable


async def test_each_request_on_a_connection_gets_its_own_full_deadline() -> None:
    """The first answer came at once; the second never does, and times out after its own
    deadline, counted from its own start, not the first request's."""
    connection, transport = await connected()
    for number in (1, 2):
        connection.start(b"GET / HTTP/1.1\r\nHost: b\r\n\r\n", "GET")
        pending = connection.response_head(0.05)
        if number == 1:
            connection.data_received(b"HTTP/1.1 204 No Content\r\n\r\n")
            assert (await pending).status == 204
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(10):  # a safety net only: the check below tells them apart
            await pending
    assert transport.closed


async def test_an_interim_answer_is_skipped() -> None:
    connection, _ = await connected()
    connection.start(b"GET / HTTP/1.1\r\nHost: b\r\n\r\n", "GET")
    pending = connection.response_head(30)
    connection.data_received(
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    )
    answer = await pending
    assert answer.status == 200
    assert ("Link", "</a.css>") not in answer.headers
    assert connection.whole_body() == b"ok"


async def test_a_body_without_length_ends_when_the_backend_closes_and_is_not_reused() -> None:
    connection, _ = await connected()
    connection.start(b"GET / HTTP/1.1\r\nHost: b\r\n\r\n", "GET")
    pending = connection.response_head(30)
    connection.data_received(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nsome")
    await pending
    assert connection.whole_body() is None  # not complete until the backend closes
    connection.connection_lost(None)
    assert connection.complete and not connection.reusable
    assert b"".join([chunk async for chunk in connection.body()]) == b"some"


async def test_a_backend_that_dies_mid_body_is_an_error_not_a_short_answer() -> None:
    connection, _ = await connected()
    connection.start(b"GET / HTTP/1.1\r\nHost: b\r\n\r\n", "GET")
    pending = connection.response_head(30)
    connection.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    await pending
    connection.connection_lost(None)
    with pytest.raises(ConnectionClosed):
        async for _ in connection.body():
            pass


async def test_garbage_from_the_backend_fails_the_request() -> None:
    connection, transport = await connected()
    connection.start(b"GET / HTTP/1.1\r\nHost: b\r\n\r\n", "GET")
    pending = connection.response_head(30)
    connection.data_received(b"SMTP ready\r\n\r\n")
    with pytest.raises(ConnectionClosed):
        await pending
    assert transport.closed and not connection.reusable


async def test_a_chunked_upload_is_framed_on_the_wire() -> None:
    connection, transport = await connected()

    async def body() -> AsyncIterator[bytes]:
        yield b"abc"
        yield b""
        yield b"defgh"

    connection.start(b"POST /u HTTP/1.1\r\nHost: b\r\nTransfer-Encoding: chunked\r\n\r\n", "POST")
    await connection.send_body(body(), True)
    assert transport.written.endswith(b"3\r\nabc\r\n5\r\ndefgh\r\n0\r\n\r\n")


def test_a_header_value_with_a_line_break_never_reaches_the_wire() -> None:
    """Header injection through anything the gateway adds (a name from the database, say):
    the header is dropped rather than split into two."""
    head = request_head(
        "GET",
        "/x",
        [
            ("Host", "b"),
            ("X-Library-Username", "jan\r\nX-Library-User-Id: admin"),
            ("X-Other", "fine"),
            ("X-Bare", "lf\nonly"),
        ],
        chunked=False,
    )
    assert head == b"GET /x HTTP/1.1\r\nHost: b\r\nX-Other: fine\r\n\r\n"


def test_a_clean_head_is_sent_as_given() -> None:
    head = request_head("POST", "/u?q=1", [("Host", "b"), ("Cookie", "a=1")], chunked=True)
    assert head == (
        b"POST /u?q=1 HTTP/1.1\r\nHost: b\r\nCookie: a=1\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
