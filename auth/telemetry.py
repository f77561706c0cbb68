"""What `auth` tells Prometheus: login outcomes, revoked sessions, mail, recovery mail and
back-channel logouts.

Declared here because auth owns these events; the gateway's admin listener exposes every
metric of the process (and of all workers, in multiprocess mode).
"""

from __future__ import annotations

from prometheus_client import Counter

LOGINS = Counter("gateway_logins_total", "Login attempts by outcome", ["outcome"])
SESSIONS_REVOKED = Counter(
    "gateway_sessions_revoked_total", "Sessions ended by logout, password change or reset"
)
SESSIONS_IN_GRACE = Counter(
    "gateway_sessions_in_grace_total",
    "Requests whose session was vouched for from this instance's cache because the database "
    "could not be asked (GATEWAY_DATABASE_GRACE)",
)
MAILS = Counter("gateway_mails_total", "Mail delivery attempts by result", ["result"])
BACKCHANNEL_LOGOUTS = Counter(
    "gateway_backchannel_logouts_total",
    "Back-channel logout attempts at connected libraries by outcome",
    ["outcome"],
)
RECOVERY_MAILS = Counter(
    "gateway_recovery_mails_total",
    "Mails the forgot-password and forgot-username forms were asked for, by form and outcome",
    ["form", "outcome"],
)
