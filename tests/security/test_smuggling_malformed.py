"""Request smuggling and malformed HTTP, over a raw socket, judged at the backend.

A front proxy and its backend that disagree on where one request ends let an attacker hide a
second request inside the first: it skips the gateway's access decision and lands on the
backend, or poisons the next patron's response. So every shape below is sent as raw bytes,
followed on the same connection by an innocent sentinel request, and the recording backend
reports exactly what arrived. The gateway must either refuse the shape (400, connection
closed, nothing forwarded, the bytes after it never read as a request) or forward it as one
request framed in one unambiguous way that it chose itself. The same holds for answers from
a backend on their way to the patron, and for the one body the gateway parses itself, the
/auth/ form: one shape is read, everything else is a clean 400.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from urllib.parse import quote

import asyncpg
import pytest

from auth.credentials.passwords import PasswordHasher
from tests.helpers import PASSWORD, Gateway, MakeGateway, add_patron, form_token, routes_for
from tests.security.wire import RecordingBackend, exchange, statuses

# The request smuggled inside the attacks: on a route that needs a login, so reaching the
# backend at all would be a bypass of the access decision.
SMUGGLED = b"GET /reservations/mine HTTP/1.1\r\nHost: x\r\n\r\n"
SENTINEL = b"GET /open/sentinel HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def post(headers: bytes, body: bytes, *, version: bytes = b"HTTP/1.1") -> bytes:
    return b"POST /open/upload " + version + b"\r\nHost: x\r\n" + headers + b"\r\n" + body


@pytest.fixture
async def gw(make_gateway: MakeGateway, recorder: RecordingBackend) -> Gateway:
    return await make_gateway(routes_for(recorder.port))


async def send(gw: Gateway, attack: bytes) -> list[int]:
    assert gw.port is not None
    return statuses(await exchange(gw.port, attack + SENTINEL))


def assert_nothing_forwarded(recorder: RecordingBackend) -> None:
    assert recorder.requests == []
    assert recorder.faults == []


# --- Shapes that must be refused outright ---------------------------------------------------

REFUSED = [
    pytest.param(
        post(b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n" + SMUGGLED),
        id="CL.TE-RFC9112-6.3-aiohttp-CVE-2023-47641",
    ),
    pytest.param(
        post(b"Transfer-Encoding: chunked\r\nContent-Length: 80\r\n", b"0\r\n\r\n" + SMUGGLED),
        id="TE.CL-RFC9112-6.3-ASVS-13.1.1",
    ),
    pytest.param(
        post(b"Content-Length: 0\r\nContent-Length: 45\r\n", SMUGGLED),
        id="two-different-CL-ASVS-13.1.1",
    ),
    pytest.param(
        post(b"Content-Length: 45\r\nContent-Length: 45\r\n", SMUGGLED),
        id="two-equal-CL-ASVS-13.1.1",
    ),
    pytest.param(post(b"Content-Length: 45, 45\r\n", SMUGGLED), id="CL-list-ASVS-13.1.1"),
    pytest.param(post(b"Content-Length: +45\r\n", SMUGGLED), id="CL-signed-ASVS-13.1.1"),
    pytest.param(
        post(b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n" + SMUGGLED),
        id="TE-xchunked-aiohttp-CVE-2023-47641",
    ),
    pytest.param(
        post(b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n" + SMUGGLED),
        id="TE-space-before-colon-aiohttp-CVE-2024-23829",
    ),
    pytest.param(
        post(b"Transfer-Encoding?: chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n"),
        id="TE-name-not-a-token-aiohttp-CVE-2024-23829",
    ),
    pytest.param(
        post(b"Transfer-Encoding: \x0bchunked\r\n", b"0\r\n\r\n" + SMUGGLED),
        id="TE-vertical-tab-aiohttp-CVE-2024-23829",
    ),
    pytest.param(
        post(b"Transfer-Encoding: chunked, identity\r\n", b"0\r\n\r\n" + SMUGGLED),
        id="TE-chunked-not-last-RFC9112-6.3-ASVS-13.1.1",
    ),
    pytest.param(
        post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n", b"0\r\n\r\n" + SMUGGLED),
        id="TE-twice-ASVS-13.1.1",
    ),
    pytest.param(
        post(b"Transfer-Encoding:\r\n chunked\r\n", b"0\r\n\r\n" + SMUGGLED),
        id="TE-obs-fold-CVE-2022-32215",
    ),
    pytest.param(
        post(b"X-Padding: a\r\n Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n"),
        id="obs-fold-hides-TE-CVE-2022-32213",
    ),
    pytest.param(
        post(b"X-Abc: \rxTransfer-Encoding: chunked\r\n", b"0\r\n\r\n" + SMUGGLED),
        id="bare-CR-in-value-aiohttp-CVE-2023-37276",
    ),
    pytest.param(
        post(b"X-Abc: a\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n" + SMUGGLED),
        id="bare-LF-ends-field-CVE-2022-35256",
    ),
    pytest.param(
        post(b"Transfer-Encoding: chunked\r\n", b"-1\r\nA\r\n0\r\n\r\n"),
        id="chunk-size-negative-ASVS-13.1.1",
    ),
    pytest.param(
        post(b"Transfer-Encoding: chunked\r\n", b"0x2d\r\n" + SMUGGLED + b"\r\n"),
        id="chunk-size-0x-prefix-ASVS-13.1.1",
    ),
    pytest.param(
        post(b"Transfer-Encoding: chunked\r\n", b"2 d\r\n" + SMUGGLED + b"\r\n"),
        id="chunk-size-with-space-ASVS-13.1.1",
    ),
    pytest.param(
        post(
            b"Transfer-Encoding: chunked\r\n",
            b"10000000000000002d\r\n" + SMUGGLED + b"\r\n0\r\n\r\n",
        ),
        id="chunk-size-overflow-ASVS-5.4.3",
    ),
    pytest.param(
        post(b"Transfer-Encoding: chunked\r\n", b"5;a\nb\r\nhello\r\n0\r\n\r\n" + SMUGGLED),
        id="LF-in-chunk-extension-aiohttp-CVE-2024-52304",
    ),
    pytest.param(
        post(b"Transfer-Encoding: chunked\r\n", b"5\nhello\r\n0\r\n\r\n" + SMUGGLED),
        id="bare-LF-after-chunk-size-CVE-2025-22871",
    ),
    pytest.param(
        post(b"Transfer-Encoding: chunked\r\n", b"3\r\nhello\r\n0\r\n\r\n"),
        id="chunk-longer-than-its-size-ASVS-13.1.1",
    ),
    pytest.param(
        post(
            b"Transfer-Encoding: chunked\r\n",
            b"5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n" + SMUGGLED,
        ),
        id="TE-in-trailer-aiohttp-CVE-2025-53643",
    ),
    pytest.param(
        post(
            b"Transfer-Encoding: chunked\r\n",
            b"5\r\nhello\r\n0\r\nContent-Length: 45\r\n\r\n" + SMUGGLED,
        ),
        id="CL-in-trailer-aiohttp-CVE-2025-53643",
    ),
    pytest.param(
        post(b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n" + SMUGGLED, version=b"HTTP/1.0"),
        id="TE-on-HTTP/1.0-RFC9112-6.1-ASVS-13.1.1",
    ),
    pytest.param(
        b"GET /open/a HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
        id="NUL-in-header-value-ASVS-5.1.3",
    ),
    pytest.param(
        b"G\x01ET /open/a HTTP/1.1\r\nHost: x\r\n\r\n",
        id="control-char-in-method-aiohttp-CVE-2023-49082",
    ),
    pytest.param(
        b"GET /open/a HTTP/1.\xf0\x9d\x9f\x99\r\nHost: x\r\n\r\n",
        id="unicode-digit-in-version-aiohttp-CVE-2024-23829",
    ),
    pytest.param(
        b"GET /open/a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", id="two-Host-headers-ASVS-13.1.1"
    ),
]


@pytest.mark.parametrize("attack", REFUSED)
async def test_an_ambiguous_request_is_refused_and_nothing_reaches_the_backend(
    gw: Gateway, recorder: RecordingBackend, attack: bytes
) -> None:
    """Each id names the smuggling technique and the advisory it comes from. A single 400 and
    a closed connection also prove the bytes after the bad request (the smuggled request and
    the sentinel) were never read as requests of their own."""
    assert await send(gw, attack) == [400]
    assert_nothing_forwarded(recorder)


# --- Shapes the gateway may accept, but only to forward in its own framing -------------------

REFRAMED = [
    pytest.param(
        b"Transfer-Encoding: identity, chunked\r\n",
        b"identity-chunked",
        id="TE-identity-then-chunked-RFC9112-6.1-ASVS-13.1.1",
    ),
    pytest.param(
        b"Transfer-Encoding: gzip, chunked\r\n",
        b"gzip-chunked",
        id="TE-coding-list-RFC9112-6.1-ASVS-13.1.1",
    ),
    pytest.param(
        b"Transfer-Encoding:\tchunked\r\n", b"tab-ows", id="TE-tab-as-OWS-RFC9110-5.6.3-ASVS-13.1.1"
    ),
    pytest.param(
        b"Transfer-Encoding: CHUNKED\r\n", b"upper-case", id="TE-upper-case-RFC9112-7-ASVS-13.1.1"
    ),
]


@pytest.mark.parametrize(("headers", "payload"), REFRAMED)
async def test_an_accepted_chunked_body_is_forwarded_as_one_request_in_the_gateways_framing(
    gw: Gateway, recorder: RecordingBackend, headers: bytes, payload: bytes
) -> None:
    """The backend must never see the client's Transfer-Encoding list or a second framing
    header: only the body the gateway read, framed once (ASVS 13.1.1)."""
    chunked = b"%x;ext=1\r\n%s\r\n0\r\n\r\n" % (len(payload), payload)
    assert await send(gw, post(headers, chunked)) == [200, 200]
    assert recorder.faults == []
    first, sentinel = recorder.requests
    assert (first.method, first.target, first.body) == ("POST", "/open/upload", payload)
    assert first.all("Transfer-Encoding") == ["chunked"]
    assert first.all("Content-Length") == []
    assert sentinel.target == "/open/sentinel"


async def test_a_request_inside_a_body_stays_body_data(
    gw: Gateway, recorder: RecordingBackend
) -> None:
    """The classic smuggling payload, sent honestly: a body that looks like a request must
    arrive as that body, never as a second request (ASVS 13.1.1)."""
    attack = post(b"Content-Length: %d\r\n" % len(SMUGGLED), SMUGGLED)
    assert await send(gw, attack) == [200, 200]
    assert [(r.method, r.target) for r in recorder.requests] == [
        ("POST", "/open/upload"),
        ("GET", "/open/sentinel"),
    ]
    assert recorder.requests[0].body == SMUGGLED
    assert recorder.requests[0].all("Content-Length") == [str(len(SMUGGLED))]
    assert recorder.faults == []


async def test_a_get_with_a_body_cannot_smuggle_its_body_as_a_request(
    gw: Gateway, recorder: RecordingBackend
) -> None:
    """A GET with Content-Length is where lenient front ends stop reading (the "0.CL"
    desync); the gateway forwards the body with the GET, so the backend reads it the same
    way (ASVS 13.1.1)."""
    attack = (
        b"GET /open/page HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(SMUGGLED)
    ) + SMUGGLED
    assert await send(gw, attack) == [200, 200]
    assert [r.target for r in recorder.requests] == ["/open/page", "/open/sentinel"]
    assert recorder.requests[0].body == SMUGGLED
    assert recorder.faults == []


async def test_trailer_fields_are_never_forwarded(gw: Gateway, recorder: RecordingBackend) -> None:
    """A trailer section can carry what the header section may not (an identity, a forged
    client address) past a proxy that only filters headers (aiohttp CVE-2025-53643,
    GHSA-9548-qrrj-x5pj)."""
    body = (
        b"5\r\nhello\r\n0\r\nX-Library-User-Id: 00000000-0000-0000-0000-000000000001\r\n"
        b"X-Forwarded-For: 6.6.6.6\r\n\r\n"
    )
    attack = post(
        b"Transfer-Encoding: chunked\r\nTrailer: X-Library-User-Id, X-Forwarded-For\r\n"
        b"TE: trailers\r\n",
        body,
    )
    assert await send(gw, attack) == [200, 200]
    upload = recorder.requests[0]
    assert upload.body == b"hello"
    assert upload.trailers == []
    names = {name.lower() for name, _ in upload.headers}
    assert not names & {"x-library-user-id", "trailer", "te"}
    assert upload.all("X-Forwarded-For") == ["127.0.0.1"]
    assert recorder.faults == []


@pytest.mark.parametrize(
    "target",
    [
        pytest.param(b"http://evil.example/open/a", id="absolute-form-to-foreign-host-ASVS-12.6.1"),
        pytest.param(b"http://x/reservations/mine", id="absolute-form-own-route-ASVS-13.1.1"),
        pytest.param(b"*", id="asterisk-form-ASVS-14.5.1"),
    ],
)
async def test_a_target_that_is_not_a_path_is_refused_without_reaching_any_backend(
    gw: Gateway, recorder: RecordingBackend, target: bytes
) -> None:
    """The gateway is not a forward proxy: an absolute-form target must not make it fetch
    another host (SSRF) nor be matched differently from its path."""
    attack = b"OPTIONS " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    # The request is well-formed HTTP, so the connection stays usable for the sentinel.
    assert await send(gw, attack) == [400, 200]
    assert [r.target for r in recorder.requests] == ["/open/sentinel"]


async def test_connect_opens_no_tunnel(gw: Gateway, recorder: RecordingBackend) -> None:
    """CONNECT would turn the gateway into an open proxy (ASVS 12.6.1)."""
    attack = b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n"
    # Refused as a request, not taken as a tunnel: what follows is read as the next request.
    assert await send(gw, attack) == [400, 200]
    assert [r.target for r in recorder.requests] == ["/open/sentinel"]


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\npoison!",
            id="response-CL.TE-ASVS-13.1.1",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 30\r\n\r\nok",
            id="response-two-CL-ASVS-13.1.1",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nX-A: a\r\n Content-Length: 1\r\nContent-Length: 2\r\n\r\nok",
            id="response-obs-fold-CVE-2022-32213",
        ),
    ],
)
async def test_a_backend_answer_with_ambiguous_framing_never_reaches_the_client(
    make_gateway: MakeGateway, answer: bytes
) -> None:
    """A compromised or buggy backend must not be able to split its answer into two and
    poison the next response on the patron's connection (response queue poisoning)."""
    raw = await through_gateway(make_gateway, answer)
    assert statuses(raw) == [502]
    assert b"poison" not in raw


