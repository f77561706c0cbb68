"""A real SMTP server for the demo that shows every mail instead of delivering it.

The demo must let a person click the activation and reset links the gateway mails, on a
machine with no mail server; the catcher prints each mail where the demo's output goes and
keeps the latest ones so tests can wait for a particular mail.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import threading
from collections.abc import Callable
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from typing import Any, TextIO

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

# Captured, so that splitting a line keeps the links; a link never ends in punctuation,
# so "visit https://x/y." yields the link without its full stop.
_LINK = re.compile(r"(https?://[^\s<>\"']*[^\s<>\"'.,;:!?)])")


def mail_text(message: EmailMessage, envelope_to: list[str] | None = None) -> str:
    """A mail as a person reads it: sender, recipients, subject, then the plain-text body
    with every link on a line of its own, so a terminal makes it clickable and copyable."""
    recipients = message.get("To") or ", ".join(envelope_to or []) or "(nobody)"
    lines = [
        "=" * 72,
        f"From:    {message.get('From', '(unknown)')}",
        f"To:      {recipients}",
        f"Subject: {message.get('Subject', '(no subject)')}",
        "",
    ]
    part = message.get_body(preferencelist=("plain",))
    if part is None:
        lines.append("(no plain-text part)")
    else:
        for line in str(part.get_content()).splitlines():
            if _LINK.search(line):
                lines.extend(piece.strip() for piece in _LINK.split(line) if piece.strip())
            else:
                lines.append(line.rstrip())
    lines.append("=" * 72)
    return "\n".join(lines) + "\n"


class _Handler:
    """aiosmtpd handler: runs on the controller's thread for every accepted mail."""

    def __init__(self, catcher: MailCatcher) -> None:
        self._catcher = catcher

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        parsed = BytesParser(policy=default_policy).parsebytes(raw)
        assert isinstance(parsed, EmailMessage)  # guaranteed by the `default` policy
        self._catcher._record(parsed, [str(rcpt) for rcpt in envelope.rcpt_tos])
        return "250 Message accepted for delivery"


class _Session(SMTP):
    """aiosmtpd's SMTP protocol, known to the controller while its connection is open."""

    def __init__(self, sessions: set[_Session], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sessions = sessions

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._sessions.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self._sessions.discard(self)
        super().connection_lost(error)


class _Controller(Controller):
    """aiosmtpd's Controller, able to listen on an ephemeral port, that closes open SMTP
    connections before it stops.

    After binding, Controller connects to `self.port` once to make the lazy SMTP factory run;
    with port 0 it would connect to port 0 and fail. Learning the bound port from the
    listening socket first makes that connection, and `.port`, right. aiosmtpd's `stop`
    cancels every task and ends the loop at once, which can leave the socket of a
    connection whose close was still pending open until the garbage collector finds it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sessions: set[_Session] = set()

    def factory(self) -> SMTP:
        return _Session(self._sessions, self.handler, **self.SMTP_kwargs)

    def _trigger_server(self) -> None:
        if isinstance(self.server, asyncio.Server):
            self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]

    async def _wind_down(self) -> None:
        """Close every open connection and let every task end by itself, then stop
        listening, rather than cancel them all with the loop about to stop. The listener is
        closed last: on Python 3.11 a connection accepted just before it closes is lost with
        its socket still open (the transport's `Server._attach` fails)."""
        assert self.server is not None
        this = asyncio.current_task()
        for _ in range(10):  # a connection accepted meanwhile starts one more round
            for session in tuple(self._sessions):
                if session.transport is not None:
                    session.transport.close()
            others = [task for task in asyncio.all_tasks() if task is not this]
            if not others:
                break
            await asyncio.wait(others, timeout=5)
        self.server.close()

    def stop(self, no_assert: bool = False) -> None:
        if self.loop.is_running():
            asyncio.run_coroutine_threadsafe(self._wind_down(), self.loop).result(60)
        super().stop(no_assert)


class MailCatcher:
    """An SMTP server on its own thread that prints mail to `out` and keeps the last `keep`."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, out: TextIO | None = None, keep: int = 100
    ) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.host = host
        self.port = port
        self.messages: list[EmailMessage] = []
        self._out = out if out is not None else sys.stdout
        self._keep = keep
        self._lock = threading.Lock()
        # Each waiting coroutine's loop and event, woken from the SMTP thread on every mail.
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self._controller: _Controller | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"smtp://{host}:{self.port}"

    def start(self) -> None:
        if self._controller is not None:
            raise RuntimeError("the mail catcher is already running")
        # A fixed greeting name spares aiosmtpd a getfqdn() lookup, slow on machines without DNS.
        controller = _Controller(
            _Handler(self), hostname=self.host, port=self.port, server_hostname="mailcatcher.demo"
        )
        controller.start()
        self._controller = controller
        self.port = controller.port

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> MailCatcher:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def wait_for(
        self,
        predicate: Callable[[EmailMessage], bool],
        timeout: float = 10,  # noqa: ASYNC109 - the demo's callers name a limit per wait
    ) -> EmailMessage:
        """The newest kept mail matching `predicate`, waiting for one if none has come yet.

        Mail that arrived before the call counts, so a test may send first and wait after.
        Raises TimeoutError when nothing matches within `timeout` seconds.
        """
        arrived = asyncio.Event()
        waiter = (asyncio.get_running_loop(), arrived)
        with self._lock:
            self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    # Clear before looking, so a mail landing during the scan still wakes us.
                    arrived.clear()
                    with self._lock:
                        kept = list(self.messages)
                    for message in kept[::-1]:
                        if predicate(message):
                            return message
                    await arrived.wait()
        finally:
            with self._lock:
                self._waiters.remove(waiter)

    def _record(self, message: EmailMessage, envelope_to: list[str]) -> None:
        text = mail_text(message, envelope_to)
        with self._lock:
            self.messages.append(message)
            del self.messages[: -self._keep]
            self._out.write(text)
            self._out.flush()
            waiters = list(self._waiters)
        for loop, event in waiters:
            _wake(loop, event)


def _wake(loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
    # RuntimeError: that waiter's loop has closed, and nobody is left to wake.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(event.set)
