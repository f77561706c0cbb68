"""Managing staff accounts: the command line (`library-gateway staff …`) and the admin's
pages do it through this one class, so both write the same audit rows in the same
transactions as their changes.

Every change ends what it must: disabling a member ends their sessions and voids their
activation link; starting over (the lost-factor procedure) removes their password, factors
and recovery codes, ends their sessions and mails a new activation link.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from auth import urls
from auth.audit import Actor, Event, Origin
from auth.mail import Composer, Outbox
from auth.staff.model import (
    NotOnYourself,
    Role,
    StaffMember,
    UnknownMember,
    checked_email,
    checked_role,
)
from auth.store.audit import AuditTrail
from auth.store.staff import StaffMembers
from auth.store.staff_factors import StaffFactors
from auth.store.staff_sessions import StaffSessions


@dataclass(frozen=True)
class StaffManagement:
    members: StaffMembers
    factors: StaffFactors
    sessions: StaffSessions
    audit: AuditTrail
    composer: Composer
    public_url: str
    link_ttl: float

    async def invite(
        self,
        email: str,
        role: str,
        *,
        actor: Actor,
        origin: Origin,
        reason: str | None = None,
        lang: str = "nl",
    ) -> StaffMember:
        """Add a member and mail their activation link (`EmailTaken` if the address has an
        account already)."""
        address, checked = checked_email(email), checked_role(role)
        async with self.members.transaction() as conn:
            member = await self.members.add(address, checked, conn=conn)
            await self._mail_link(conn, member, lang)
            await self.audit.record(
                Event(
                    "staff_added",
                    actor,
                    origin,
                    staff_id=member.id,
                    reason=reason,
                    details={"email": member.email, "role": member.role},
                ),
                conn=conn,
            )
        return member

    async def start_over(
        self,
        member_id: str,
        *,
        actor: Actor,
        origin: Origin,
        reason: str | None = None,
        lang: str = "nl",
    ) -> StaffMember:
        """The lost-factor procedure, and a new link for one who never finished activating:
        password, factors and recovery codes gone, sessions ended, a new activation link
        mailed (the old ones void)."""
        self._not_yourself(actor, member_id)
        async with self.members.transaction() as conn:
            member = await self.members.by_id(member_id, conn=conn, lock=True)
            if member is None:
                raise UnknownMember(member_id)
            await self.factors.remove_all(member.id, conn=conn)
            await self.members.start_over(member.id, conn=conn)
            await self.sessions.end_all(member.id, conn=conn)
            await self._mail_link(conn, member, lang)
            await self.audit.record(
                Event("staff_reset", actor, origin, staff_id=member.id, reason=reason),
                conn=conn,
            )
        return member

    async def set_disabled(
        self,
        member_id: str,
        disabled: bool,
        *,
        actor: Actor,
        origin: Origin,
        reason: str | None = None,
    ) -> tuple[StaffMember, bool, int]:
        """Disable (every session ends, the activation link is void) or enable a member;
        returns the member, whether anything changed, and how many sessions ended."""
        self._not_yourself(actor, member_id)
        async with self.members.transaction() as conn:
            member = await self.members.by_id(member_id, conn=conn, lock=True)
            if member is None:
                raise UnknownMember(member_id)
            changed = await self.members.set_disabled(member.id, disabled, conn=conn)
            ended = 0
            if disabled:
                # Also when disabled already: nothing of theirs may stay open.
                ended = await self.sessions.end_all(member.id, conn=conn)
                await self.members.void_links(member.id, conn=conn)
            if changed:
                await self.audit.record(
                    Event(
                        "staff_disabled" if disabled else "staff_enabled",
                        actor,
                        origin,
                        staff_id=member.id,
                        reason=reason,
                        details={"sessions_ended": ended} if disabled else {},
                    ),
                    conn=conn,
                )
        return member, changed, ended

    async def set_role(
        self,
        member_id: str,
        role: str,
        *,
        actor: Actor,
        origin: Origin,
        reason: str | None = None,
    ) -> tuple[StaffMember, bool]:
        new_role: Role = checked_role(role)
        self._not_yourself(actor, member_id)
        async with self.members.transaction() as conn:
            member = await self.members.by_id(member_id, conn=conn, lock=True)
            if member is None:
                raise UnknownMember(member_id)
            changed = await self.members.set_role(member.id, new_role, conn=conn)
            if changed:
                await self.audit.record(
                    Event(
                        "staff_role_changed",
                        actor,
                        origin,
                        staff_id=member.id,
                        reason=reason,
                        details={"from": member.role, "to": new_role},
                    ),
                    conn=conn,
                )
        return member, changed

    @staticmethod
    def _not_yourself(actor: Actor, member_id: str) -> None:
        if actor.kind == "staff" and actor.id == member_id:
            raise NotOnYourself(member_id)

    async def _mail_link(self, conn: object, member: StaffMember, lang: str) -> None:
        token = await self.members.issue_link(member.id, self.link_ttl, conn=conn)
        link = f"{self.public_url}{urls.STAFF_ACTIVATE}?token={quote(token)}"
        await Outbox.put(
            conn,
            self.composer.compose(
                "staff_activate",
                lang,
                member.email,
                email=member.email,
                role=member.role,
                link=link,
                days=max(1, int(self.link_ttl // 86400)),
            ),
        )
