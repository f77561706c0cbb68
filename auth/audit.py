"""The audit trail's vocabulary: who did what to whom, and the request it came with.

Every staff action and every security event of a patron becomes one `Event`, written by
`auth.store.audit.AuditTrail.record` inside the transaction of the change it records (so a
change without its row, or a row without its change, cannot happen). The one exception is a
failed login (and the block it may start): written as work the answer does not wait for, so a
wrong password for a real account and an unknown name cost the same before the patron is
answered (`auth.pages.trail`). The table refuses UPDATE, DELETE and TRUNCATE (migration 0010).
`ACTIONS` lists every action the gateway writes: the patron's account page and the staff
console show its words (`label`, from auth/locales), `audit export` writes its name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from auth.pages import i18n

ActorKind = Literal["patron", "staff", "operator", "system"]

REQUEST_ID = web.RequestKey("request_id", str)
"""The request's id as the gateway logs it (set by the gateway's middleware), so a row of
the trail and the lines of the access log find each other."""

USER_AGENT_LIMIT = 300
REASON_LIMIT = 500


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acted: a patron (their account id and username), a staff member (id, e-mail), an
    operator at the command line (the OS user), or the gateway itself (`system`)."""

    kind: ActorKind
    id: str | None = None
    name: str | None = None


SYSTEM = Actor("system")


def patron(account_id: str | None = None, username: str | None = None) -> Actor:
    """A patron acting as `account_id`; without one, somebody not logged in (a failed login,
    a reset link asked for) whose claim to an account is the row's `account_id`."""
    return Actor("patron", account_id, username)


@dataclass(frozen=True, slots=True)
class Origin:
    """Where an action came from: the client address, its browser and the request's id."""

    remote: str | None = None
    user_agent: str | None = None
    request_id: str | None = None


NO_ORIGIN = Origin()


def origin_of(request: web.Request) -> Origin:
    """The `Origin` of a request the gateway's middleware has seen (client address as the
    gateway trusts it: `auth.credentials.throttle.CLIENT_ADDRESS`)."""
    from auth.credentials.throttle import CLIENT_ADDRESS

    agent = request.headers.get("User-Agent")
    return Origin(
        remote=request.get(CLIENT_ADDRESS),
        user_agent=agent[:USER_AGENT_LIMIT] if agent else None,
        request_id=request.get(REQUEST_ID),
    )


@dataclass(frozen=True, slots=True)
class Event:
    """One row of the trail. `account_id`: the patron concerned; `staff_id`: the staff
    member concerned (an admin's action on a colleague); `details`: small facts of the event
    (never a password, token or mail body)."""

    action: str
    actor: Actor
    origin: Origin = NO_ORIGIN
    account_id: str | None = None
    staff_id: str | None = None
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown audit action {self.action!r}: add it to auth.audit.ACTIONS")


# Every action the trail holds. Its words, for the account page (NL/EN) and the console, are
# in auth/locales as `audit.<action>`; `ACTIONS` maps each to its English words. Grouped by
# who acts; a patron sees the rows about their own account.
_NAMES = (
    # a patron's security events
    "login_succeeded",
    "login_failed",
    "login_blocked",
    "logout",
    "password_changed",
    "password_reset",
    "password_reset_requested",
    "username_changed",
    "email_changed",
    "account_activated",
    "session_ended",
    "sessions_ended",
    "account_merged",
    "account_absorbed",
    "pass_linked",
    "membership_ended",
    "legacy_hash_upgraded",
    "refresh_token_reuse",
    # a helpdesk's (or admin's) actions on a patron
    "helpdesk_viewed",
    "helpdesk_reset_sent",
    "helpdesk_activation_resent",
    "helpdesk_block_lifted",
    "helpdesk_sessions_ended",
    "helpdesk_disabled",
    "helpdesk_enabled",
    "helpdesk_email_corrected",
    # staff: their own login, and an admin's management of staff
    "staff_login_succeeded",
    "staff_login_failed",
    "staff_login_blocked",
    "staff_logout",
    "staff_factor_added",
    "staff_factor_removed",
    "staff_recovery_code_used",
    "staff_added",
    "staff_activated",
    "staff_disabled",
    "staff_enabled",
    "staff_role_changed",
    "staff_reset",
    "staff_recovery_codes_renewed",
    # an operator at the command line
    "operator_account_added",
    "operator_account_changed",
    "operator_import",
)

# A name without its words in both languages fails here, at import, not on a page.
ACTIONS: dict[str, str] = {name: i18n.MESSAGES["en"][f"audit.{name}"] for name in _NAMES}
for _lang, _messages in i18n.MESSAGES.items():
    _missing = [name for name in _NAMES if f"audit.{name}" not in _messages]
    if _missing:
        raise LookupError(f"auth/locales/{_lang}.json has no words for {_missing}")


def label(action: str, lang: str) -> str:
    """What an action is called in `lang`; a name this version does not know (a row written
    by a newer one) as it is."""
    return i18n.translator(lang).get(f"audit.{action}", action)
