"""Failed staff attempts, counted by the patrons' login throttle
(`auth.credentials.throttle`) under keys of their own: per staff member (`staff:ID`; an
address that is nobody's as `staff-email:CANONICAL`, so it is throttled like a real one)
and per client address (`staff-addr:…`, IPv6 per /64). A wrong password, a wrong code, a
refused passkey and a wrong password on a "my security" form all count; only a complete
sign-in clears the member's counter.

A second factor is checked in no time (no argon2 to wait for), so a try of one is counted
against the member before it is judged (`reserve`): guesses sent all at once take their
turns at the counter, and no more of them are judged than one at a time would be.
"""

from __future__ import annotations

import math

from aiohttp import web

from auth.credentials import throttle
from auth.credentials.throttle import CLIENT_ADDRESS, Blocked
from auth.staff.model import canonical_email
from auth.staff.services import STAFF_SERVICES


def member_key(staff_id: str | None, email: str = "") -> str:
    return f"staff:{staff_id}" if staff_id else f"staff-email:{canonical_email(email)}"


def address_key(request: web.Request) -> str:
    return "staff-" + throttle.address_key(request.get(CLIENT_ADDRESS, "unknown"))


async def wait(request: web.Request, member: str) -> int:
    """Whole seconds until this member may try again from this address (0: now)."""
    seconds = await request.config_dict[STAFF_SERVICES].throttle.retry_after(
        member, address_key(request)
    )
    return math.ceil(seconds) if seconds > 0 else 0


async def failed(request: web.Request, member: str) -> Blocked:
    return await request.config_dict[STAFF_SERVICES].throttle.failed(member, address_key(request))


async def succeeded(request: web.Request, member: str) -> None:
    await request.config_dict[STAFF_SERVICES].throttle.succeeded(member)


async def reserve(request: web.Request, member: str) -> Blocked | None:
    """A try of a second factor, counted against the member before it is judged; None when
    the member is blocked (nothing counted). A right answer then clears it (`succeeded`), a
    wrong one is counted against the address too (`failed_reserved`)."""
    return await request.config_dict[STAFF_SERVICES].throttle.reserve(member)


async def failed_reserved(request: web.Request, reserved: Blocked) -> Blocked:
    """A `reserve`d try was wrong: the block the member's count started, and the
    address's."""
    address = await request.config_dict[STAFF_SERVICES].throttle.failed_from(address_key(request))
    return Blocked(account=reserved.account, address=address.address)
