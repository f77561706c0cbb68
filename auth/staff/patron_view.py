"""What the console's patron pages offer and say, decided from the helpdesk's overview alone:
which actions fit the account's state, how a refusal is answered, and times and browsers in
the page's language. Pure: the handlers (`auth.staff.patrons`) do the I/O.

An action that does not fit is not offered (the service refuses it anyway when posted):

| action         | offered when                                         |
| -------------- | ---------------------------------------------------- |
| `reset`        | active, with an address                              |
| `activation`   | not yet activated, with an address                   |
| `unblock`      | failed logins on record                              |
| `end_sessions` | always                                               |
| `disable`      | not disabled                                         |
| `enable`       | disabled                                             |
| `email`        | always                                               |

and nothing at all for an account merged into another.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from auth.helpdesk.errors import (
    EmailRejected,
    HelpdeskError,
    NoSuchPatron,
    NotApplicable,
    ReasonRequired,
)
from auth.helpdesk.model import PatronOverview
from auth.pages.i18n import translator
from auth.pages.sessions_list import ZONE
from auth.sessions.browsers import Browser

ACTIONS = ("reset", "activation", "unblock", "end_sessions", "disable", "enable", "email")
"""Every action of the patron page, as its URL's last segment names it."""

REASON = "reason"
NEW_EMAIL = "new_email"
MAIL_LANG = "mail_lang"


def offered(overview: PatronOverview) -> frozenset[str]:
    """The actions the patron page offers for this account (see the module's table)."""
    state = overview.state
    if state == "merged":
        return frozenset()
    actions = {"end_sessions", "email", "enable" if state == "disabled" else "disable"}
    if overview.block is not None:
        actions.add("unblock")
    if overview.email and state == "active":
        actions.add("reset")
    if overview.email and state == "not_activated":
        actions.add("activation")
    return frozenset(actions)


@dataclass(frozen=True, slots=True)
class Refusal:
    """How the page answers a refused action: its status, the field the message goes next
    to (None: the action's form as a whole) and the message's key."""

    status: int
    field: str | None
    message: str


def refusal(exc: HelpdeskError) -> Refusal:
    """The answer to a refusal of `auth.helpdesk.errors`, with the status it names."""
    if isinstance(exc, ReasonRequired):
        return Refusal(422, REASON, "staff.patron.error.reason")
    if isinstance(exc, EmailRejected):
        return Refusal(422, NEW_EMAIL, "staff.patron.error.email")
    if isinstance(exc, NotApplicable):
        field = NEW_EMAIL if exc.code == "unchanged" else None
        return Refusal(409, field, f"staff.patron.error.{exc.code}")
    if isinstance(exc, NoSuchPatron):
        return Refusal(404, None, "staff.patron.missing.text")
    raise exc  # NotStaff: a page let somebody through who is not staff


def at(moment: datetime, lang: str) -> str:
    """A moment as the helpdesk reads it, to the second, on the Netherlands' clocks (as the
    patron's own pages show it): "3 May 2026, 14:05:09"."""
    t = translator(lang)
    local = moment.astimezone(ZONE)
    return t["sessions.when"].format(
        day=local.day,
        month=t["sessions.months"].split()[local.month - 1],
        year=local.year,
        time=f"{local.hour:02d}:{local.minute:02d}:{local.second:02d}",
    )


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def browser_text(browser: Browser, lang: str) -> str:
    """ "Firefox 125 on Windows", as far as the User-Agent told."""
    t = translator(lang)
    name = browser.name or t["sessions.unknown_browser"]
    if browser.system is None:
        return name
    return t["sessions.browser_on_system"].format(browser=name, system=browser.system)


def word(t: Mapping[str, str], prefix: str, value: str | None) -> str:
    """A value's word in the page's language (a mail kind, a state), or the value itself
    for one this version has no word for."""
    if value is None:
        return t[f"{prefix}.none"]
    return t.get(f"{prefix}.{value}", value)
