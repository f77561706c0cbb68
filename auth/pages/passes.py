"""The patron's library passes as the account page lists them.

Each membership with its institution's name (from the institutions in force; an id no longer
in the file is shown as it is), its pass number and type, until when it is valid or when it
ran out, and the institution's renewal link when it ran out or runs out within
`RENEW_WITHIN` days. `entries` is pure: the memberships, the table, the day and the language in,
the rows out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta

from aiohttp import web

from auth import clock
from auth.identity import Identity
from auth.memberships import InstitutionTable, Membership
from auth.pages.i18n import translator
from auth.pages.render import language
from auth.services import INSTITUTIONS

RENEW_WITHIN = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class PassEntry:
    """One pass on the account page, in the page's language."""

    institution: str
    pass_number: str
    type: str | None
    validity: str  # "valid until 31 January 2027", "expired on …", or "" (no end date)
    valid_until_iso: str
    expired: bool
    renew_url: str | None


def day_text(day: date, lang: str) -> str:
    month = translator(lang)["sessions.months"].split()[day.month - 1]
    return f"{day.day} {month} {day.year}"


def entries(
    memberships: Iterable[Membership], table: InstitutionTable, today: date, lang: str
) -> list[PassEntry]:
    t = translator(lang)
    found = []
    for membership in memberships:
        institution = table.get(membership.institution)
        until = membership.valid_until
        expired = not membership.valid_on(today)
        validity = ""
        if until is not None:
            key = "passes.expired_on" if expired else "passes.valid_until"
            validity = t[key].format(day=day_text(until, lang))
        renew = institution.renew_url if institution is not None else None
        soon = until is not None and until - today <= RENEW_WITHIN
        found.append(
            PassEntry(
                institution=institution.name if institution is not None else membership.institution,
                pass_number=membership.pass_number,
                type=membership.type,
                validity=validity,
                valid_until_iso=until.isoformat() if until is not None else "",
                expired=expired,
                renew_url=renew if soon else None,
            )
        )
    return found


def listing(request: web.Request, identity: Identity | None) -> list[PassEntry]:
    """The passes of the patron the request belongs to, for the account page."""
    if identity is None:
        return []
    today = clock.today()
    table = request.app[INSTITUTIONS].table
    return entries(identity.memberships, table, today, language(request))
