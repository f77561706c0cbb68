"""Held writes: what a peer receives, and when, over real sockets, on both event loops the
gateway runs on (uvloop when installed, asyncio's own otherwise)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable

import pytest
import uvloop

from gateway.proxy.coalesce import HOLD_LIMIT, Coalescer, HeldTransport


class Link:
    """One real connected pair of sockets: the loop's transport at one end, a plain socket
    (the peer) at the other."""

    def __init__(self, transport: asyncio.Transport, peer: socket.socket) -> None:
        self.transport = transport
        self.peer = peer

    def nothing_arrived(self) -> bool:
        self.peer.setblocking(False)
        try:
            self.peer.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return True
        finally:
            self.peer.setblocking(True)
        return False

    async def read_to_end(self) -> bytes:
        def read() -> bytes:
            self.peer.settimeout(10)
            received = bytearray()
            while chunk := self.peer.recv(65536):
                received += chunk
            return bytes(received)

        return await asyncio.get_running_loop().run_in_executor(None, read)

    async def read_available(self, size: int) -> bytes:
        def read() -> bytes:
            self.peer.settimeout(10)
            received = bytearray()
            while len(received) < size:
                chunk = self.peer.recv(size - len(received))
                if not chunk:
                    break
                received += chunk
            return bytes(received)

        return await asyncio.get_running_loop().run_in_executor(None, read)


class Recorded(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


Scenario = Callable[[list[Link]], Awaitable[None]]
LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def on_each_loop(scenario: Scenario) -> Callable[[str], None]:
    """A test that runs `scenario` on a fresh loop of each kind, with its links closed after."""

    @pytest.mark.parametrize("loop", list(LOOPS))
    def test(loop: str) -> None:
        async def main() -> None:
            links: list[Link] = []
            try:
                await scenario(links)
            finally:
                for made in links:
                    if not made.transport.is_closing():
                        made.transport.abort()
                    made.peer.close()

        with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
            runner.run(main())

    test.__name__ = scenario.__name__
    test.__doc__ = scenario.__doc__
    return test


async def link(links: list[Link]) -> Link:
    ours, peer = socket.socketpair()
    transport, _ = await asyncio.get_running_loop().create_connection(asyncio.Protocol, sock=ours)
    made = Link(transport, peer)
    links.append(made)
    return made


async def held(links: list[Link], coalescer: Coalescer) -> tuple[HeldTransport, Link]:
    made = await link(links)
    return coalescer.wrap(made.transport), made


async def next_pass() -> None:
    # The coalescer's callback was queued by the first held write, before this one.
    await asyncio.sleep(0)


@on_each_loop
async def test_small_writes_leave_together_at_the_end_of_the_pass(links: list[Link]) -> None:
    coalescer = Coalescer(asyncio.get_running_loop())
    first, first_peer = await held(links, coalescer)
    second, second_peer = await held(links, coalescer)
    first.write(b"GET / HTTP/1.1\r\n")
    second.write(b"HTTP/1.1 200 OK\r\n")
    first.write(b"\r\n")
    assert first_peer.nothing_arrived() and second_peer.nothing_arrived()
    assert first.get_write_buffer_size() == len(b"GET / HTTP/1.1\r\n\r\n")

    await next_pass()
    assert await first_peer.read_available(18) == b"GET / HTTP/1.1\r\n\r\n"
    assert await second_peer.read_available(17) == b"HTTP/1.1 200 OK\r\n"
    assert first.get_write_buffer_size() == 0


@on_each_loop
async def test_bytes_keep_their_order_across_held_and_streamed_writes(links: list[Link]) -> None:
    coalescer = Coalescer(asyncio.get_running_loop())
    transport, peer = await held(links, coalescer)
    big = b"b" * (HOLD_LIMIT + 1)
    transport.write(b"head;")
    transport.write(big)  # a stream: out at once, after what was held
    transport.write(b"tail;")
    transport.writelines([b"one;", bytearray(b"two;"), memoryview(b"three;")])
    transport.close()  # sends what is held, then closes
    assert await peer.read_to_end() == b"head;" + big + b"tail;one;two;three;"


@on_each_loop
async def test_a_buffer_the_caller_reuses_is_sent_as_it_was_when_written(links: list[Link]) -> None:
    transport, peer = await held(links, Coalescer(asyncio.get_running_loop()))
    buffer = bytearray(b"first")
    view = memoryview(bytearray(b"second"))
    transport.write(buffer)
    transport.write(view)
    buffer[:] = b"XXXXX"
    view[:] = b"YYYYYY"
    await next_pass()
    assert await peer.read_available(11) == b"firstsecond"


@on_each_loop
async def test_abort_sends_what_was_written_then_cuts(links: list[Link]) -> None:
    transport, peer = await held(links, Coalescer(asyncio.get_running_loop()))
    transport.write(b"HTTP/1.1 200 OK\r\n\r\npart of a bo")
    transport.abort()
    assert await peer.read_to_end() == b"HTTP/1.1 200 OK\r\n\r\npart of a bo"


@on_each_loop
async def test_bytes_for_a_connection_gone_before_the_pass_ends_are_dropped_quietly(
    links: list[Link],
) -> None:
    loop = asyncio.get_running_loop()
    errors: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    coalescer = Coalescer(loop)
    gone, _ = await held(links, coalescer)
    alive, alive_peer = await held(links, coalescer)
    gone.write(b"for nobody")
    alive.write(b"for somebody")
    links[0].transport.abort()  # the connection is lost under the held bytes
    await next_pass()
    assert await alive_peer.read_available(12) == b"for somebody"
    assert errors == []


@on_each_loop
async def test_bytes_held_while_the_transport_starts_closing_still_go_out_in_order(
    links: list[Link],
) -> None:
    """The peer half-closes while a long answer is still draining: the transport begins
    to close between a held write and its flush. What was held goes out, and before what
    is written after it, with no hole (found by review)."""
    loop = asyncio.get_running_loop()
    ours, peer = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    real, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
    links.append(Link(real, peer))
    transport = Coalescer(loop).wrap(real)
    prefix = b"P" * 200_000
    transport.write(prefix)  # a stream: straight to the real transport, mostly buffered there
    peer.shutdown(socket.SHUT_WR)  # the real transport closes itself when it reads this
    await asyncio.sleep(0)
    transport.write(b"<A>")  # held for the end of this pass
    await asyncio.sleep(0)  # the end of file is read now, the held bytes are sent after it
    await asyncio.sleep(0)
    transport.write(b"<B>")
    assert await links[-1].read_to_end() == prefix + b"<A><B>"


@on_each_loop
async def test_a_write_the_transport_refuses_cuts_only_its_own_connection(
    links: list[Link],
) -> None:
    handler = Recorded()
    logging.getLogger("gateway").addHandler(handler)
    coalescer = Coalescer(asyncio.get_running_loop())
    refusing, refusing_peer = await held(links, coalescer)
    fine, fine_peer = await held(links, coalescer)
    refusing_peer.transport.write_eof()  # the real transport now refuses any write
    refusing.write(b"after the end")
    fine.write(b"still fine")
    await next_pass()
    assert await fine_peer.read_available(10) == b"still fine"
    assert await refusing_peer.read_to_end() == b""
    assert refusing.is_closing()
    logging.getLogger("gateway").removeHandler(handler)
    assert [record.getMessage() for record in handler.records] == ["held write failed"]


@on_each_loop
async def test_writes_after_the_pass_are_held_for_the_next_one(links: list[Link]) -> None:
    transport, peer = await held(links, Coalescer(asyncio.get_running_loop()))
    transport.write(b"one")
    await next_pass()
    assert await peer.read_available(3) == b"one"
    transport.write(b"two")
    assert peer.nothing_arrived()
    await next_pass()
    assert await peer.read_available(3) == b"two"
