"""The mail a command queued (`accounts invite`, `staff add`, `staff reset`), sent at once.

At once, so that the first admin's link arrives before any gateway runs; through this shell's
settings (GATEWAY_SMTP_URL, or files under DATA_DIR/outbox/ without it); and only the mail
the command queued itself. The rest of the outbox is the running gateway's: sent through this
shell's settings, a patron's reset link would end up in a local file or at another mail
server. What the command prints says where its mail went.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlsplit

import asyncpg

from auth.mail import Outbox, OutboxWorker, queued_here, transport_for
from gateway.config.settings import Settings

_T = TypeVar("_T")


async def queue_and_send(
    pool: asyncpg.Pool, settings: Settings, work: Callable[[], Awaitable[_T]]
) -> tuple[_T, str]:
    """Run `work`, then send the mail it queued; its result, and where that mail went."""
    with queued_here() as ids:
        result = await work()
    if not ids:
        return result, "not queued"
    worker = OutboxWorker(
        pool, transport_for(settings.smtp_url.reveal(), settings.data_dir), settings.sender
    )
    await worker.send_these(ids)
    return result, await _where(pool, settings, worker, ids)


async def _where(
    pool: asyncpg.Pool, settings: Settings, worker: OutboxWorker, ids: list[int]
) -> str:
    if worker.sent_total == len(ids):
        smtp_url = settings.smtp_url.reveal()
        if smtp_url:
            parts = urlsplit(smtp_url)  # host and port only: the URL may hold a password
            port = parts.port or (465 if parts.scheme == "smtps" else 25)
            return f"sent to the mail server at {parts.hostname}:{port}"
        return (
            f"written to {settings.data_dir / 'outbox'} (GATEWAY_SMTP_URL is not set: "
            "open the .eml file there)"
        )
    if worker.failed_total:
        return "not sent: the mail server did not take it; queued, a running gateway retries it"
    # Neither sent nor failed here: a running gateway's worker took it first.
    if await Outbox(pool).unsent(ids):
        return "queued: a running gateway is sending it"
    return "sent by a running gateway"
