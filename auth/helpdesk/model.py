"""What the helpdesk sees of a patron, as plain values, and the rules it is judged by.

Everything here is data or a pure function of data, so the console's pages render it and the
tests check it without a database. Nothing in these values is a secret: a password is shown
as whether there is one (the account's state), a mailed link as what it is for and until
when (never its token), a mail as its kind, recipient and delivery (never its subject or
bodies: the subject says no more than the kind, and a body may hold a link).
"""

from __future__ import annotations

import unicodedata
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any, Literal

from auth.helpdesk.errors import ReasonRequired
from auth.memberships import Membership
from auth.sessions.browsers import Browser

State = Literal["active", "disabled", "not_activated", "merged"]
MatchKey = Literal["account_id", "pass_number", "username", "email"]
MailState = Literal["sent", "waiting", "retrying", "failed"]

REASON_MAX = 200
"""A reason is a short line for the trail (`auth.audit.REASON_LIMIT` is what it can hold)."""


def account_state(*, disabled: bool, not_activated: bool, merged_into: str | None) -> State:
    """One word for the account: merged away (disabled, and pointing at the account that
    took its passes), disabled, not yet activated (no password chosen), or active."""
    if merged_into is not None:
        return "merged"
    if disabled:
        return "disabled"
    if not_activated:
        return "not_activated"
    return "active"


def mail_state(*, sent: bool, attempts: int, max_attempts: int) -> MailState:
    """Sent; waiting for its first try; retrying after a failure; or failed for good (the
    outbox gave up after `max_attempts` tries)."""
    if sent:
        return "sent"
    if attempts >= max_attempts:
        return "failed"
    return "retrying" if attempts else "waiting"


def check_reason(reason: object) -> str:
    """The reason a staff member gave, as the trail keeps it; `ReasonRequired` unless it is
    one short line of visible text."""
    if not isinstance(reason, str):
        raise ReasonRequired("Give a reason for this action.")
    text = unicodedata.normalize("NFC", reason).strip()
    if not text:
        raise ReasonRequired("Give a reason for this action.")
    if len(text) > REASON_MAX:
        raise ReasonRequired(f"Keep the reason to {REASON_MAX} characters.")
    if not text.isprintable():  # a line break, a control or an invisible format character
        raise ReasonRequired("Give the reason as one line of text.")
    return text


@dataclass(frozen=True, slots=True)
class PatronMatch:
    """One account `Helpdesk.find` found, and by which of its keys."""

    account_id: str
    username: str
    email: str | None
    state: State
    matched_by: tuple[MatchKey, ...]
    merged_into: str | None = None


@dataclass(frozen=True, slots=True)
class Block:
    """The login throttle's counter of the account: consecutive failures, and the block
    they caused (`blocked`: whether it still holds, by the database's clock)."""

    failures: int
    last_failure_at: datetime
    blocked_until: datetime | None
    blocked: bool


@dataclass(frozen=True, slots=True)
class SignIn:
    """One login attempt on the account with its password, from the audit trail."""

    at: datetime
    succeeded: bool
    browser: Browser
    remote: str | None


@dataclass(frozen=True, slots=True)
class ConnectedLibrary:
    client_id: str
    name: str  # as clients.yaml names it; the client_id for one no longer configured


@dataclass(frozen=True, slots=True)
class OpenSession:
    started_at: datetime
    last_seen_at: datetime
    browser: Browser
    libraries: tuple[ConnectedLibrary, ...]


@dataclass(frozen=True, slots=True)
class MailEntry:
    kind: str | None  # the template (`reset`, `activate`, ...); None for a mail from before
    recipient: str
    created_at: datetime
    state: MailState
    attempts: int
    sent_at: datetime | None
    last_error: str | None  # the last failure's reason (an SMTP reply), while not sent
    next_attempt_at: datetime | None  # while retrying


@dataclass(frozen=True, slots=True)
class PendingLink:
    purpose: Literal["reset", "activate"]
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class EndedPass:
    institution: str
    pass_number: str
    type: str | None
    ended_at: datetime


@dataclass(frozen=True, slots=True)
class PatronOverview:
    """Everything the helpdesk is shown of one patron."""

    account_id: str
    username: str
    email: str | None
    pass_number: str  # the account's first pass (X-Library-Pass-Number)
    state: State
    merged_into: str | None
    created_at: datetime
    memberships: tuple[Membership, ...]  # the live passes, oldest first
    ended_passes: tuple[EndedPass, ...]
    block: Block | None  # None: no failed logins on record
    sign_ins: tuple[SignIn, ...]  # newest first
    sessions: tuple[OpenSession, ...]  # most recently used first
    mails: tuple[MailEntry, ...]  # newest first
    links: tuple[PendingLink, ...]  # newest first

    def as_json(self) -> dict[str, Any]:
        """The overview as JSON-ready values (times and dates in ISO 8601)."""
        converted = _jsonable(asdict(self))
        assert isinstance(converted, dict)
        return converted


def _jsonable(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, tuple) and hasattr(value, "_asdict"):  # a NamedTuple: Browser
        return _jsonable(value._asdict())
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return value
