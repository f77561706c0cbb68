"""Bytes on the wire, for the attacks no HTTP client library will send.

`exchange` writes exactly the given bytes to the gateway and reads everything until the
gateway closes the connection. `RecordingBackend` is a backend that reads HTTP/1.1 by hand,
strictly, and keeps every request exactly as it arrived, so a test can tell what the gateway
really sent on: how many requests, with which framing, which headers, body and trailer
fields. Anything a lenient server might read two ways (Content-Length beside
Transfer-Encoding, two lengths, a coding other than plain `chunked`, a folded or bare-LF line,
a malformed chunk) is recorded as a fault, and the connection dropped, instead of being
guessed at.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from dataclasses import dataclass, field

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,8}")
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) ")


@dataclass
class Received:
    """One request as the backend read it."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    trailers: list[tuple[str, str]] = field(default_factory=list)

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


class FramingFault(Exception):
    """The bytes could be read as more than one message."""


class RecordingBackend:
    """A loopback backend that answers each request with `{"n": <its index>}`."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.faults: list[str] = []
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    request = await _read_request(reader)
                except FramingFault as exc:
                    self.faults.append(str(exc))
                    return
                if request is None:
                    return
                self.requests.append(request)
                body = json.dumps({"n": len(self.requests) - 1}).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    line = await reader.readuntil(b"\n")
    if not line.endswith(b"\r\n") or b"\r" in line[:-2]:
        raise FramingFault(f"line not ended by CRLF alone: {line!r}")
    return line[:-2]


async def _read_fields(reader: asyncio.StreamReader) -> list[tuple[str, str]]:
    fields: list[tuple[str, str]] = []
    while line := await _read_line(reader):
        if line[:1] in (b" ", b"\t"):
            raise FramingFault(f"obsolete line folding: {line!r}")
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise FramingFault(f"malformed field line: {line!r}")
        fields.append((name.decode("ascii"), value.strip(b" \t").decode("latin-1")))
    return fields


async def _read_request(reader: asyncio.StreamReader) -> Received | None:
    try:
        request_line = await _read_line(reader)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise FramingFault(f"connection closed mid-line: {exc.partial!r}") from None
        return None
    parts = request_line.split(b" ")
    if len(parts) != 3 or parts[2] != b"HTTP/1.1" or not _TOKEN.fullmatch(parts[0]):
        raise FramingFault(f"malformed request line: {request_line!r}")
    headers = await _read_fields(reader)
    lengths = [v for k, v in headers if k.lower() == "content-length"]
    codings = [v for k, v in headers if k.lower() == "transfer-encoding"]
    received = Received(parts[0].decode(), parts[1].decode("latin-1"), headers, b"")
    if lengths and codings:
        raise FramingFault("both Content-Length and Transfer-Encoding")
    if len(lengths) > 1 or len(codings) > 1:
        raise FramingFault("framing header sent twice")
    if codings:
        if codings[0] != "chunked":
            raise FramingFault(f"transfer coding {codings[0]!r}")
        body = bytearray()
        while True:
            size_line = await _read_line(reader)
            if not _CHUNK_SIZE.fullmatch(size_line):
                raise FramingFault(f"chunk size line {size_line!r}")
            size = int(size_line, 16)
            if size == 0:
                break
            body += await reader.readexactly(size)
            if await _read_line(reader) != b"":
                raise FramingFault("chunk data longer than its size")
        received.trailers = await _read_fields(reader)
        received.body = bytes(body)
    elif lengths:
        if not lengths[0].isdigit():
            raise FramingFault(f"Content-Length {lengths[0]!r}")
        received.body = await reader.readexactly(int(lengths[0]))
    return received


GIVE_UP = 30.0
"""Seconds after which a raw exchange stops waiting: only bounds a test that would otherwise
hang, it is never part of a check."""


async def exchange(port: int, data: bytes) -> bytes:
    """Send `data` as it is and return every byte the gateway answers until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(GIVE_UP):
            return await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def statuses(answer: bytes) -> list[int]:
    """The status codes of every response in a stream of answers, in order.

    Responses are split by their Content-Length, so a body that happens to hold a status
    line is not counted; a response without one runs to the end of the stream.
    """
    found = []
    rest = answer
    while rest:
        head, sep, rest = rest.partition(b"\r\n\r\n")
        match = _STATUS_LINE.match(head)
        if not sep or match is None:
            raise AssertionError(f"not an HTTP response: {head[:80]!r}")
        found.append(int(match.group(1)))
        length = re.search(rb"\r\ncontent-length: *(\d+)", head, re.IGNORECASE)
        rest = rest[int(length.group(1)) :] if length else b""
    return found


def head_of(answer: bytes) -> str:
    """The status line and headers of the first response."""
    return answer.split(b"\r\n\r\n", 1)[0].decode("latin-1")
