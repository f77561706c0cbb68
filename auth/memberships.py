"""Memberships: the passes of the libraries a patron belongs to, and what a route or a
connected library may require of them. Pure: no I/O, plain-assert tests.

An institution is configured in institutions.yaml (gateway/config/institutions_file.py); a
membership names one by its id, with the pass number, the institution's own word for the
membership's type (`adult`, `youth`, ...) and the last day it is valid (none: open-ended).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date

from auth.pages.theme import Theme

DEFAULT_ID = "default"
"""The one institution there is without an institutions file."""

WORD = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
"""An institution's id and a membership type: what rules name, and headers and claims carry as
they are. One rule wherever either is given (institutions.yaml, a `require:`, an import, `accounts
membership add`): a membership whose id or type no rule can name would count for nothing."""


def word_problem(value: str, what: str) -> str | None:
    """Why `value` cannot be an institution id or a membership type, None when it can."""
    if WORD.fullmatch(value):
        return None
    shown = value if len(value) <= 60 else value[:57] + "..."
    return (
        f"{what} {shown!r} must be 1-32 lowercase letters, digits, '-' or '_', "
        "starting with a letter or digit"
    )


@dataclass(frozen=True, slots=True)
class Membership:
    institution: str
    pass_number: str
    type: str | None = None
    valid_until: date | None = None

    def valid_on(self, day: date) -> bool:
        return self.valid_until is None or self.valid_until >= day

    @property
    def header(self) -> str:
        """`kb:adult:2027-01-31`, `oba:youth:` (no end date): X-Library-Memberships' form."""
        until = self.valid_until.isoformat() if self.valid_until is not None else ""
        return f"{self.institution}:{self.type or ''}:{until}"

    @property
    def claim(self) -> dict[str, str | None]:
        """The membership in the identity JWT and the `library` scope (no pass number: the
        `pass_number` claim is the account's own, and the other passes are the patron's
        business with those libraries)."""
        until = self.valid_until.isoformat() if self.valid_until is not None else None
        return {"institution": self.institution, "type": self.type, "valid_until": until}


def header_value(memberships: Iterable[Membership]) -> str:
    return ",".join(m.header for m in memberships)


@dataclass(frozen=True, slots=True)
class Requirement:
    """`require: {institution: kb, types: [adult, student]}`: a valid membership of that
    institution, of one of those types (any type when none are listed)."""

    institution: str
    types: frozenset[str] = frozenset()

    def admits(self, membership: Membership) -> bool:
        return membership.institution == self.institution and (
            not self.types or membership.type in self.types
        )


@dataclass(frozen=True, slots=True)
class Shortfall:
    """Why a patron does not meet a requirement: no such membership at all (`expired` None),
    or the one that would have done ran out on `expired.valid_until`."""

    requirement: Requirement
    expired: Membership | None

    def describe(self, institution_name: str) -> str:
        """In a few words, for a client's `error_description` (printable ASCII without '"'
        or '\\', as RFC 6749 asks: accents are dropped from the name)."""
        folded = unicodedata.normalize("NFKD", institution_name).encode("ascii", "ignore")
        institution_name = "".join(
            c for c in folded.decode("ascii") if c.isprintable() and c not in '"\\'
        )
        types = sorted(self.requirement.types)
        kind = f" ({' or '.join(types)})" if types else ""
        expired = self.expired
        if expired is not None and expired.valid_until is not None:
            return (
                f"the patron's membership of {institution_name}{kind} expired on "
                f"{expired.valid_until.isoformat()}"
            )
        return f"the patron has no valid membership of {institution_name}{kind}"


def shortfall(
    memberships: Iterable[Membership], requirement: Requirement, today: date
) -> Shortfall | None:
    """None when one of the memberships meets the requirement today."""
    fitting = [m for m in memberships if requirement.admits(m)]
    if any(m.valid_on(today) for m in fitting):
        return None
    ran_out = [m for m in fitting if m.valid_until is not None]
    latest = max(ran_out, key=lambda m: m.valid_until or date.min) if ran_out else None
    return Shortfall(requirement, latest)


@dataclass(frozen=True)
class Institution:
    id: str
    name: str
    pass_number_pattern: re.Pattern[str] | None = None
    renew_url: str | None = None
    default: bool = False
    theme: Theme | None = None
    types: tuple[str, ...] = ()
    """The membership types it knows (optional; when given, rules and imports are checked
    against them)."""
    line: int = 0

    def takes_pass_number(self, pass_number: str) -> bool:
        pattern = self.pass_number_pattern
        return pattern is None or pattern.fullmatch(pass_number) is not None


@dataclass(frozen=True)
class InstitutionTable:
    institutions: tuple[Institution, ...]
    source: str = ""
    digest: str = ""
    _by_id: Mapping[str, Institution] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {i.id: i for i in self.institutions})

    def get(self, institution_id: str) -> Institution | None:
        return self._by_id.get(institution_id)

    @property
    def default(self) -> Institution:
        return next((i for i in self.institutions if i.default), self.institutions[0])


def single_institution(name: str = "De Bibliotheek") -> InstitutionTable:
    """What there is without an institutions file: one institution, `default`."""
    return InstitutionTable((Institution(DEFAULT_ID, name, default=True),), source="(built in)")
