"""Staff sessions: the cookie that carries one, and when one ends. Pure: no I/O (the rows
are in `auth.store.staff_sessions`).

A staff session is a row on the server, named by a random token in a cookie of its own
(`library_staff`, `__Secure-` with an https public URL): Path=/staff/, so no backend and no
patron page ever receives it; HttpOnly; SameSite=Strict; no Max-Age (it ends with the
browser). Every console request reads the row, so ending a session (sign-out, a disabled
member, an admin's change) holds on every instance at once.

A session has a stage. `password`: the password was right, the second factor is still to
come. `enrol`: a new member chose a password through their activation link and must now
enrol a factor. Both are short (`Lifetimes.pending`) and open only the pages of that step.
`full`: signed in, with the idle and absolute limits of GATEWAY_STAFF_IDLE_TIMEOUT and
GATEWAY_STAFF_SESSION_LIFETIME. A stage is never raised in place: the next stage is a new
row with a new token (no session fixation).

Forms made before there is a session (sign-in, activation) are bound to a second cookie,
`library_staff_form`: a random value of the browser's with the same flags, which the CSRF
token is derived from (`auth.staff.csrf`).
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from typing import Any, Literal

from auth import urls

Stage = Literal["password", "enrol", "full"]
COOKIE_NAME = "library_staff"
FORM_COOKIE_NAME = "library_staff_form"
MAX_TOKEN = 128


@dataclass(frozen=True, slots=True)
class Lifetimes:
    idle: float = 900.0
    absolute: float = 8 * 3600.0
    pending: float = 900.0
    """Seconds a session waiting for its second factor (or an enrolment) may last."""


def cookie_name(secure: bool, name: str = COOKIE_NAME) -> str:
    # __Secure- makes browsers refuse the cookie unless it came over https with Secure.
    # (__Host- would need Path=/, and this cookie must go nowhere but the console.)
    return f"__Secure-{name}" if secure else name


def cookie_flags(secure: bool) -> dict[str, Any]:
    """The attributes of both staff cookies, in one place."""
    return {
        "path": urls.STAFF + "/",
        "domain": None,
        "secure": secure,
        "httponly": True,
        "samesite": "Strict",
    }


def new_token() -> str:
    return secrets.token_urlsafe(32)


def plausible(token: str | None) -> bool:
    return token is not None and 20 <= len(token) <= MAX_TOKEN and token.isascii()


def live(
    stage: str,
    created_at: dt.datetime,
    last_seen_at: dt.datetime,
    now: dt.datetime,
    limits: Lifetimes,
) -> bool:
    """Whether a session that has not been ended is still good at `now` (the database's
    clock: every instance judges by the same one)."""
    age = (now - created_at).total_seconds()
    idle = (now - last_seen_at).total_seconds()
    if age < -60 or idle < -60:
        return False  # from the future: not a row this gateway wrote
    absolute = limits.absolute if stage == "full" else limits.pending
    return age < absolute and idle < limits.idle
