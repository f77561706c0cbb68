"""A patron's security events as the pages write them to the audit trail.

Each row names the patron concerned, who acted (the patron, or somebody not logged in trying
their account), the request's client address, browser and request id (`auth.audit.origin_of`,
so a row and the access log line of its request find each other), and a few facts in
`details`: never a password, token, or mail body, and never a login name that matched no
account (a patron's typo is nobody's business, and no row is written for it at all).

`record` writes inside the caller's transaction when given one: a change and its row commit
together or not at all. A failed password check is the exception (`record_after_answer`): its
row is written as work of its own that the answer does not wait for, so a wrong password for a
real account and an unknown name cost the same before the answer, and the answer's timing
tells nobody which names are accounts.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

from aiohttp import web

from auth.audit import Actor, Event, origin_of, patron
from auth.credentials.throttle import Blocked
from auth.services import SERVICES
from auth.store.audit import AuditTrail

log = logging.getLogger("auth.audit")


def event(
    request: web.Request,
    action: str,
    account_id: str,
    username: str | None = None,
    *,
    actor: Actor | None = None,
    **details: Any,
) -> Event:
    """The row of `action` on `account_id`, done by that patron (`username` as they are
    known now) unless `actor` says who else, from where `request` came."""
    return Event(
        action,
        actor if actor is not None else patron(account_id, username),
        origin_of(request),
        account_id=account_id,
        details=details,
    )


async def record(
    request: web.Request,
    action: str,
    account_id: str,
    username: str | None = None,
    *,
    conn: Any = None,
    actor: Actor | None = None,
    **details: Any,
) -> None:
    """Write the row of `action` on `account_id` (see `event`), in `conn`'s transaction
    when given."""
    await request.app[SERVICES].audit.record(
        event(request, action, account_id, username, actor=actor, **details), conn=conn
    )


def failed_attempt(
    request: web.Request,
    account_id: str,
    blocked: Blocked,
    *,
    form: str,
    actor: Actor | None = None,
) -> list[Event]:
    """The rows of a wrong password for `account_id` on `form` ("login", "account",
    "link"): the failure, and the block it started, if it started one."""
    somebody = actor if actor is not None else patron()
    rows = [event(request, "login_failed", account_id, actor=somebody, form=form)]
    if blocked:
        rows.append(
            event(
                request,
                "login_blocked",
                account_id,
                actor=somebody,
                form=form,
                **{
                    f"{counter}_seconds": math.ceil(seconds)
                    for counter, seconds in dataclasses.asdict(blocked).items()
                    if seconds
                },
            )
        )
    return rows


def record_after_answer(request: web.Request, events: list[Event]) -> None:
    """Write `events` (all or none) as work of its own: the answer does not wait for it
    (`AuthServices.after_response`, which shutdown waits for)."""
    if events:
        services = request.app[SERVICES]
        services.after_response(_write(services.audit, events))


async def _write(trail: AuditTrail, events: list[Event]) -> None:
    try:
        await trail.record_all(events)
    except Exception:
        log.exception(
            "an audit row could not be written",
            extra={"actions": [each.action for each in events]},
        )
