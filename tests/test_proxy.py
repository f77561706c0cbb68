"""The proxy path against real backends on loopback: what the backend receives, what the
client gets back, and how failures look."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pytest_aiohttp import AiohttpServer

from tests.helpers import (
    Gateway,
    MakeGateway,
    answer_before_the_end,
    as_chunk,
    get_bytes,
    raw_request,
    received,
    routes_for,
)


async def test_forwards_path_and_query_to_the_matching_backend(gw: Gateway) -> None:
    resp = await gw.get("/catalogue/search?q=dutch+masters&page=2")
    assert resp.status == 200
    payload = await resp.json()
    assert payload["path"] == "/catalogue/search?q=dutch+masters&page=2"


async def test_path_matching_no_route_is_404(gw: Gateway) -> None:
    resp = await gw.get("/catalogues")
    assert resp.status == 404
    assert (await resp.json())["error"] == "not_found"


@pytest.mark.parametrize(
    "target",
    [
        "/catalogue/../reservations/mine",
        "/catalogue/%2e%2e/reservations/mine",
        "/catalogue/%2E%2e/reservations/mine",
        "/catalogue/..%2freservations",
        "/catalogue/%2freservations",
        "/catalogue/..;/reservations",
        "/catalogue/%00",
        "/catalogue/%zz",
    ],
)
async def test_traversal_out_of_a_prefix_is_refused_with_400(gw: Gateway, target: str) -> None:
    assert gw.port is not None
    status, answer = await raw_request(gw.port, get_bytes(target))
    assert status == 400
    assert b"reservations" not in answer.split(b"\r\n\r\n", 1)[1]


async def test_hop_by_hop_and_connection_named_headers_are_not_forwarded(gw: Gateway) -> None:
    resp = await gw.get(
        "/catalogue/x",
        headers={
            "Connection": "keep-alive, X-Secret-Hop",
            "X-Secret-Hop": "should-vanish",
            "Keep-Alive": "timeout=5",
            "Proxy-Authorization": "Basic Zm9vOmJhcg==",
            "TE": "trailers",
            "X-Kept": "yes",
        },
    )
    seen = received(await resp.json())
    for name in ("x-secret-hop", "keep-alive", "proxy-authorization", "te"):
        assert name not in seen
    assert seen["x-kept"] == ["yes"]


@pytest.mark.parametrize(
    "name",
    [
        "X-Library-User-Id",
        "x-library-username",
        "X_Library_User_Id",
        "X-Library.Pass-Number",
        "X-LIBRARY-IDENTITY",
    ],
)
async def test_client_sent_identity_headers_never_reach_the_backend(gw: Gateway, name: str) -> None:
    resp = await gw.get("/catalogue/", headers={name: "admin"})
    seen = received(await resp.json())
    assert not [h for h in seen if h.replace("_", "-").replace(".", "-").startswith("x-library")]


async def test_forwarding_headers_come_from_the_gateway_not_the_client(gw: Gateway) -> None:
    resp = await gw.get(
        "/catalogue/",
        headers={
            "X-Forwarded-For": "6.6.6.6",
            "X-Forwarded-Host": "evil.example",
            "X-Forwarded-Proto": "https",
            "Forwarded": "for=6.6.6.6",
            "X-Real-IP": "6.6.6.6",
            "X-Original-URL": "/reservations/admin",
            "X-HTTP-Method-Override": "DELETE",
        },
    )
    seen = received(await resp.json())
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["http"]
    # No GATEWAY_PUBLIC_URL: the default is http://HOST:PORT of the listener settings.
    assert seen["x-forwarded-host"] == ["127.0.0.1:8080"]
    for name in ("forwarded", "x-real-ip", "x-original-url", "x-http-method-override"):
        assert name not in seen


async def test_forwarded_host_and_proto_follow_the_public_url(
    make_gateway: MakeGateway, backend: TestServer
) -> None:
    gw = await make_gateway(
        routes_for(backend.port), env={"GATEWAY_PUBLIC_URL": "https://login.library.example"}
    )
    resp = await gw.get("/catalogue/", headers={"Host": "evil.example"})
    seen = received(await resp.json())
    assert seen["x-forwarded-host"] == ["login.library.example"]
    assert seen["x-forwarded-proto"] == ["https"]
    assert seen["host"] == [f"127.0.0.1:{backend.port}"]
    assert resp.headers["Strict-Transport-Security"].startswith("max-age=")


async def test_request_id_kept_when_sane_and_replaced_when_not(gw: Gateway) -> None:
    resp = await gw.get("/catalogue/", headers={"X-Request-Id": "abc-123"})
    assert resp.headers["X-Request-Id"] == "abc-123"
    assert received(await resp.json())["x-request-id"] == ["abc-123"]
    resp = await gw.get("/catalogue/", headers={"X-Request-Id": "<script>" * 40})
    rid = resp.headers["X-Request-Id"]
    assert rid != "<script>" * 40 and len(rid) == 32
    assert received(await resp.json())["x-request-id"] == [rid]


async def test_server_banner_has_no_version(gw: Gateway) -> None:
    resp = await gw.get("/catalogue/")
    assert resp.headers["Server"] == "library-gateway"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


async def test_required_route_sends_browsers_to_login_with_the_original_target(
    gw: Gateway,
) -> None:
    resp = await gw.get(
        "/reservations/mine?sort=date",
        allow_redirects=False,
        headers={"Accept": "text/html,application/xhtml+xml"},
    )
    assert resp.status == 302
    assert resp.headers["Location"] == "/auth/login?next=%2Freservations%2Fmine%3Fsort%3Ddate"


async def test_required_route_answers_other_clients_401_json(gw: Gateway) -> None:
    resp = await gw.get("/reservations/mine", headers={"Accept": "application/json"})
    assert resp.status == 401
    body = await resp.json()
    assert body == {
        "error": "authentication_required",
        "login_url": "/auth/login?next=%2Freservations%2Fmine",
    }


async def test_public_sub_path_of_a_required_route_needs_no_login(gw: Gateway) -> None:
    resp = await gw.get("/reservations/opening-hours")
    assert resp.status == 200
    resp = await gw.get("/reservations/opening-hours-extended")
    assert resp.status == 401


async def test_backend_refusing_connections_is_502(make_gateway: MakeGateway) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    gw = await make_gateway(routes_for(dead_port))
    resp = await gw.get("/catalogue/", headers={"Accept": "text/html"})
    assert resp.status == 502
    text = await resp.text()
    assert "Traceback" not in text and "aiohttp" not in text
    assert resp.headers["Content-Type"].startswith("text/html")
    resp = await gw.get("/catalogue/")
    assert (await resp.json())["error"] == "bad_gateway"


def stalled_app(released: asyncio.Event) -> web.Application:
    """A backend that answers nothing until `released` is set."""

    async def stall(request: web.Request) -> web.Response:
        await released.wait()
        return web.Response()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", stall)
    return app


async def test_backend_too_slow_is_504(
    make_gateway: MakeGateway, aiohttp_server: AiohttpServer
) -> None:
    # The backend never answers, so whatever the route's timeout, its passing is a 504.
    never = asyncio.Event()
    slow = await aiohttp_server(stalled_app(never))
    gw = await make_gateway(
        routes_for(slow.port).replace("auth: optional", "auth: optional\n    timeout: 0.2", 1)
    )
    resp = await gw.get("/catalogue/slow")
    assert resp.status == 504
    assert (await resp.json())["error"] == "gateway_timeout"
    never.set()  # let the stalled backend finish, so its connection closes cleanly


# A route timeout the prompt answers below come well within (a loopback backend answers in
# milliseconds, however busy the machine), and that the paused upload is shown to outlast.
IN_TIME = 2.0


async def test_a_slow_upload_on_a_reused_connection_is_not_taken_for_a_slow_backend(
    make_gateway: MakeGateway, aiohttp_server: AiohttpServer
) -> None:
    """The route's timeout counts from the end of the upload: a patron whose upload pauses for
    longer than the timeout still gets the backend's answer, also on a backend connection that
    an earlier request (with its own deadline) used a moment before.

    No clock decides how long the pause is: it lasts until a request to a backend that never
    answers, on a route with the same timeout and sent once the upload had reached the
    backend, was answered 504. By then the earlier request's deadline has passed too."""
    upload_arrived = asyncio.Event()
    client_ports: list[int] = []

    async def answer_at_once(request: web.Request) -> web.Response:
        assert request.transport is not None
        client_ports.append(request.transport.get_extra_info("peername")[1])
        if request.path.endswith("/upload"):
            upload_arrived.set()
        body = await request.read()
        return web.json_response({"body_length": len(body)})

    prompt = web.Application()
    prompt.router.add_route("*", "/{tail:.*}", answer_at_once)
    backend = await aiohttp_server(prompt)
    never = asyncio.Event()
    stalled = await aiohttp_server(stalled_app(never))
    gw = await make_gateway(
        f"""\
routes:
  - name: catalogue
    prefix: /catalogue
    backend: http://127.0.0.1:{backend.port}
    auth: optional
    timeout: {IN_TIME}
  - name: stalled
    prefix: /stalled
    backend: http://127.0.0.1:{stalled.port}
    auth: public
    timeout: {IN_TIME}
"""
    )
    assert (await gw.get("/catalogue/first")).status == 200

    paused, resume = asyncio.Event(), asyncio.Event()

    async def pausing_upload() -> AsyncIterator[bytes]:
        yield b"first half, "
        paused.set()
        await resume.wait()  # the patron's slow line
        yield b"second half"

    upload = asyncio.ensure_future(gw.post("/catalogue/upload", data=pausing_upload()))
    await paused.wait()
    await upload_arrived.wait()
    assert (await gw.get("/stalled/meanwhile")).status == 504
    resume.set()
    resp = await upload
    assert resp.status == 200
    assert (await resp.json())["body_length"] == len(b"first half, second half")
    [first, then] = client_ports
    assert then == first, "the upload went over a new backend connection, not the reused one"
    never.set()


