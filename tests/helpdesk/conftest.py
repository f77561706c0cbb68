"""The helpdesk's tests (the service layer and its pages): a gateway connected to two
libraries whose back-channel logouts reach a `Receiver`, mailing through the catcher and, for
`BOUNCING`'s addresses, a real SMTP server that refuses every recipient; a patron."""

from __future__ import annotations

import gc
import warnings
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestServer
from aiosmtpd.controller import Controller
from pytest_aiohttp import AiohttpServer

from auth.credentials.passwords import PasswordHasher
from auth.mail import SmtpTransport
from auth.services import SERVICES, AuthServices
from auth.store.accounts import Account
from gateway.demo.mailcatcher import MailCatcher
from tests.helpdesk.support import BOUNCING
from tests.helpers import (
    Gateway,
    MakeGateway,
    add_patron,
    free_port,
    routes_for,
)
from tests.test_backchannel import FAST, Receiver, clients_yaml
from tests.test_oidc_provider import SECRET


class _RefuseEveryone:
    """An aiosmtpd handler with no mailboxes: every recipient is refused at RCPT."""

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        return "550 5.1.1 No such mailbox here"


class Routed:
    """Mail to `BOUNCING` goes to an SMTP server that refuses it, any other to the catcher:
    two real servers behind the gateway's one transport."""

    def __init__(self, catcher: str, refusing: str) -> None:
        self._catcher = SmtpTransport(catcher)
        self._refusing = SmtpTransport(refusing)

    async def deliver(self, message: EmailMessage) -> None:
        bounces = str(message["To"]).endswith("@" + BOUNCING)
        await (self._refusing if bounces else self._catcher).deliver(message)


@pytest.fixture
def refusing_smtp() -> Iterator[str]:
    port = free_port()
    controller = Controller(
        _RefuseEveryone(), hostname="127.0.0.1", port=port, server_hostname="refusing.test"
    )
    controller.start()
    yield f"smtp://127.0.0.1:{port}"
    with warnings.catch_warnings():  # as the catcher's fixture: a cut-off session's socket
        warnings.simplefilter("ignore", ResourceWarning)
        controller.stop()
        gc.collect()


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


@pytest.fixture
async def gw(
    make_gateway: MakeGateway,
    backend: TestServer,
    mail_catcher: MailCatcher,
    refusing_smtp: str,
    receiver: Receiver,
    aiohttp_server: AiohttpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> Gateway:
    """A gateway with two connected libraries whose back-channel logouts reach `receiver`,
    mailing through the catcher (and `BOUNCING`'s refusing server)."""
    monkeypatch.setenv("OIDC_TEST_SECRET", SECRET)
    libraries = await aiohttp_server(receiver.app())
    return await make_gateway(
        routes_for(backend.port),
        clients=clients_yaml(f"http://127.0.0.1:{libraries.port}"),
        backchannel_timing=FAST,
        mail_transport=Routed(mail_catcher.url, refusing_smtp),
    )


@pytest.fixture
def services(gw: Gateway) -> AuthServices:
    return gw.app[SERVICES]


@pytest.fixture
async def patron(pool: asyncpg.Pool, hasher: PasswordHasher) -> Account:
    return await add_patron(pool, hasher)
