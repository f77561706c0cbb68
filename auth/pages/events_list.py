"""The patron's recent security events, as the account page lists them.

The newest `SHOWN` rows of the audit trail about the patron's own account (never anybody
else's: the rows are read by the logged-in account's id and nothing a request sends), each
with when it happened, what it was, in the page's language, and the browser and system it
came from as `auth.sessions.browsers` reads a User-Agent. Never where from: a failed login
is anybody's who typed the patron's name, and their address is theirs, not the patron's. An
action of the library's (the helpdesk, an operator) is shown as the library's, without the
staff member's browser, name or stated reason.

`entries` is pure: the rows and the language in, the lines of the page out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC

from aiohttp import web

from auth.audit import label
from auth.pages.i18n import translator
from auth.pages.render import language
from auth.pages.sessions_list import browser_text, when
from auth.services import SERVICES
from auth.store.audit import Row

SHOWN = 15


@dataclass(frozen=True, slots=True)
class EventEntry:
    """One security event on the account page, in the page's language."""

    what: str
    at: str
    at_iso: str
    browser: str
    action: str  # the trail's name for it, for the page's styling and the tests


def entries(rows: Iterable[Row], lang: str) -> list[EventEntry]:
    t = translator(lang)
    return [
        EventEntry(
            what=label(row.action, lang),
            at=when(row.at, lang),
            at_iso=row.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            browser=(
                t["events.by_library"]
                if row.actor_kind in ("staff", "operator", "system")
                else browser_text(row.user_agent, lang)
            ),
            action=row.action,
        )
        for row in rows
    ]


async def listing(request: web.Request, account_id: str) -> list[EventEntry]:
    """The newest events of the account `account_id` (the logged-in patron's), newest first."""
    rows = await request.app[SERVICES].audit.for_account(account_id, limit=SHOWN)
    return entries(rows, language(request))
