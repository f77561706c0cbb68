"""The audit trail's vocabulary: who did what to whom, and the request it came with.

Every staff action and every security event of a patron becomes one `Event`, written by
`auth.store.audit.AuditTrail.record` inside the transaction of the change it records (so a
change without its row, or a row without its change, cannot happen). The table refuses
UPDATE, DELETE and TRUNCATE (migration 0010). `ACTIONS` lists every action the gateway
writes: the patron's account page and the staff console show its label, `audit export`
writes its name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

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


# Every action the trail holds, with the words the account page and the console show.
# Grouped by who acts; a patron sees the rows about their own account.
ACTIONS: dict[str, str] = {
    # a patron's security events
    "login_succeeded": "Signed in",
    "login_failed": "Sign-in failed (wrong password)",
    "login_blocked": "Sign-ins blocked after too many failures",
    "logout": "Signed out",
    "password_changed": "Password changed",
    "password_reset": "Password reset by mail link",
    "password_reset_requested": "Password reset link requested",
    "username_changed": "Username changed",
    "email_changed": "E-mail address changed",
    "account_activated": "Account activated",
    "session_ended": "Session ended",
    "sessions_ended": "All sessions ended",
    "account_merged": "Another account merged into this one",
    "pass_linked": "Library pass added",
    "membership_ended": "Library pass ended",
    "legacy_hash_upgraded": "Password storage upgraded",
    "refresh_token_reuse": "A spent refresh token was presented again",
    # a helpdesk's (or admin's) actions on a patron
    "helpdesk_viewed": "Account looked up by the helpdesk",
    "helpdesk_reset_sent": "Helpdesk sent a password-reset link",
    "helpdesk_activation_resent": "Helpdesk resent the activation mail",
    "helpdesk_block_lifted": "Helpdesk lifted the sign-in block",
    "helpdesk_sessions_ended": "Helpdesk ended all sessions",
    "helpdesk_disabled": "Helpdesk disabled the account",
    "helpdesk_enabled": "Helpdesk enabled the account",
    "helpdesk_email_corrected": "Helpdesk corrected the e-mail address",
    # staff: their own login, and an admin's management of staff
    "staff_login_succeeded": "Staff signed in",
    "staff_login_failed": "Staff sign-in failed",
    "staff_login_blocked": "Staff sign-ins blocked after too many failures",
    "staff_logout": "Staff signed out",
    "staff_factor_added": "Staff second factor added",
    "staff_factor_removed": "Staff second factor removed",
    "staff_recovery_code_used": "Staff recovery code used",
    "staff_added": "Staff account added",
    "staff_activated": "Staff account activated",
    "staff_disabled": "Staff account disabled",
    "staff_enabled": "Staff account enabled",
    "staff_role_changed": "Staff role changed",
    # an operator at the command line
    "operator_account_added": "Account added on the command line",
    "operator_account_changed": "Account changed on the command line",
    "operator_import": "Accounts imported on the command line",
}
