"""The upstream connection's flow control and framing, driven with a recording transport
(an interface of ours; the real socket paths are covered by the proxy tests)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.connection import HIGH_WATER, LOW_WATER, BackendConnection, ConnectionClosed
from gateway.upstream import request_head


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


async def test_a_slow_reader_pauses_the_backend_socket_and_draining_resumes_it() -> None:
    """Back-pressure: the gateway never buffers more than about HIGH_WATER of a backend's
    body for a client that is not reading; the backend socket is paused instead."""
    connection, transport = await connected()
    connection.start(b"GET /big HTTP/1.1\r\nHost: b\r\n\r\n", "GET")
    pending = connection.answer(30)
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
    pending = connection.answer(30)
    connection.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
    assert (await pending).status == 200
    assert connection.complete and connection.reusable


async def test_an_interim_answer_is_skipped() -> None:
    connection, _ = await connected()
    connection.start(b"GET / HTTP/1.1\r\nHost: b\r\n\r\n", "GET")
    pending = connection.answer(30)
    connection.data_received(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
                             b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    answer = await pending
    assert answer.status == 200
    assert ("Link", "</a.css>") not in answer.headers
    assert connection.whole_body() == b"ok"


async def test_a_body_without_length_ends_when_the_backend_closes_and_is_not_reused() -> None:
    connection, _ = await connected()
    connection.start(b"GET / HTTP/1.1\r\nHost: b\r\n\r\n", "GET")
    pending = connection.answer(30)
    connection.data_received(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nsome")
    await pending
    assert connection.whole_body() is None  # not complete until the backend closes
    connection.connection_lost(None)
    assert connection.complete and not connection.reusable
    assert b"".join([chunk async for chunk in connection.body()]) == b"some"


async def test_a_backend_that_dies_mid_body_is_an_error_not_a_short_answer() -> None:
    connection, _ = await connected()
    connection.start(b"GET / HTTP/1.1\r\nHost: b\r\n\r\n", "GET")
    pending = connection.answer(30)
    connection.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    await pending
    connection.connection_lost(None)
    with pytest.raises(ConnectionClosed):
        async for _ in connection.body():
            pass


async def test_garbage_from_the_backend_fails_the_request() -> None:
    connection, transport = await connected()
    connection.start(b"GET / HTTP/1.1\r\nHost: b\r\n\r\n", "GET")
    pending = connection.answer(30)
    connection.data_received(b"SMTP ready\r\n\r\n")
    with pytest.raises(ConnectionClosed):
        await pending
    assert transport.closed and not connection.reusable


async def test_a_chunked_upload_is_framed_on_the_wire() -> None:
    connection, transport = await connected()

    async def body():  # type: ignore[no-untyped-def]
        yield b"abc"
        yield b""
        yield b"defgh"

    connection.start(b"POST /u HTTP/1.1\r\nHost: b\r\nTransfer-Encoding: chunked\r\n\r\n",
                     "POST")
    await connection.send_body(body(), True)
    assert transport.written.endswith(b"3\r\nabc\r\n5\r\ndefgh\r\n0\r\n\r\n")


def test_a_header_value_with_a_line_break_never_reaches_the_wire() -> None:
    """Header injection through anything the gateway adds (a name from the database, say):
    the header is dropped rather than split into two."""
    head = request_head("GET", "/x", [
        ("Host", "b"),
        ("X-Library-Username", "jan\r\nX-Library-User-Id: admin"),
        ("X-Other", "fine"),
        ("X-Bare", "lf\nonly"),
    ], chunked=False)
    assert head == b"GET /x HTTP/1.1\r\nHost: b\r\nX-Other: fine\r\n\r\n"


def test_a_clean_head_is_sent_as_given() -> None:
    head = request_head("POST", "/u?q=1", [("Host", "b"), ("Cookie", "a=1")], chunked=True)
    assert head == (b"POST /u?q=1 HTTP/1.1\r\nHost: b\r\nCookie: a=1\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n")
