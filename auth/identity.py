"""Who a request belongs to, as the proxy and the backends see it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Identity:
    user_id: str
    username: str
    pass_number: str
    session: str  # hex SHA-256 of the session id: names the session without revealing it