async def test_a_backend_body_that_breaks_its_framing_is_cut_off_not_completed(
    make_gateway: MakeGateway,
) -> None:
    """Once the status line has gone out, the only honest signal left is a broken
    connection: the patron's client must see an incomplete body, never a completed one nor
    the backend's second "response" after it (CVE-2025-22871, bare LF after a chunk size)."""
    raw = await through_gateway(
        make_gateway,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\npoison!",
    )
    assert statuses(raw) == [200]
    assert b"poison" not in raw
    # The body, not the whole answer: a request id ending in 0 would end the head in "0\r\n\r\n".
    _head, body = raw.split(b"\r\n\r\n", 1)
    assert not body.endswith(b"0\r\n\r\n")


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param([b"X-Huge: " + b"h" * (1024 * 1024)], id="one-field-of-1-MiB"),
        pytest.param(
            [b"X-Many-%d: %s" % (n, b"h" * 1000) for n in range(1000)], id="1000-fields-of-1-KiB"
        ),
    ],
)
async def test_a_backend_answer_with_a_huge_head_is_502_and_never_relayed(
    make_gateway: MakeGateway, fields: list[bytes]
) -> None:
    """A compromised or broken backend that answers with megabytes of header fields would
    have the gateway hold them all in memory, for every patron it answers that way, and pass
    them on to browsers that refuse them (nginx answers such a backend 502, "upstream sent
    too big header"; ASVS 12.1.1 applies to what the gateway reads from backends too)."""
    answer = b"HTTP/1.1 200 OK\r\n" + b"\r\n".join(fields) + b"\r\nContent-Length: 2\r\n\r\nok"
    raw = await through_gateway(make_gateway, answer)
    assert statuses(raw) == [502]
    assert b"hhhh" not in raw


