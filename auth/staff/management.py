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
    NotAnAdmin,
    NotOnYourself,
    Role,
    StaffMember,
    UnknownMember,
    checked_email,
    checked_role,
)
from auth.staff.passkeys import RelyingParty
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
        async with self.members.transaction() as conn:
            member = await self._other(actor, member_id, conn)
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
        async with self.members.transaction() as conn:
            member = await self._other(actor, member_id, conn)
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
        async with self.members.transaction() as conn:
            member = await self._other(actor, member_id, conn)
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

    async def _other(self, actor: Actor, member_id: str, conn: object) -> StaffMember:
        """The member `member_id` names, locked; never the staff member acting. Judged by the
        id as stored: PostgreSQL reads a uuid in capitals, without dashes or in braces too,
        and each of those is still the actor's own account.

        A staff member acting is locked with the member and must still be an active admin
        once both rows are held: two admins demoting or disabling each other at the same
        moment are done one after the other, and the second finds itself no admin any more
        (the console keeps an admin; the command line, an operator, is not held to this)."""
        member = await self.members.by_id(member_id, conn=conn)
        if member is None:
            raise UnknownMember(member_id)
        acting_id = actor.id if actor.kind == "staff" else None
        if acting_id is None:
            locked = await self.members.lock([member.id], conn=conn)
        elif acting_id == member.id:
            raise NotOnYourself(member.id)
        else:
            locked = await self.members.lock([member.id, acting_id], conn=conn)
            acting = locked.get(acting_id)
            if acting is None or acting.role != "admin" or acting.disabled:
                raise NotAnAdmin(acting_id)
        if member.id not in locked:
            raise UnknownMember(member_id)
        return locked[member.id]

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
                # At an IP address (the demo's console) the enrolment offers the app alone.
                passkeys=RelyingParty.for_public_url(self.public_url, "").usable,
            ),
        )
