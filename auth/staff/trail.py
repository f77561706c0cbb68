"""Staff events as the console writes them to the audit trail: the actor is the staff
member (id and e-mail), the member concerned is named too (so an admin reading one
colleague's rows finds their sign-ins), and the origin is the request's."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from auth.audit import Actor, Event, origin_of
from auth.services import SERVICES
from auth.staff.identity import STAFF
from auth.store.audit import AuditTrail

log = logging.getLogger("auth.audit")


def actor(staff_id: str, email: str) -> Actor:
    return Actor("staff", staff_id, email)


def signed_in_actor(request: web.Request) -> Actor:
    """The signed-in staff member as the actor of what they do."""
    who = request[STAFF]
    return actor(who.id, who.email)


def event(
    request: web.Request,
    action: str,
    *,
    by: Actor,
    staff_id: str | None = None,
    reason: str | None = None,
    **details: Any,
) -> Event:
    return Event(
        action,
        by,
        origin_of(request),
        staff_id=staff_id if staff_id is not None else by.id,
        reason=reason,
        details=details,
    )


async def record(request: web.Request, event: Event, *, conn: Any = None) -> None:
    await request.config_dict[SERVICES].audit.record(event, conn=conn)


def record_after_answer(request: web.Request, events: list[Event]) -> None:
    """Write `events` once the answer is on its way (a failed sign-in: an address that is
    a staff member's and one that is not cost the same before the answer)."""
    if events:
        services = request.config_dict[SERVICES]
        services.after_response(_write(services.audit, events))


async def _write(trail: AuditTrail, events: list[Event]) -> None:
    try:
        for each in events:
            await trail.record(each)
    except Exception:
        log.exception(
            "an audit row could not be written", extra={"actions": [e.action for e in events]}
        )
