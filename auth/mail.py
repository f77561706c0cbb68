"""Mail the gateway sends: composed from templates, queued in PostgreSQL, sent by a worker.

A mail is written to the `outbox` table in the same transaction as the action that caused it
(a reset link together with its token, a "your password changed" notice together with the new
password). `OutboxWorker` sends what is due, through SMTP (`GATEWAY_SMTP_URL`) or, without it,
into files under DATA_DIR/outbox/; failures are retried with backoff, so an SMTP outage loses
nothing and never fails a patron's request. Several instances share one outbox safely
(FOR UPDATE SKIP LOCKED). Sent mails keep their envelope but lose their bodies, which may
hold links.

A command on the operator's shell (`accounts invite`, `staff add`) sends the mail it queued
itself at once, through the shell's own settings, and nothing else: it learns which mails those
are by queueing them inside `queued_here()`. The rest of the outbox is the gateway's, whose
mail settings may differ from the shell's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import aiosmtplib
import asyncpg
import jinja2

from auth.telemetry import MAILS

log = logging.getLogger("auth.mail")

CHANNEL = "library_gateway_outbox"
_RETRY_DELAYS = (10, 30, 60, 300, 900, 3600)
MAX_ATTEMPTS = 30

_COLUMNS = "SELECT id, recipient, subject, body_text, body_html, attempts FROM outbox"
_DUE = (
    _COLUMNS + " WHERE sent_at IS NULL AND next_attempt_at <= now() AND attempts < $2"
    " ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"
)
_THESE = (
    _COLUMNS + " WHERE id = ANY($1::bigint[]) AND sent_at IS NULL AND next_attempt_at <= now()"
    " AND attempts < $2 ORDER BY id FOR UPDATE SKIP LOCKED"
)

_queued_here: ContextVar[list[int] | None] = ContextVar("queued_here", default=None)


@contextlib.contextmanager
def queued_here() -> Iterator[list[int]]:
    """The outbox ids of the mails queued by the code run inside, in this task: what a
    command on the shell may send itself (`OutboxWorker.send_these`)."""
    ids: list[int] = []
    token = _queued_here.set(ids)
    try:
        yield ids
    finally:
        _queued_here.reset(token)


@dataclass(frozen=True)
class Mail:
    recipient: str
    subject: str
    text: str
    html: str
    kind: str | None = None
    """The template it was composed from (`reset`, `activate`, `email_changed`…): what the
    helpdesk is shown of a mail instead of its subject or body."""


class Composer:
    """Renders `templates/mail/<kind>.<lang>.txt` (first line: the subject) and wraps the same
    text in one HTML layout, so the two bodies never say different things."""

    def __init__(self, environment: jinja2.Environment, library_name: str) -> None:
        self._env = environment
        self._name = library_name

    def compose(self, kind: str, lang: str, recipient: str, **context: Any) -> Mail:
        context = {"library": self._name, "link": None, **context}
        text = self._env.get_template(f"mail/{kind}.{lang}.txt").render(**context)
        subject, _, body = text.partition("\n")
        body = body.strip("\n") + "\n"
        paragraphs = [part.strip() for part in body.split("\n\n") if part.strip()]
        html = self._env.get_template("mail/layout.html").render(
            subject=subject.strip(), paragraphs=paragraphs, lang=lang, **context
        )
        return Mail(recipient, subject.strip(), body, html, kind)


class Outbox:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @staticmethod
    async def put(
        conn: Any, mail: Mail, *, account_id: str | None = None, kind: str | None = None
    ) -> int:
        """Queue a mail inside the caller's transaction; the worker hears of it on commit.
        `account_id`: the patron it is about, so the helpdesk sees it among theirs; `kind`:
        what it is (default: the template it was composed from). Returns its id."""
        outbox_id = int(
            await conn.fetchval(
                "INSERT INTO outbox (recipient, subject, body_text, body_html, account_id, kind)"
                " VALUES ($1, $2, $3, $4, $5::uuid, $6) RETURNING id",
                mail.recipient,
                mail.subject,
                mail.text,
                mail.html,
                account_id,
                kind or mail.kind,
            )
        )
        await conn.execute("SELECT pg_notify($1, '')", CHANNEL)
        recorded = _queued_here.get()
        if recorded is not None:
            recorded.append(outbox_id)
        return outbox_id

    async def send(
        self, mail: Mail, *, account_id: str | None = None, kind: str | None = None
    ) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await self.put(conn, mail, account_id=account_id, kind=kind)

    async def purge(self, older_than: float = 7 * 86400.0) -> int:
        """Forget mails older than a week: sent ones (only their envelope is left) and ones
        that never went out, whose links have long expired anyway."""
        status = await self._pool.execute(
            "DELETE FROM outbox WHERE created_at < now() - make_interval(secs => $1)",
            older_than,
        )
        return int(status.split()[-1])

    async def pending(self) -> int:
        return int(await self._pool.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL"))

    async def unsent(self, ids: Sequence[int]) -> int:
        """How many of the mails `ids` have not been sent (yet)."""
        return int(
            await self._pool.fetchval(
                "SELECT count(*) FROM outbox WHERE id = ANY($1::bigint[]) AND sent_at IS NULL",
                list(ids),
            )
        )


class Transport(Protocol):
    async def deliver(self, message: EmailMessage) -> None: ...


class SmtpTransport:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("GATEWAY_SMTP_URL must look like smtp://host:port or smtps://…")
        self._host = parts.hostname
        self._port = parts.port or (465 if parts.scheme == "smtps" else 25)
        self._tls = parts.scheme == "smtps"
        self._user = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None

    async def deliver(self, message: EmailMessage) -> None:
        await aiosmtplib.send(
            message,
            hostname=self._host,
            port=self._port,
            use_tls=self._tls,
            username=self._user,
            password=self._password,
            timeout=30,
        )


class DirectoryTransport:
    """Without SMTP: each mail becomes a .eml file an operator (or the demo) can open."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder

    async def deliver(self, message: EmailMessage) -> None:
        def write() -> None:
            self._folder.mkdir(parents=True, exist_ok=True)
            name = f"{time.strftime('%Y%m%dT%H%M%S')}-{message['Message-ID'].strip('<>')}.eml"
            (self._folder / name).write_bytes(bytes(message))

        await asyncio.to_thread(write)
        log.info("mail written to the outbox folder", extra={"subject": message["Subject"]})


