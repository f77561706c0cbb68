"""One keep-alive HTTP/1.1 connection to a backend, as an asyncio protocol.

The proxy path's client: it writes the request head in one `write`, streams the body with
flow control, parses the answer with httptools (llhttp, the parser Node.js uses) and hands the
body over chunk by chunk, pausing the backend socket while the patron's side is slow. It does
far less than a general HTTP client (no redirects, cookies, decompression or header
normalisation), which is exactly what a proxy wants, and it is several times cheaper per
request than aiohttp's client.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import cast

import httptools

from gateway.proxy.coalesce import Coalescer

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
MAX_HEAD_BYTES = 64 * 1024
"""The largest answer head taken from a backend (its 1xx heads included); a larger one is
refused like a broken answer (502), rather than held in memory and passed on to browsers,
which refuse far less (nginx allows 4 or 8 KiB by default)."""


class ConnectionClosed(ConnectionError):
    """The backend closed the connection; `sent_nothing` says no answer byte arrived."""

    def __init__(self, sent_nothing: bool) -> None:
        super().__init__("backend closed the connection")
        self.sent_nothing = sent_nothing


_REASONS = {status.value: status.phrase for status in HTTPStatus}
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})


class ResponseHead:
    """A backend's response: status and headers at once, the body as it arrives."""

    __slots__ = ("headers", "reason", "status")

    def __init__(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.status = status
        self.headers = headers
        self.reason = _REASONS.get(status, "Unknown")


class BackendConnection(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop, coalescer: Coalescer | None = None) -> None:
        self._loop = loop
        # Request heads wait for the end of the loop's pass, to go out with the others.
        self._coalescer = coalescer
        self.transport: asyncio.Transport | None = None
        # One parser for the connection's life: llhttp starts on the next answer by itself.
        # A new one is made only after an answer to HEAD, whose Content-Length it would wait on.
        self._parser: httptools.HttpResponseParser | None = None
        self._expecting = False
        self._head: asyncio.Future[ResponseHead] | None = None
        # The answer's deadline is watched by one timer per connection, not one per request:
        # it fires at `_watch_at` and, if a later request is waiting by then, is set again for
        # that one's `_head_due`. Answers come in milliseconds, deadlines are seconds away.
        self._watch: asyncio.TimerHandle | None = None
        self._watch_at = 0.0
        self._head_due = math.inf  # no deadline until `response_head`: an upload takes its time
        self._header_items: list[tuple[str, str]] = []
        self._header_name = b""
        # The answer's head so far, counted two ways (the fields parsed, and the reads that
        # ended with the head still incomplete): each is at most the head's size.
        self._head_fields = 0
        self._head_read = 0
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._data_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._read_paused = False
        self._complete = False
        self._no_body = False
        self._received_any = False
        self._until_close = False
        self._framed = False
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        real = cast(asyncio.Transport, transport)
        self.transport = real if self._coalescer is None else self._coalescer.wrap(real)

    def data_received(self, data: bytes) -> None:
        self._received_any = True
        if not self._expecting or self._parser is None:
            # Bytes nobody asked for: the backend is not speaking HTTP/1.1 correctly.
            self._abort()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail(ConnectionClosed(sent_nothing=False))
            self._abort()
            return
        head = self._head
        if head is not None and not head.done():
            # One field too long for a single read never reaches `on_header`; count it here.
            self._head_read += len(data)
            if self._head_read > MAX_HEAD_BYTES:
                self._fail(ConnectionClosed(sent_nothing=False))
                self._abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_watch()
        self.closed = True
        self.reusable = False
        if self._head is not None and not self._head.done():
            self._fail_head(ConnectionClosed(sent_nothing=not self._received_any))
        elif self._until_close and not self._complete:
            # A body without length ends when the backend closes the connection.
            self._complete = True
        elif not self._complete:
            self._fail(ConnectionClosed(sent_nothing=False))
        self._wake_reader()
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_exception(ConnectionClosed(sent_nothing=False))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    # -- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if not self._expecting:
            # A second answer behind the one asked for, in the same read: the backend is out
            # of step, and whatever it sends next cannot be trusted to belong to anything.
            raise ConnectionClosed(sent_nothing=False)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_fields += len(name) + len(value)
        if self._head_fields > MAX_HEAD_BYTES:
            raise ConnectionClosed(sent_nothing=False)  # the parser fails; see data_received
        if name.lower() in _FRAMING:
            self._framed = True
        self._header_items.append((name.decode("latin-1"), value.decode("utf-8", "replace")))

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            # An interim answer (103 Early Hints, a stray 100): the real one follows.
            self._header_items = []
            self._framed = False
            return
        if self._head is not None and not self._head.done():
            headers, self._header_items = self._header_items, []
            self._until_close = not self._framed and not self._no_body and status not in (204, 304)
            self._head.set_result(ResponseHead(status, headers))
            if self._no_body or status in (204, 304):
                self._finish()

    def on_body(self, body: bytes) -> None:
        if self._no_body:
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._read_paused and self.transport:
            self.transport.pause_reading()
            self._read_paused = True
        self._wake_reader()

    def on_message_complete(self) -> None:
        if self._head is not None and not self._head.done():
            return  # the end of an interim (1xx) message
        if not self._complete:
            self._finish()

    # -- used by the pool and the proxy -----------------------------------------------------

    def start(self, head: bytes, method: str) -> None:
        """Write the request head (the body, if any, follows with `send_body`)."""
        assert self.transport is not None
        if self._parser is None:
            self._parser = httptools.HttpResponseParser(self)
        self._expecting = True
        self._head_due = math.inf
        self._head = self._loop.create_future()
        self._header_items = []
        self._head_fields = self._head_read = 0
        self._chunks.clear()
        self._buffered = 0
        self._complete = self._until_close = self._received_any = self._framed = False
        self._no_body = method == "HEAD"
        self.reusable = False
        self.transport.write(head)

    async def send_body(self, body: AsyncIterator[bytes], chunked: bool) -> None:
        assert self.transport is not None
        async for chunk in body:
            if not chunk:
                continue
            if chunked:
                self.transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
            else:
                self.transport.write(chunk)
            if self._write_paused:
                await self._drain()
        if chunked:
            self.transport.write(b"0\r\n\r\n")

    def response_head(self, timeout: float) -> asyncio.Future[ResponseHead]:
        """The answer's head; the future fails with TimeoutError (and the connection is
        dropped) when the head has not arrived within `timeout` seconds."""
        head = self._head
        assert head is not None
        if not head.done():
            self._head_due = self._loop.time() + timeout
            if self._watch is None or self._head_due < self._watch_at:
                self._watch_until(self._head_due)
        return head

    async def _drain(self) -> None:
        if self.closed:
            raise ConnectionClosed(sent_nothing=False)
        self._drain_waiter = self._loop.create_future()
        try:
            await self._drain_waiter
        finally:
            self._drain_waiter = None

    async def body(self) -> AsyncIterator[bytes]:
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._read_paused and self._buffered < LOW_WATER and self.transport:
                    self._read_paused = False
                    self.transport.resume_reading()
                yield chunk
                continue
            if self._complete:
                return
            if self.closed:
                raise ConnectionClosed(sent_nothing=False)
            self._data_waiter = self._loop.create_future()
            try:
                await self._data_waiter
            finally:
                self._data_waiter = None

    @property
    def complete(self) -> bool:
        return self._complete

    def whole_body(self) -> bytes | None:
        """The entire body when it has already arrived (a small answer in one read), so
        the proxy can send head and body to the client in one write; None otherwise."""
        if not self._complete or self._until_close:
            return None
        body = b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        return body

    def close(self) -> None:
        self._stop_watch()
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True

    # -- internals --------------------------------------------------------------------------

    def _finish(self) -> None:
        self._complete = True
        parser = self._parser
        self.reusable = (
            parser is not None
            and parser.should_keep_alive()
            and not self._until_close
            and not self.closed
        )
        self._expecting = False
        if self._no_body or not self.reusable:
            self._parser = None
        self._wake_reader()

    def _fail(self, exc: Exception) -> None:
        if self._head is not None and not self._head.done():
            self._fail_head(exc)
        self.closed = True
        self._wake_reader()

    def _fail_head(self, exc: Exception) -> None:
        assert self._head is not None
        self._head.set_exception(exc)

    def _watch_until(self, when: float) -> None:
        self._stop_watch()
        self._watch_at = when
        self._watch = self._loop.call_at(when, self._watched)

    def _stop_watch(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    def _watched(self) -> None:
        self._watch = None
        head = self._head
        if head is None or head.done() or self.closed or self._head_due == math.inf:
            return  # no answer awaited against a deadline now; `answer` sets the watch again
        if self._loop.time() < self._head_due:
            self._watch_until(self._head_due)  # a later request is waiting
            return
        head.set_exception(TimeoutError())
        self.closed = True
        self._abort()

    def _wake_reader(self) -> None:
        waiter = self._data_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _abort(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()
