"""Stand-in library services for `library-gateway demo`: catalogue, reservations, digital.

A gateway is invisible when it works, so these services make it visible: every page shows
the identity and forwarding headers that reached it, and the digital service streams large
bodies and WebSockets so a person can watch the proxy carry them. They play the part of
other teams' code, which is why they name the headers themselves instead of importing them
from the gateway.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jinja2
import jwt
from aiohttp import WSMsgType, web

CHUNK_SIZE = 64 * 1024


@dataclass(frozen=True)
class Book:
    id: str
    title: str
    author: str
    year: int
    digital: bool = False  # a digital copy exists (public-domain works)


BOOKS: tuple[Book, ...] = (
    Book("pride-and-prejudice", "Pride and Prejudice", "Jane Austen", 1813, True),
    Book("emma", "Emma", "Jane Austen", 1815, True),
    Book("frankenstein", "Frankenstein", "Mary Shelley", 1818, True),
    Book("the-count-of-monte-cristo", "The Count of Monte Cristo", "Alexandre Dumas", 1844, True),
    Book("jane-eyre", "Jane Eyre", "Charlotte Brontë", 1847, True),
    Book("wuthering-heights", "Wuthering Heights", "Emily Brontë", 1847, True),
    Book("moby-dick", "Moby-Dick", "Herman Melville", 1851, True),
    Book("bleak-house", "Bleak House", "Charles Dickens", 1853),
    Book("madame-bovary", "Madame Bovary", "Gustave Flaubert", 1857, True),
    Book("max-havelaar", "Max Havelaar", "Multatuli", 1860, True),
    Book("great-expectations", "Great Expectations", "Charles Dickens", 1861, True),
    Book("les-miserables", "Les Misérables", "Victor Hugo", 1862, True),
    Book("crime-and-punishment", "Crime and Punishment", "Fyodor Dostoevsky", 1866, True),
    Book("war-and-peace", "War and Peace", "Leo Tolstoy", 1869),
    Book("middlemarch", "Middlemarch", "George Eliot", 1871, True),
    Book("anna-karenina", "Anna Karenina", "Leo Tolstoy", 1878),
    Book("the-brothers-karamazov", "The Brothers Karamazov", "Fyodor Dostoevsky", 1880),
    Book("don-quixote", "Don Quixote", "Miguel de Cervantes", 1605, True),
    Book("the-canterbury-tales", "The Canterbury Tales", "Geoffrey Chaucer", 1400, True),
    Book("swanns-way", "Swann's Way", "Marcel Proust", 1913),
    Book("ulysses", "Ulysses", "James Joyce", 1922),
    Book("the-magic-mountain", "The Magic Mountain", "Thomas Mann", 1924),
    Book("the-trial", "The Trial", "Franz Kafka", 1925),
    Book("mrs-dalloway", "Mrs Dalloway", "Virginia Woolf", 1925),
    Book("the-great-gatsby", "The Great Gatsby", "F. Scott Fitzgerald", 1925),
    Book("things-fall-apart", "Things Fall Apart", "Chinua Achebe", 1958),
    Book("one-hundred-years", "One Hundred Years of Solitude", "Gabriel García Márquez", 1967),
    Book("the-name-of-the-rose", "The Name of the Rose", "Umberto Eco", 1980),
    Book("beloved", "Beloved", "Toni Morrison", 1987),
    Book("the-discovery-of-heaven", "The Discovery of Heaven", "Harry Mulisch", 1992),
)
_BOOKS_BY_ID = {book.id: book for book in BOOKS}

OPENING_HOURS: tuple[tuple[str, str], ...] = (
    ("Monday to Friday", "09:00-20:00"),
    ("Saturday", "10:00-17:00"),
    ("Sunday and public holidays", "closed"),
)

_SHOWN_CLAIMS = ("sub", "aud", "iss", "exp")


def _fold(text: str) -> str:
    # Readers type "bronte" for "Brontë": compare without accents and case.
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def search_books(query: str) -> list[Book]:
    """Books whose title, author or year contain every word of `query` (all when empty)."""
    words = _fold(query).split()
    return [
        book
        for book in BOOKS
        if all(word in _fold(f"{book.title} {book.author} {book.year}") for word in words)
    ]


@dataclass(frozen=True)
class SeenRequest:
    """What the gateway told a service about one request, ready to be shown."""

    user_id: str | None
    username: str | None
    pass_number: str | None
    token_present: bool
    token_claims: tuple[tuple[str, str], ...]
    token_error: str | None
    request_id: str | None
    forwarded_for: str | None
    forwarded_proto: str | None
    forwarded_host: str | None

    @property
    def logged_in(self) -> bool:
        return self.user_id is not None


def _claim_text(name: str, value: Any) -> str:
    if name == "exp" and isinstance(value, int | float):
        try:
            when = datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        except (OverflowError, OSError, ValueError):
            return f"{value} (not a date)"  # shown, never a server error
        return f"{value} ({when})"
    return str(value)


def seen_request(headers: Mapping[str, str]) -> SeenRequest:
    """Read the gateway's headers; the identity token is decoded unverified, for display only."""
    token = headers.get("X-Library-Identity")
    claims: tuple[tuple[str, str], ...] = ()
    error = None
    if token is not None:
        try:
            decoded = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            error = str(exc)
        else:
            claims = tuple(
                (name, _claim_text(name, decoded[name]))
                for name in _SHOWN_CLAIMS
                if name in decoded
            )
    return SeenRequest(
        user_id=headers.get("X-Library-User-Id"),
        username=headers.get("X-Library-Username"),
        pass_number=headers.get("X-Library-Pass-Number"),
        token_present=token is not None,
        token_claims=claims,
        token_error=error,
        request_id=headers.get("X-Request-Id"),
        forwarded_for=headers.get("X-Forwarded-For"),
        forwarded_proto=headers.get("X-Forwarded-Proto"),
        forwarded_host=headers.get("X-Forwarded-Host"),
    )