def build_message(sender: str, row: asyncpg.Record) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = row["recipient"]
    message["Subject"] = row["subject"]
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(row["body_text"])
    message.add_alternative(row["body_html"], subtype="html")
    return message


class OutboxWorker:
    def __init__(self, pool: asyncpg.Pool, transport: Transport, sender: str) -> None:
        self._pool = pool
        self._transport = transport
        self._sender = sender
        self._wake = asyncio.Event()
        self.sent_total = 0
        self.failed_total = 0

    def wake(self, _payload: str = "") -> None:
        self._wake.set()

    async def run(self, poll: float = 15.0) -> None:
        # Python 3.11's asyncio.wait_for loses a cancellation that arrives together with what
        # it waits for (CPython gh-86296), and aiosmtplib reads every SMTP reply through it. A
        # shutdown that coincides with a mail would then leave this loop running for ever, so
        # a cancellation requested of this task is honoured here whether or not it got through.
        task = asyncio.current_task()
        while True:
            self._wake.clear()
            try:
                while await self.send_due() > 0:
                    pass
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("outbox worker cannot reach the database", extra={"error": str(exc)})
            if task is not None and task.cancelling():
                raise asyncio.CancelledError
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(poll):
                    await self._wake.wait()

    async def send_due(self, batch: int = 10) -> int:
        """Send up to `batch` due mails; return how many were attempted."""
        return await self._send(_DUE, batch, MAX_ATTEMPTS)

    async def send_these(self, ids: Sequence[int]) -> int:
        """Send the mails `ids` (from `queued_here`) that are due and that no other sender
        holds, and no other mail; return how many were attempted."""
        return await self._send(_THESE, list(ids), MAX_ATTEMPTS)

    async def _send(self, query: str, *args: object) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(query, *args)
            for row in rows:
                try:
                    await self._transport.deliver(build_message(self._sender, row))
                # ValueError: a mail that cannot be built (a line break in the address) is
                # put off like a failed one, so it neither stops nor repeats the others.
                except (OSError, aiosmtplib.SMTPException, TimeoutError, ValueError) as exc:
                    self.failed_total += 1
                    MAILS.labels("failed").inc()
                    delay = _RETRY_DELAYS[min(row["attempts"], len(_RETRY_DELAYS) - 1)]
                    await conn.execute(
                        "UPDATE outbox SET attempts = attempts + 1, last_error = $2,"
                        " next_attempt_at = now() + make_interval(secs => $3) WHERE id = $1",
                        row["id"],
                        f"{type(exc).__name__}: {exc}"[:500],
                        delay,
                    )
                    log.warning(
                        "mail not sent, will retry",
                        extra={
                            "outbox_id": row["id"],
                            "retry_in_s": delay,
                            "error": type(exc).__name__,
                        },
                    )
                else:
                    self.sent_total += 1
                    MAILS.labels("sent").inc()
                    await conn.execute(
                        "UPDATE outbox SET sent_at = now(), attempts = attempts + 1,"
                        " body_text = '', body_html = '', last_error = NULL WHERE id = $1",
                        row["id"],
                    )
        return len(rows)


def transport_for(smtp_url: str, data_dir: Path) -> Transport:
    if smtp_url:
        return SmtpTransport(smtp_url)
    return DirectoryTransport(data_dir / "outbox")
