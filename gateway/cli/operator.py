"""The operator at the command line, as the audit trail names them.

Every `accounts` command that changes an account writes its row of the audit trail in the
change's own transaction: actor kind `operator`, its id the operating-system user running
the command (a command has no other identity: whoever can run it holds the database's
credentials), and the command in `details`.
"""

from __future__ import annotations

import os
import pwd
from typing import Any

from auth.audit import Actor, Event


def os_user() -> str:
    """The user this process runs as: its name, or `uid:N` for a uid without one (a
    container's arbitrary uid)."""
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid:{uid}"


def os_actor() -> Actor:
    return Actor("operator", os_user())


def event(action: str, command: str, account_id: str | None = None, **details: Any) -> Event:
    """The row of `action` by the operator running `library-gateway COMMAND`."""
    return Event(
        action,
        os_actor(),
        account_id=account_id,
        details={"command": command, **details},
    )
