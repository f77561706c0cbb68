"""When a session ends: idle and absolute lifetimes, decided from data inside the cookie.

The cookie stores the login time (`iat`) apart from the last activity (`seen`); `seen` is
rewritten at most once a minute so the proxy does not re-encrypt and resend the cookie on
every request.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

REFRESH_EVERY = 60.0


@dataclass(frozen=True, slots=True)
class Lifetimes:
    idle: float = 1800.0
    absolute: float = 43200.0


class Verdict(enum.Enum):
    VALID = "valid"
    REFRESH = "refresh"  # valid, and time to record the activity
    IDLE = "idle"
    EXPIRED = "expired"
    MALFORMED = "malformed"


def judge(iat: object, seen: object, now: float, limits: Lifetimes) -> Verdict:
    if not isinstance(iat, int | float) or not isinstance(seen, int | float):
        return Verdict.MALFORMED
    if isinstance(iat, bool) or isinstance(seen, bool):
        return Verdict.MALFORMED
    # A timestamp from the future is not something this gateway wrote.
    if iat > now + 60 or seen > now + 60 or seen < iat:
        return Verdict.MALFORMED
    if now - iat >= limits.absolute:
        return Verdict.EXPIRED
    if now - seen >= limits.idle:
        return Verdict.IDLE
    if now - seen >= REFRESH_EVERY:
        return Verdict.REFRESH
    return Verdict.VALID