def book_chunks(book_id: str, size: int, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """The same `size` bytes for a book on every call, produced one chunk at a time.

    Each chunk opens with the book id and its offset, so a lost, repeated or reordered
    chunk changes the checksum of the whole.
    """
    line = f"Demo digital copy of {book_id}. ".encode()
    filler = (line * (chunk_size // len(line) + 1))[:chunk_size]
    offset = 0
    while offset < size:
        length = min(chunk_size, size - offset)
        yield (f"\n[{book_id} @ {offset}]\n".encode() + filler)[:length]
        offset += length


def _size_text(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / (1024 * 1024):.1f} MiB"


_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("gateway.demo", "."),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def _page(
    request: web.Request, service: str, template: str, title: str, **context: Any
) -> web.Response:
    html = _TEMPLATES.get_template(template).render(
        seen=seen_request(request.headers),
        path=request.path_qs,
        service=service,
        title=title,
        **context,
    )
    return web.Response(text=html, content_type="text/html")


def _book(request: web.Request, service: str, *, digital: bool = False) -> Book:
    book = _BOOKS_BY_ID.get(request.match_info["book_id"])
    if book is None or (digital and not book.digital):
        raise _not_found(request, service, "We have no such book.")
    return book


def _not_found(request: web.Request, service: str, message: str) -> web.HTTPNotFound:
    page = _page(request, service, "message.html", "Not found", message=message)
    return web.HTTPNotFound(text=page.text, content_type="text/html")


# --- catalogue -----------------------------------------------------------------------------


def catalogue_app() -> web.Application:
    """The catalogue, open to everyone (`auth: optional`), mounted at /catalogue."""

    async def home(request: web.Request) -> web.Response:
        return _page(request, "Catalogue", "catalogue.html", "Search the catalogue", query=None)

    async def search(request: web.Request) -> web.Response:
        query = request.query.get("q", "")
        books = search_books(query)
        return _page(
            request, "Catalogue", "catalogue.html", "Search results", query=query, books=books
        )

    app = web.Application()
    app.router.add_get("/catalogue", home)
    app.router.add_get("/catalogue/", home)
    app.router.add_get("/catalogue/search", search)
    return app


# --- reservations --------------------------------------------------------------------------


class _ReservationDesk:
    """Reservations per stable user id, held in memory for the life of the demo."""

    service = "Reservations"

    def __init__(self) -> None:
        self._held: dict[str, list[Book]] = {}

    @staticmethod
    def _user_id(request: web.Request) -> str:
        # The gateway guards this route; reaching here without identity means it was bypassed.
        user_id = request.headers.get("X-Library-User-Id")
        if not user_id:
            raise web.HTTPUnauthorized(text="no identity")
        return user_id

    async def mine(self, request: web.Request) -> web.Response:
        books = self._held.get(self._user_id(request), [])
        return _page(request, self.service, "reservations.html", "My reservations", books=books)

    async def confirm(self, request: web.Request) -> web.Response:
        self._user_id(request)
        book = _book(request, self.service)
        return _page(request, self.service, "reserve.html", "Confirm reservation", book=book)

    async def reserve(self, request: web.Request) -> web.Response:
        # No CSRF check of its own: this demo relies on the gateway's SameSite=Lax session
        # cookie, which a cross-site POST does not carry. A real service must protect its forms.
        user_id = self._user_id(request)
        book = _book(request, self.service)
        held = self._held.setdefault(user_id, [])
        if book not in held:
            held.append(book)
        raise web.HTTPSeeOther("/reservations/")

    async def opening_hours(self, request: web.Request) -> web.Response:
        return _page(
            request, self.service, "opening_hours.html", "Opening hours", hours=OPENING_HOURS
        )


def reservations_app() -> web.Application:
    """Reservations (`auth: required`, opening hours public), mounted at /reservations."""
    desk = _ReservationDesk()
    app = web.Application()
    app.router.add_get("/reservations", desk.mine)
    app.router.add_get("/reservations/", desk.mine)
    app.router.add_get("/reservations/reserve/{book_id}", desk.confirm)
    app.router.add_post("/reservations/reserve/{book_id}", desk.reserve)
    app.router.add_get("/reservations/opening-hours", desk.opening_hours)
    return app


# --- digital resources ---------------------------------------------------------------------


def digital_app(book_size: int = 64 * 1024 * 1024) -> web.Application:
    """Digital copies (`auth: required`), mounted at /digital; every copy is `book_size` bytes."""
    service = "Digital library"

    async def shelf(request: web.Request) -> web.Response:
        books = [book for book in BOOKS if book.digital]
        return _page(request, service, "digital.html", "Read online", books=books)

    async def read(request: web.Request) -> web.Response:
        book = _book(request, service, digital=True)
        return _page(
            request, service, "reader.html", book.title, book=book, size_text=_size_text(book_size)
        )

    async def download(request: web.Request) -> web.StreamResponse:
        book = _book(request, service, digital=True)
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Disposition": f'attachment; filename="{book.id}.bin"',
            }
        )
        response.content_length = book_size
        await response.prepare(request)
        if request.method != "HEAD":
            # write() waits for the socket to drain, so a slow reader slows the generator
            # and memory stays at one chunk whatever the size.
            for chunk in book_chunks(book.id, book_size):
                await response.write(chunk)
        await response.write_eof()
        return response

    async def upload(request: web.Request) -> web.Response:
        digest = hashlib.sha256()
        received = 0
        async for chunk in request.content.iter_chunked(CHUNK_SIZE):
            digest.update(chunk)
            received += len(chunk)
        return web.json_response({"bytes": received, "sha256": digest.hexdigest()})

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        seen = seen_request(request.headers)
        await ws.send_json({"user_id": seen.user_id, "username": seen.username})
        async for message in ws:
            if message.type is WSMsgType.TEXT:
                await ws.send_str(message.data)
            elif message.type is WSMsgType.BINARY:
                await ws.send_bytes(message.data)
        return ws

    app = web.Application()
    app.router.add_get("/digital", shelf)
    app.router.add_get("/digital/", shelf)
    app.router.add_get("/digital/read/{book_id}", read)
    app.router.add_get("/digital/download/{book_id}", download)
    app.router.add_post("/digital/upload", upload)
    app.router.add_get("/digital/ws", echo)
    return app