async def test_backend_cookies_pass_but_the_gateway_cookie_is_neither_forwarded_nor_settable(
    make_gateway: MakeGateway, aiohttp_server: AiohttpServer
) -> None:
    async def cookies(request: web.Request) -> web.Response:
        resp = web.json_response({"cookie": request.headers.get("Cookie")})
        resp.headers.add("Set-Cookie", "backend_pref=dark; Path=/catalogue")
        resp.headers.add("Set-Cookie", "library_session=planted; Path=/")
        resp.headers.add("Set-Cookie", "LIBRARY_SESSION=planted2; Path=/")
        return resp

    app = web.Application()
    app.router.add_get("/{tail:.*}", cookies)
    server = await aiohttp_server(app)
    gw = await make_gateway(routes_for(server.port))
    resp = await gw.get(
        "/catalogue/", headers={"Cookie": "backend_pref=light; library_session=abc"}
    )
    assert (await resp.json())["cookie"] == "backend_pref=light"
    set_cookies = resp.headers.getall("Set-Cookie")
    assert any(c.startswith("backend_pref=dark") for c in set_cookies)
    assert not any("planted" in c for c in set_cookies)


async def test_large_download_streams_through(
    make_gateway: MakeGateway, aiohttp_server: AiohttpServer
) -> None:
    size = 48 * 1024 * 1024
    block = bytes(range(256)) * 256

    async def download(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = size
        await resp.prepare(request)
        for _ in range(size // len(block)):
            await resp.write(block)
        return resp

    app = web.Application()
    app.router.add_get("/{tail:.*}", download)
    server = await aiohttp_server(app)
    gw = await make_gateway(routes_for(server.port))
    resp = await gw.get("/catalogue/book.pdf")
    assert resp.status == 200
    assert resp.headers["Content-Length"] == str(size)
    digest, total = hashlib.sha256(), 0
    async for chunk in resp.content.iter_any():
        digest.update(chunk)
        total += len(chunk)
    assert total == size
    expected = hashlib.sha256(block * (size // len(block))).hexdigest()
    assert digest.hexdigest() == expected


async def test_large_chunked_upload_streams_through(gw: Gateway) -> None:
    size = 40 * 1024 * 1024

    async def body() -> AsyncIterator[bytes]:
        for _ in range(size // (1024 * 1024)):
            yield b"u" * (1024 * 1024)

    resp = await gw.post("/catalogue/upload", data=body())
    payload = await resp.json()
    assert payload["body_length"] == size
    assert "transfer-encoding" in received(payload)


async def test_upload_with_content_length_keeps_it(gw: Gateway) -> None:
    resp = await gw.put("/catalogue/item", data=b"x" * 100_000)
    payload = await resp.json()
    assert payload["body_length"] == 100_000
    assert received(payload)["content-length"] == ["100000"]


async def test_route_upload_limit_answers_413(
    make_gateway: MakeGateway, backend: TestServer
) -> None:
    gw = await make_gateway(
        routes_for(backend.port).replace("auth: optional", "auth: optional\n    max_body: 1KiB", 1)
    )
    resp = await gw.post("/catalogue/upload", data=b"x" * 4096)
    assert resp.status == 413


async def test_a_streamed_upload_over_the_limit_is_refused_while_it_is_still_coming_in(
    make_gateway: MakeGateway, backend: TestServer
) -> None:
    """Without a length to refuse up front, the limit is applied as the body streams: 2 KiB
    of a 1 KiB route's upload are sent and the body is never finished, yet the 413 comes.
    A gateway that buffered the upload before judging it would still be waiting for the
    end."""
    gw = await make_gateway(
        routes_for(backend.port).replace("auth: optional", "auth: optional\n    max_body: 1KiB", 1)
    )
    assert gw.port is not None
    head = await answer_before_the_end(
        gw.port,
        "POST /catalogue/upload HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n",
        as_chunk(b"x" * 1024) + as_chunk(b"x" * 1024),
    )
    assert head.startswith(b"HTTP/1.1 413 ")


async def expect_continue(port: int, target: str, length: int = 5) -> tuple[bytes, bytes]:
    """Ask to upload with `Expect: 100-continue`: the first answer line the gateway gives
    before any body is sent, then (the body sent anyway) the status line of the final answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            (
                f"POST {target} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {length}"
                "\r\nExpect: 100-continue\r\nAccept: application/json\r\n"
                "Connection: close\r\n\r\n"
            ).encode()
        )
        async with asyncio.timeout(10):  # a client waiting for the 100 would give up too
            first = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n", 1)[0]
        if first.startswith(b"HTTP/1.1 100 "):
            writer.write(b"x" * length)
            final = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n", 1)[0]
        else:
            final = first
        return first, final
    finally:
        writer.close()
        await writer.wait_closed()


async def test_an_upload_that_expects_100_continue_gets_it_and_reaches_the_backend(
    gw: Gateway,
) -> None:
    """curl and aiohttp's client wait for "100 Continue" before sending a body (found by
    review: the proxy path stopped sending it, and such uploads hung)."""
    assert gw.port is not None
    assert await expect_continue(gw.port, "/catalogue/upload") == (
        b"HTTP/1.1 100 Continue",
        b"HTTP/1.1 200 OK",
    )
    resp = await gw.post("/catalogue/upload", data=b"x" * 10_000, expect100=True)
    assert (await resp.json())["body_length"] == 10_000
    # The gateway answered the expectation; the backend gets the body outright.
    assert "expect" not in received(await resp.json())


async def test_an_upload_the_gateway_will_refuse_is_not_invited(
    make_gateway: MakeGateway, backend: TestServer
) -> None:
    """No "100 Continue" for a body that would be refused anyway: the refusal comes first,
    and the client need not send it."""
    gw = await make_gateway(
        routes_for(backend.port).replace("auth: optional", "auth: optional\n    max_body: 1KiB", 1)
    )
    assert gw.port is not None
    assert await expect_continue(gw.port, "/reservations/mine") == (
        b"HTTP/1.1 401 Unauthorized",
        b"HTTP/1.1 401 Unauthorized",
    )
    assert await expect_continue(gw.port, "/catalogue/upload", length=4096) == (
        b"HTTP/1.1 413 Request Entity Too Large",
        b"HTTP/1.1 413 Request Entity Too Large",
    )


async def test_an_expectation_other_than_100_continue_is_refused(gw: Gateway) -> None:
    assert gw.port is not None
    status, answer = await raw_request(
        gw.port,
        (
            b"POST /catalogue/upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n"
            b"Expect: teapot\r\nConnection: close\r\n\r\n"
        ),
    )
    assert status == 417
    assert b"Server: library-gateway" in answer


async def test_websocket_is_proxied_both_ways(
    make_gateway: MakeGateway, aiohttp_server: AiohttpServer
) -> None:
    async def ws_echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("chat",))
        await ws.prepare(request)
        await ws.send_str(
            json.dumps({"path": request.path, "forwarded": request.headers.get("X-Forwarded-For")})
        )
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str("echo:" + message.data)
            elif message.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(message.data[::-1])
        return ws

    app = web.Application()
    app.router.add_get("/{tail:.*}", ws_echo)
    server = await aiohttp_server(app)
    gw = await make_gateway(routes_for(server.port))
    async with gw.ws_connect("/catalogue/live", protocols=("chat",)) as ws:
        assert ws.protocol == "chat"
        hello = json.loads((await ws.receive()).data)
        assert hello == {"path": "/catalogue/live", "forwarded": "127.0.0.1"}
        await ws.send_str("hi")
        assert (await ws.receive()).data == "echo:hi"
        await ws.send_bytes(b"abc")
        assert (await ws.receive()).data == b"cba"
        await ws.close()


async def test_websocket_on_a_required_route_needs_a_session(gw: Gateway) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await gw.ws_connect("/reservations/live")
    assert info.value.status == 401


async def test_health_endpoints(gw: Gateway) -> None:
    resp = await gw.get("/healthz")
    assert resp.status == 200
    resp = await gw.get("/readyz")
    assert resp.status == 200
    assert (await resp.json())["database"] is True
