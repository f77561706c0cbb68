"""The server around the app (gateway.server.runner): aiohttp's own error answers tamed,
every client connection written through the coalescer, every request handed to the front
door; and the private parts of aiohttp that this rests on, each checked by name, so that an
aiohttp release which changes one fails here rather than quietly somewhere else."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable

from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.proxy.coalesce import HeldTransport
from gateway.server.front import Front
from gateway.server.runner import GatewayRequestHandler, GatewayServer

Client = TestClient[web.Request, web.Application]

REFUSED_BY_THE_PARSER = b"GET /open/x HTTP/1.1\r\nHost: x\r\nX-Probe: secret\x01marker\r\n\r\n"


async def exchange(port: int, data: bytes) -> bytes:
    """Write `data` and read the answer to the end of the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        return await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()


def server_of(gw: Client) -> web.Server:
    runner = gw.server.runner
    assert runner is not None and runner.server is not None
    return runner.server


async def test_a_request_the_parser_refuses_is_answered_without_versions_or_its_own_bytes(
    gw: Client,
) -> None:
    """aiohttp answers it before any of the gateway runs, by default with its version in the
    Server header and the offending line quoted in the body (ASVS 14.3.3)."""
    assert gw.port is not None
    answer = await exchange(gw.port, REFUSED_BY_THE_PARSER)
    head = answer.partition(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.0 400 ") or head.startswith(b"HTTP/1.1 400 "), answer
    assert b"\r\nServer: library-gateway" in head, (
        "aiohttp answers what its parser refuses by RequestHandler.handle_error"
    )
    assert b"aiohttp" not in answer and b"Python" not in answer, answer
    assert b"marker" not in answer and b"X-Probe" not in answer, answer


async def test_every_request_goes_to_the_front_door_and_every_answer_through_the_coalescer(
    gw: Client,
) -> None:
    resp = await gw.get("/open/x")
    assert resp.status == 200
    await resp.read()
    server = server_of(gw)
    assert isinstance(server, GatewayServer)
    assert isinstance(server.request_handler, Front)
    connections = server.connections  # the client keeps its connection alive
    assert connections
    for handler in connections:
        assert isinstance(handler, GatewayRequestHandler)
        assert isinstance(handler.transport, HeldTransport)


# --- aiohttp's private parts gateway.server.runner relies on ---------------------------------
# Each message names the assumption; when one fails after an upgrade, read that part of the new
# aiohttp, adapt gateway/server/runner.py and move the pin in pyproject.toml.


async def test_aiohttp_app_runner_makes_the_started_apps_server_in_make_server() -> None:
    made: list[web.Server] = []
    started: list[web.Application] = []

    class Runner(web.AppRunner):
        async def _make_server(self) -> web.Server:
            server = await super()._make_server()
            made.append(server)
            return server

    async def on_startup(app: web.Application) -> None:
        started.append(app)

    app = web.Application()
    app.on_startup.append(on_startup)
    runner = Runner(app, handler_cancellation=True, keepalive_timeout=7.0)
    await runner.setup()
    try:
        assert made == [runner.server], "AppRunner.setup() makes its server by _make_server()"
        assert started == [app], "AppRunner._make_server() starts the application first"
        (server,) = made
        assert type(server) is web.Server, "AppRunner._make_server() returns a web.Server"
        assert callable(server.request_handler), "web.Server.request_handler is the handler"
        assert callable(server.request_factory), "web.Server.request_factory makes requests"
        assert server.handler_cancellation is True, "web.Server.handler_cancellation is kept"
        kwargs = getattr(server, "_kwargs", None)
        assert isinstance(kwargs, dict) and kwargs.get("keepalive_timeout") == 7.0, (
            "web.Server keeps the keyword arguments for its request handlers in _kwargs"
        )
    finally:
        await runner.cleanup()


async def test_aiohttp_server_makes_its_request_handler_as_gateway_server_does() -> None:
    source = " ".join(inspect.getsource(web.Server.__call__).split())
    assert "RequestHandler(self, loop=self._loop, **self._kwargs)" in source, (
        "web.Server.__call__ makes RequestHandler(self, loop=self._loop, **self._kwargs), as "
        "GatewayServer.__call__ does with its own class"
    )

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response()

    server = web.Server(handler)
    assert server._loop is asyncio.get_running_loop(), "web.Server keeps its loop in _loop"


def defaults(function: Callable[..., object]) -> list[tuple[str, object]]:
    return [(p.name, p.default) for p in inspect.signature(function).parameters.values()]


def test_aiohttp_request_handler_takes_what_gateway_request_handler_passes_and_overrides() -> None:
    init = inspect.signature(web.RequestHandler.__init__).parameters
    assert list(init)[:2] == ["self", "manager"], "RequestHandler(manager, ...) takes the server"
    assert init["loop"].kind is inspect.Parameter.KEYWORD_ONLY, "RequestHandler(loop=...)"
    assert list(inspect.signature(web.RequestHandler.handle_error).parameters) == [
        "self",
        "request",
        "status",
        "exc",
        "message",
    ], "RequestHandler.handle_error(request, status, exc, message) answers its own errors"
    assert defaults(GatewayRequestHandler.handle_error) == defaults(
        web.RequestHandler.handle_error
    ), "GatewayRequestHandler.handle_error takes what aiohttp's does, with the same defaults"
    assert list(inspect.signature(web.RequestHandler.connection_made).parameters) == [
        "self",
        "transport",
    ], "RequestHandler.connection_made(transport) is where a connection's transport arrives"
