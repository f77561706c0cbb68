"""The library's calendar: the Netherlands' clocks (Europe/Amsterdam), whatever time zone the
server runs in.

A membership's `valid_until` is its last valid day as the library counts days, and times on
the account page are shown as Dutch clocks show them. A container usually runs on UTC, an hour
or two behind: a membership read by the server's own date would let its holder in after a
Dutch midnight that the account page already shows it ran out at.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def _zone() -> tzinfo:
    try:
        return ZoneInfo("Europe/Amsterdam")
    except ZoneInfoNotFoundError:
        logging.getLogger("auth").warning(
            "no time zone database (install tzdata): the library's days and times are UTC's"
        )
        return UTC


ZONE = _zone()


def today() -> date:
    """The library's date now: the day a membership's `valid_until` is compared with."""
    return datetime.now(ZONE).date()
