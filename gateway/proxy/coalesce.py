"""Small writes held to the end of the event loop's pass and sent together.

A proxied request makes two small writes: its head to the backend and the answer to the
patron. A write that finds its reader asleep wakes it, and when the reader is on the same
machine (a backend beside the gateway, the TLS terminator in front of it) that wake-up is an
interrupt to another core which costs the writer more than the write: a fifth of the
gateway's CPU under load, measured with perf. Held to the end of the pass, the writes of
every request the loop handled in it go out back to back, and a reader woken by the first
finds the rest ready without another wake-up.

Nothing waits longer than the pass the loop is already in: microseconds when the gateway is
idle, about a millisecond at full load. Bytes for one connection keep their order, whatever
mix of held and direct writes made them; a write large enough to be a stream rather than a
head goes out at once, after anything held before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("gateway")

# Bigger writes are streamed bodies: holding them saves nothing and would hide them from
# the transport's flow control for a pass.
HOLD_LIMIT = 64 * 1024


class Coalescer:
    """The writes held during one pass of `loop`, sent by one callback at its end."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._holding: list[HeldTransport] = []

    def wrap(self, transport: asyncio.Transport) -> HeldTransport:
        return HeldTransport(transport, self)

    def hold(self, transport: HeldTransport) -> None:
        if not self._holding:
            self._loop.call_soon(self._send)
        self._holding.append(transport)

    def _send(self) -> None:
        holding, self._holding = self._holding, []
        for transport in holding:
            try:
                transport.flush()
            except Exception:
                # No caller is left to hand the error to: cut the connection, so its peer
                # sees it end rather than wait for bytes that will not come.
                log.exception("held write failed")
                transport.drop()


class HeldTransport(asyncio.Transport):
    """A transport whose small writes wait for the coalescer; everything else is the real
    transport's."""

    __slots__ = ("_coalescer", "_held", "_held_size", "_real")

    def __init__(self, real: asyncio.Transport, coalescer: Coalescer) -> None:
        super().__init__()
        self._real = real
        self._coalescer = coalescer
        self._held: list[bytes] = []
        self._held_size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        size = len(data)
        if not size:
            return
        if self._held_size + size > HOLD_LIMIT or self._real.is_closing():
            self.flush()
            self._real.write(data)
            return
        if not self._held:
            self._coalescer.hold(self)
        # A bytearray or memoryview may be reused by the caller before the pass ends;
        # bytes(data) of bytes is the same object, no copy.
        self._held.append(bytes(data))
        self._held_size += size

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        """Send what is held now (the coalescer does this at the end of the pass)."""
        held = self._held
        if not held:
            return
        self._held = []
        self._held_size = 0
        data = held[0] if len(held) == 1 else b"".join(held)
        if self._real.is_closing():
            # Closing since these were written: a transport still draining takes them (and
            # would take any later write, so they must not leave a hole); one that is gone
            # for good refuses them, as it would have refused the write.
            with contextlib.suppress(RuntimeError):
                self._real.write(data)
            return
        self._real.write(data)

    def drop(self) -> None:
        """Cut the connection, and what is held with it."""
        self._held = []
        self._held_size = 0
        self._real.abort()

    def get_write_buffer_size(self) -> int:
        return self._real.get_write_buffer_size() + self._held_size

    def close(self) -> None:
        self.flush()
        self._real.close()

    def write_eof(self) -> None:
        self.flush()
        self._real.write_eof()

    def abort(self) -> None:
        # What was written before is sent, as it would have been without holding: the peer
        # sees the bytes and then the cut (a status line, then a body broken off).
        self.flush()
        self._real.abort()

    # -- the rest is the real transport's ---------------------------------------------------

    def is_closing(self) -> bool:
        return self._real.is_closing()

    def can_write_eof(self) -> bool:
        return self._real.can_write_eof()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._real.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._real.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._real.get_protocol()

    def is_reading(self) -> bool:
        return self._real.is_reading()

    def pause_reading(self) -> None:
        self._real.pause_reading()

    def resume_reading(self) -> None:
        self._real.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._real.set_write_buffer_limits(high, low)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._real.get_write_buffer_limits()
