"""Who a request belongs to, as the proxy and the backends see it."""

from __future__ import annotations

from dataclasses import dataclass

from auth.memberships import Membership


@dataclass(frozen=True, slots=True)
class Identity:
    user_id: str
    username: str
    pass_number: str
    session: str  # hex SHA-256 of the session id: names the session without revealing it
    memberships: tuple[Membership, ...] = ()
    """The account's passes that have not ended (valid or not: a rule tells them apart)."""
