"""The demo's stand-in services and mail catcher, exercised directly (no gateway in front)."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import io
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from email.message import EmailMessage

import aiosmtplib
import jwt
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient

from gateway.demo.backends import (
    BOOKS,
    book_chunks,
    catalogue_app,
    digital_app,
    reservations_app,
    search_books,
)
from gateway.demo.mailcatcher import MailCatcher

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]

PATRON = {
    "X-Library-User-Id": "7f3c2a10-0001",
    "X-Library-Username": "ada",
    "X-Library-Pass-Number": "20240001",
}


def identity_token(**claims: object) -> str:
    # Any key will do: the demo decodes without verifying, and says so on the page.
    body: dict[str, object] = {
        "sub": "7f3c2a10-0001",
        "aud": "catalogue",
        "iss": "http://127.0.0.1:8080",
    }
    body.update(claims)
    return jwt.encode(body, "demo-key-of-thirty-two-bytes-min", algorithm="HS256")


# --- what the pages show -------------------------------------------------------------------


async def test_anonymous_catalogue_says_not_logged_in_and_offers_sign_in(
    aiohttp_client: ClientFactory,
) -> None:
    client = await aiohttp_client(catalogue_app())
    response = await client.get("/catalogue/", headers={"X-Request-Id": "req-42"})
    page = await response.text()
    assert response.status == 200
    assert "not logged in" in page
    assert "Welcome, guest." in page
    assert 'href="/auth/login?next=/catalogue/"' in page
    assert "req-42" in page


async def test_catalogue_greets_patron_and_shows_every_forwarded_header(
    aiohttp_client: ClientFactory,
) -> None:
    client = await aiohttp_client(catalogue_app())
    headers = {
        **PATRON,
        "X-Request-Id": "req-43",
        "X-Forwarded-For": "198.51.100.7",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "login.library.example",
    }
    page = await (await client.get("/catalogue", headers=headers)).text()
    assert "Welcome back, ada." in page
    assert "not logged in" not in page
    for value in [*PATRON.values(), "req-43", "198.51.100.7", "https", "login.library.example"]:
        assert f"<td>{value}</td>" in page
    assert "<td>absent</td>" in page  # no X-Library-Identity was sent


async def test_markup_in_headers_and_token_claims_is_escaped(
    aiohttp_client: ClientFactory,
) -> None:
    client = await aiohttp_client(catalogue_app())
    headers = {
        **PATRON,
        "X-Library-Username": "<script>alert(1)</script>",
        "X-Library-Identity": identity_token(sub='"><img src=x onerror=alert(2)>'),
    }
    page = await (await client.get("/catalogue/", headers=headers)).text()
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x" not in page
    assert "&lt;img src=x onerror=alert(2)&gt;" in page


async def test_identity_token_claims_are_shown_with_a_warning(
    aiohttp_client: ClientFactory,
) -> None:
    client = await aiohttp_client(catalogue_app())
    token = identity_token(exp=1_900_000_000)
    page = await (
        await client.get("/catalogue/", headers={**PATRON, "X-Library-Identity": token})
    ).text()
    assert "<td>present</td>" in page
    assert "<th>claim sub</th><td>7f3c2a10-0001</td>" in page
    assert "<th>claim aud</th><td>catalogue</td>" in page
    assert "<th>claim iss</th><td>http://127.0.0.1:8080</td>" in page
    assert "<td>1900000000 (2030-03-17 17:46:40 UTC)</td>" in page
    assert "<em>without</em> checking the signature" in page


async def test_an_unreadable_identity_token_is_reported_not_a_server_error(
    aiohttp_client: ClientFactory,
) -> None:
    client = await aiohttp_client(catalogue_app())
    response = await client.get("/catalogue/", headers={"X-Library-Identity": "not.a.jwt"})
    page = await response.text()
    assert response.status == 200
    assert "<td>present</td>" in page
    assert "unreadable:" in page

    far_future = identity_token(exp=10**30)
    response = await client.get("/catalogue/", headers={"X-Library-Identity": far_future})
    assert response.status == 200
    assert f"{10**30} (not a date)" in await response.text()


# --- catalogue -----------------------------------------------------------------------------


async def test_search_ignores_accents_and_links_to_reserve_and_read(
    aiohttp_client: ClientFactory,
) -> None:
    client = await aiohttp_client(catalogue_app())
    page = await (await client.get("/catalogue/search", params={"q": "BRONTE"})).text()
    assert "2 results for “BRONTE”" in page
    assert "<cite>Jane Eyre</cite>" in page
    assert "<cite>Wuthering Heights</cite>" in page
    assert 'href="/reservations/reserve/jane-eyre"' in page
    assert 'href="/digital/read/jane-eyre"' in page
    assert "Moby-Dick" not in page


async def test_search_without_a_match_says_so(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(catalogue_app())
    page = await (await client.get("/catalogue/search", params={"q": "<b>zzz"})).text()
    assert "0 results for “&lt;b&gt;zzz”" in page
    assert "Nothing matches" in page


def test_search_needs_every_word_and_an_empty_query_lists_everything() -> None:
    assert [book.id for book in search_books("tolstoy 1878")] == ["anna-karenina"]
    assert search_books("") == list(BOOKS)
    assert len(BOOKS) >= 30
    assert any(book.digital for book in BOOKS) and not all(book.digital for book in BOOKS)


# --- reservations --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/reservations/"),
        ("GET", "/reservations/reserve/emma"),
        ("POST", "/reservations/reserve/emma"),
    ],
)
async def test_reservations_refuse_a_request_without_identity(
    aiohttp_client: ClientFactory, method: str, path: str
) -> None:
    client = await aiohttp_client(reservations_app())
    response = await client.request(method, path, headers={"X-Library-Username": "ada"})
    assert response.status == 401
    assert await response.text() == "no identity"


async def test_a_reservation_is_confirmed_then_listed_for_that_user_only(
    aiohttp_client: ClientFactory,
) -> None:
    client = await aiohttp_client(reservations_app())
    form = await (await client.get("/reservations/reserve/moby-dick", headers=PATRON)).text()
    assert '<form method="post" action="/reservations/reserve/moby-dick">' in form

    response = await client.post(
        "/reservations/reserve/moby-dick",
        data={"book_id": "moby-dick"},
        headers=PATRON,
        allow_redirects=False,
    )
    assert response.status == 303
    assert response.headers["Location"] == "/reservations/"

    mine = await (await client.get("/reservations/", headers=PATRON)).text()
    assert "<cite>Moby-Dick</cite>" in mine
    other = {**PATRON, "X-Library-User-Id": "someone-else"}
    theirs = await (await client.get("/reservations/", headers=other)).text()
    assert "Moby-Dick" not in theirs
    assert "no reservations yet" in theirs


async def test_reserving_an_unknown_book_is_not_found(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(reservations_app())
    response = await client.post("/reservations/reserve/no-such-book", headers=PATRON)
    assert response.status == 404
    assert "We have no such book." in await response.text()


async def test_opening_hours_need_no_identity(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(reservations_app())
    response = await client.get("/reservations/opening-hours")
    page = await response.text()
    assert response.status == 200
    assert "Saturday" in page
    assert "not logged in" in page


# --- digital -------------------------------------------------------------------------------


def expected_digest(book_id: str, size: int) -> str:
    digest = hashlib.sha256()
    for chunk in book_chunks(book_id, size):
        digest.update(chunk)
    return digest.hexdigest()


def test_book_content_is_deterministic_and_exactly_sized() -> None:
    size = 3 * 64 * 1024 + 11
    chunks = list(book_chunks("emma", size))
    assert [len(chunk) for chunk in chunks] == [65536, 65536, 65536, 11]
    assert chunks == list(book_chunks("emma", size))
    assert len(set(chunks)) == len(chunks)  # a repeated or reordered chunk would show
    assert b"".join(chunks) != b"".join(book_chunks("frankenstein", size))
    assert b"".join(book_chunks("emma", 0)) == b""


async def test_download_streams_the_announced_size_with_a_stable_checksum(
    aiohttp_client: ClientFactory,
) -> None:
    size = 5 * 64 * 1024 + 123  # not a whole number of chunks
    client = await aiohttp_client(digital_app(book_size=size))
    digests = []
    for _ in range(2):
        response = await client.get("/digital/download/moby-dick", headers=PATRON)
        assert response.status == 200
        assert response.headers["Content-Length"] == str(size)
        assert response.headers["Content-Type"] == "application/octet-stream"
        digest = hashlib.sha256()
        received = 0
        async for chunk in response.content.iter_chunked(8192):
            digest.update(chunk)
            received += len(chunk)
        assert received == size
        digests.append(digest.hexdigest())
    assert digests == [expected_digest("moby-dick", size)] * 2


async def test_only_books_with_a_digital_copy_can_be_read_or_downloaded(
    aiohttp_client: ClientFactory,
) -> None:
    client = await aiohttp_client(digital_app(book_size=2048))
    reader = await client.get("/digital/read/frankenstein", headers=PATRON)
    assert reader.status == 200
    page = await reader.text()
    assert 'href="/digital/download/frankenstein"' in page
    assert "2.0 KiB" in page
    for path in ["/digital/read/ulysses", "/digital/download/ulysses"]:
        assert (await client.get(path, headers=PATRON)).status == 404


async def test_upload_is_counted_and_hashed_as_it_streams_in(
    aiohttp_client: ClientFactory,
) -> None:
    client = await aiohttp_client(digital_app())
    piece = hashlib.sha256(b"upload").digest() * 4096  # 128 KiB
    pieces = 40  # 5 MiB, sent without a Content-Length

    async def body() -> AsyncIterator[bytes]:
        for _ in range(pieces):
            yield piece

    response = await client.post("/digital/upload", data=body(), headers=PATRON)
    assert response.status == 200
    assert await response.json() == {
        "bytes": len(piece) * pieces,
        "sha256": hashlib.sha256(piece * pieces).hexdigest(),
    }


async def test_websocket_names_the_user_then_echoes(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(digital_app())
    async with client.ws_connect("/digital/ws", headers=PATRON) as ws:
        assert await ws.receive_json() == {"user_id": "7f3c2a10-0001", "username": "ada"}
        await ws.send_str("hello <library>")
        assert await ws.receive_str() == "hello <library>"
        await ws.send_bytes(b"\x00\x01\xff")
        assert await ws.receive_bytes() == b"\x00\x01\xff"
        await ws.close()
        assert (await ws.receive()).type is WSMsgType.CLOSED


async def test_websocket_without_identity_says_so(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(digital_app())
    async with client.ws_connect("/digital/ws") as ws:
        assert await ws.receive_json() == {"user_id": None, "username": None}


# --- mail catcher --------------------------------------------------------------------------


@pytest.fixture
def catcher() -> Iterator[tuple[MailCatcher, io.StringIO]]:
    out = io.StringIO()
    mail_catcher = MailCatcher(out=out, keep=2)
    mail_catcher.start()
    try:
        yield mail_catcher, out
    finally:
        mail_catcher.stop()


def a_mail(subject: str, body: str = "Hello.") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "no-reply@library.example"
    message["To"] = "ada@example.org"
    message["Subject"] = subject
    message.set_content(body)
    return message


async def send(catcher: MailCatcher, message: EmailMessage) -> None:
    await aiosmtplib.send(message, hostname=catcher.host, port=catcher.port)


async def test_mail_catcher_listens_on_a_real_ephemeral_port(
    catcher: tuple[MailCatcher, io.StringIO],
) -> None:
    mail_catcher, _ = catcher
    assert mail_catcher.port != 0
    assert mail_catcher.url == f"smtp://127.0.0.1:{mail_catcher.port}"
    _, writer = await asyncio.open_connection("127.0.0.1", mail_catcher.port)
    writer.close()
    await writer.wait_closed()


# Whether the catcher has taken a hang-up in by the time it stops is a race: run it a few times.
@pytest.mark.parametrize("client", ["stays", *["hangs-up-at-once"] * 4])
async def test_stopping_the_mail_catcher_closes_the_connections_it_still_has(client: str) -> None:
    """A connection on the catcher's side when it stops (a client that stays, one that has
    just hung up, one still being accepted) is closed by the catcher, not left to the
    garbage collector as an unclosed socket (a ResourceWarning in the demo's and the tests'
    output)."""
    mail_catcher = MailCatcher(out=io.StringIO())
    mail_catcher.start()
    port = mail_catcher.port
    reader, writer = await asyncio.open_connection(mail_catcher.host, port)
    try:
        if client == "hangs-up-at-once":
            writer.close()
            await writer.wait_closed()
        else:
            assert (await reader.readline()).startswith(b"220 ")  # the session has begun
        gc.collect()  # what other tests left for the collector is not this test's to judge
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            await asyncio.get_running_loop().run_in_executor(None, mail_catcher.stop)
            gc.collect()
        # Sockets of the catcher's port: its listening one and the connection's server side.
        assert [
            str(w.message)
            for w in caught
            if w.category is ResourceWarning and f"', {port})" in str(w.message)
        ] == []
        if client == "stays":
            assert await asyncio.wait_for(reader.read(), 10) == b""
    finally:
        writer.close()
        await writer.wait_closed()


async def test_mail_catcher_prints_a_real_mail_with_links_on_their_own_lines(
    catcher: tuple[MailCatcher, io.StringIO],
) -> None:
    mail_catcher, out = catcher
    link = "http://127.0.0.1:8080/auth/reset-password?token=abc123"
    await send(mail_catcher, a_mail("Reset your password", f"To choose one, open {link}. Thanks"))
    received = await mail_catcher.wait_for(lambda m: m["Subject"] == "Reset your password")
    assert received["To"] == "ada@example.org"
    printed = out.getvalue().splitlines()
    assert "From:    no-reply@library.example" in printed
    assert "To:      ada@example.org" in printed
    assert "Subject: Reset your password" in printed
    assert link in printed
    assert "To choose one, open" in printed


async def test_wait_for_wakes_when_the_matching_mail_arrives_later(
    catcher: tuple[MailCatcher, io.StringIO],
) -> None:
    mail_catcher, _ = catcher
    waiting = asyncio.create_task(mail_catcher.wait_for(lambda m: m["Subject"] == "second"))
    await send(mail_catcher, a_mail("first"))
    assert not waiting.done()
    await send(mail_catcher, a_mail("second"))
    assert (await waiting)["Subject"] == "second"


async def test_wait_for_gives_up_when_nothing_matches(
    catcher: tuple[MailCatcher, io.StringIO],
) -> None:
    mail_catcher, _ = catcher
    await send(mail_catcher, a_mail("unrelated"))
    with pytest.raises(TimeoutError):
        await mail_catcher.wait_for(lambda m: m["Subject"] == "never sent", timeout=0.2)


async def test_mail_catcher_keeps_only_the_latest_mails(
    catcher: tuple[MailCatcher, io.StringIO],
) -> None:
    mail_catcher, _ = catcher
    for subject in ["one", "two", "three"]:
        await send(mail_catcher, a_mail(subject))
    await mail_catcher.wait_for(lambda m: m["Subject"] == "three")
    assert [m["Subject"] for m in mail_catcher.messages] == ["two", "three"]


def test_a_stopped_catcher_frees_its_port() -> None:
    mail_catcher = MailCatcher(out=io.StringIO())
    mail_catcher.start()
    port = mail_catcher.port
    mail_catcher.stop()
    with MailCatcher(port=port, out=io.StringIO()) as again:
        assert again.port == port
