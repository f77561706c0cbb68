"""What a staff member is, and the small rules about them: roles, e-mail addresses and the
reason every admin action must give. Pure: no I/O."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from auth.credentials.emails import plausible

Role = Literal["helpdesk", "admin"]
ROLES: tuple[Role, ...] = ("helpdesk", "admin")
REASON_MIN = 3
REASON_MAX = 300
# Legal in quoted local parts, never in a staff member's plain address, and trouble in a
# mail header or a page.
_UNSAFE = frozenset("<>\"'\\,;()[]`")


class StaffError(Exception):
    """Base of the refusals of staff management (`code` names the rule for the pages)."""

    code = "error"


class NotAnEmail(StaffError):
    code = "email"


class EmailTaken(StaffError):
    code = "email_taken"


class ReasonMissing(StaffError):
    code = "reason"


class UnknownRole(StaffError):
    code = "role"


class NotOnYourself(StaffError):
    """An admin may not disable or demote themselves (the console would lose its admin)."""

    code = "self"


class UnknownMember(StaffError):
    code = "unknown"


class NotAnAdmin(StaffError):
    """The admin acting was demoted or disabled by another admin at the same moment: the
    change is judged with both rows locked, so two admins cannot remove each other."""

    code = "not_admin"


@dataclass(frozen=True, slots=True)
class StaffMember:
    id: str
    email: str
    role: Role
    password_hash: str | None
    disabled: bool
    activated_at: datetime | None
    created_at: datetime

    @property
    def state(self) -> Literal["active", "pending", "disabled"]:
        """`pending`: invited, not yet through activation (password and a factor)."""
        if self.disabled:
            return "disabled"
        return "active" if self.activated_at is not None else "pending"

    def __repr__(self) -> str:  # never the password hash
        return f"StaffMember(id={self.id!r}, email={self.email!r}, role={self.role!r})"


def canonical_email(email: str) -> str:
    """The form two addresses are compared in (NFKC, case folded, trimmed)."""
    return unicodedata.normalize("NFKC", email).strip().casefold()


def checked_email(email: str) -> str:
    """`email` trimmed, if it is plausibly an address (`auth.credentials.emails.plausible`,
    the patrons' rule) without any of the characters only quoted addresses use. Raises
    `NotAnEmail`."""
    email = email.strip()
    if not plausible(email) or any(c in _UNSAFE for c in email):
        raise NotAnEmail(email)
    return email


def checked_role(role: str) -> Role:
    if role not in ROLES:
        raise UnknownRole(role)
    return role


def checked_reason(reason: str) -> str:
    """The reason an admin gives for an action: required, short, one line of visible text
    (line breaks become spaces; a control or format character, such as one that turns the
    text after it around, is refused, as the helpdesk's reasons are)."""
    reason = " ".join(reason.split())
    if not REASON_MIN <= len(reason) <= REASON_MAX or not reason.isprintable():
        raise ReasonMissing(reason)
    return reason
