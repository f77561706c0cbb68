"""Who a console request is signed in as: set by the guard (`auth.staff.guard.gate`), read
by every console page."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from auth.staff.model import Role
from auth.store.staff_sessions import StaffSession


@dataclass(frozen=True, slots=True)
class StaffIdentity:
    """The staff member a console request is signed in as."""

    id: str
    email: str
    role: Role

    @property
    def admin(self) -> bool:
        return self.role == "admin"


STAFF = web.RequestKey[StaffIdentity]("auth.staff.identity")
"""The signed-in staff member (a session at stage `full`)."""
SESSION = web.RequestKey[StaffSession]("auth.staff.session")
"""The live staff session the cookie names, at any stage."""