async def test_a_backend_answer_with_a_large_but_ordinary_head_is_relayed(
    make_gateway: MakeGateway,
) -> None:
    """The limit leaves room for what real backends send: forty cookies of 600 bytes."""
    cookies = [b"Set-Cookie: c%d=%s; Path=/" % (n, b"v" * 600) for n in range(40)]
    answer = b"HTTP/1.1 200 OK\r\n" + b"\r\n".join(cookies) + b"\r\nContent-Length: 2\r\n\r\nok"
    raw = await through_gateway(make_gateway, answer)
    assert statuses(raw) == [200]
    assert raw.count(b"Set-Cookie: c") == 40


async def through_gateway(make_gateway: MakeGateway, answer: bytes) -> bytes:
    """What a client gets for one request whose backend answers exactly `answer`."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        # The gateway may hang up before it has read an answer it refuses.
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        gw = await make_gateway(routes_for(server.sockets[0].getsockname()[1]))
        assert gw.port is not None
        return await exchange(
            gw.port,
            b"GET /open/x HTTP/1.1\r\nHost: x\r\nConnection: close"
            b"\r\nAccept: application/json\r\n\r\n",
        )
    finally:
        server.close()
        await server.wait_closed()


# --- Malformed login forms ------------------------------------------------------------------

FORM = "application/x-www-form-urlencoded"


def malformed(kind: str, token: str, name: str) -> tuple[bytes, str]:
    """A login body of the given kind, carrying this session's CSRF token and the patron's
    right credentials, so a lenient reader would log in."""
    right = f"csrf_token={token}&username={name}&password={quote(PASSWORD)}"
    bodies = {
        "duplicate-username": (right + "&username=someone-else", FORM),
        "duplicate-password": (
            f"csrf_token={token}&username={name}&password=wrong&password={quote(PASSWORD)}",
            FORM,
        ),
        "duplicate-csrf-token": (right + f"&csrf_token={token}", FORM),
        "json": (
            json.dumps({"csrf_token": token, "username": name, "password": PASSWORD}),
            "application/json",
        ),
        "multipart": (
            "".join(
                f'--b\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'
                for key, value in (
                    ("csrf_token", token),
                    ("username", name),
                    ("password", PASSWORD),
                )
            )
            + "--b--\r\n",
            "multipart/form-data; boundary=b",
        ),
        "text-plain": (right, "text/plain"),
        "octet-stream": (right, "application/octet-stream"),
        "invalid-utf8-escaped": (right + "&next=%ff%fe", FORM),
        "nul-in-value": (right.replace("&password=", "&password=%00"), FORM),
        "sixty-fields": (right + "".join(f"&f{n}=x" for n in range(60)), FORM),
    }
    body, content_type = bodies[kind]
    return body.encode(), content_type


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("duplicate-username", id="duplicate-username-ASVS-5.1.1"),
        pytest.param("duplicate-password", id="duplicate-password-ASVS-5.1.1"),
        pytest.param("duplicate-csrf-token", id="duplicate-csrf-token-ASVS-5.1.1"),
        pytest.param("json", id="json-ASVS-13.1.5"),
        pytest.param("multipart", id="multipart-ASVS-13.1.5"),
        pytest.param("text-plain", id="text-plain-ASVS-13.1.5"),
        pytest.param("octet-stream", id="octet-stream-ASVS-13.1.5"),
        pytest.param("invalid-utf8-escaped", id="invalid-utf8-ASVS-5.1.4"),
        pytest.param("nul-in-value", id="NUL-in-value-ASVS-5.1.4"),
        pytest.param("sixty-fields", id="too-many-fields-ASVS-11.1.4"),
    ],
)
async def test_a_malformed_login_form_is_400_never_an_error_and_never_a_login(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, kind: str
) -> None:
    """Two readers of one form that disagree on which `username` counts (parameter
    pollution), or a reader that accepts other encodings, are ways past a login check. The
    form reader takes one shape only and refuses the rest whole."""
    patron = await add_patron(pool, hasher)
    token = await form_token(gw)
    body, content_type = malformed(kind, token, patron.username)
    resp = await gw.post(
        "/auth/login", data=body, allow_redirects=False, headers={"Content-Type": content_type}
    )
    assert resp.status == 400
    still = await gw.get("/reservations/mine", headers={"Accept": "application/json"})
    assert still.status == 401


async def test_raw_bytes_that_are_not_utf8_are_refused(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """Undecodable bytes in a form body are a 400, not a crash (ASVS 5.1.4, 7.4.1)."""
    patron = await add_patron(pool, hasher)
    token = await form_token(gw)
    body = f"csrf_token={token}&username={patron.username}&password=".encode() + b"\xff\xfe"
    resp = await gw.post(
        "/auth/login", data=body, allow_redirects=False, headers={"Content-Type": FORM}
    )
    assert resp.status == 400


async def test_a_semicolon_does_not_split_form_fields(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """CVE-2021-23336: readers that also split on ';' see other fields than readers that do
    not. Here `;password=…` stays part of the username, so the login simply fails."""
    patron = await add_patron(pool, hasher)
    token = await form_token(gw)
    body = f"csrf_token={token}&username={patron.username};password={quote(PASSWORD)}"
    resp = await gw.post(
        "/auth/login", data=body.encode(), allow_redirects=False, headers={"Content-Type": FORM}
    )
    assert resp.status == 401
    still = await gw.get("/reservations/mine", headers={"Accept": "application/json"})
    assert still.status == 401


@pytest.mark.parametrize(
    "version",
    [
        pytest.param(b"HTTP/0.9", id="HTTP-0.9-RFC9112-2.3"),
        pytest.param(b"HTTP/2.0", id="HTTP-2.0-in-an-HTTP-1-request-line-RFC9112-2.3"),
    ],
)
async def test_a_version_other_than_http_1_is_refused_with_505_and_nothing_is_forwarded(
    gw: Gateway, recorder: RecordingBackend, version: bytes
) -> None:
    """aiohttp's parser takes these request lines (others, such as HTTP/1.2 or HTTP/3.0, it
    refuses with 400 itself), and a proxy that forwarded them as 1.1 would answer in a
    version it does not speak ("HTTP/0.9 200") after reading a framing the client may not
    have meant (RFC 9110 6.2, RFC 9112 2.3; ASVS 13.1.1). The answer is a 505 in HTTP/1.1
    and the connection closes, on a route and on the gateway's own paths alike."""
    assert gw.port is not None
    for target in (b"/open/x", b"/healthz"):
        answer = await exchange(gw.port, b"GET " + target + b" " + version + b"\r\nHost: x\r\n\r\n")
        head = answer.partition(b"\r\n\r\n")[0]
        assert head.startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n"), answer
        assert b"\r\nServer: library-gateway" in head, answer
        assert statuses(answer) == [505], answer
    assert_nothing_forwarded(recorder)


async def test_http_1_0_is_still_forwarded(gw: Gateway, recorder: RecordingBackend) -> None:
    assert gw.port is not None
    answer = await exchange(gw.port, b"GET /open/x HTTP/1.0\r\nHost: x\r\n\r\n")
    assert statuses(answer) == [200], answer
    assert [r.target for r in recorder.requests] == ["/open/x"]
