"""Everything the console's pages need, assembled once (by the gateway's `create_app`) and
kept on the application under `STAFF_SERVICES`."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg
from aiohttp import web
from cryptography.fernet import MultiFernet

from auth.credentials.password_policy import PasswordPolicy
from auth.credentials.passwords import Hashing
from auth.credentials.throttle import Throttle
from auth.mail import Composer
from auth.staff.management import StaffManagement
from auth.staff.passkeys import RelyingParty
from auth.staff.secrets import SecretBox
from auth.staff.sessions import Lifetimes
from auth.store.audit import AuditTrail
from auth.store.staff import StaffMembers
from auth.store.staff_factors import StaffFactors
from auth.store.staff_sessions import StaffSessions


@dataclass
class StaffServices:
    members: StaffMembers
    factors: StaffFactors
    sessions: StaffSessions
    management: StaffManagement
    hasher: Hashing
    throttle: Throttle
    audit: AuditTrail
    box: SecretBox
    relying_party: RelyingParty
    lifetimes: Lifetimes
    secure: bool
    issuer: str
    """The name authenticator apps show beside the codes, and passkeys carry."""
    policy: PasswordPolicy = field(default_factory=PasswordPolicy)

    @classmethod
    def assemble(
        cls,
        pool: asyncpg.Pool,
        *,
        cookie_keys: MultiFernet,
        hasher: Hashing,
        throttle: Throttle,
        audit: AuditTrail,
        composer: Composer,
        public_url: str,
        library_name: str,
        lifetimes: Lifetimes,
        link_ttl: float,
    ) -> StaffServices:
        members, factors, sessions = StaffMembers(pool), StaffFactors(pool), StaffSessions(pool)
        issuer = f"{library_name} staff"
        return cls(
            members=members,
            factors=factors,
            sessions=sessions,
            management=StaffManagement(
                members, factors, sessions, audit, composer, public_url, link_ttl
            ),
            hasher=hasher,
            throttle=throttle,
            audit=audit,
            box=SecretBox(cookie_keys),
            relying_party=RelyingParty.for_public_url(public_url, issuer),
            lifetimes=lifetimes,
            secure=public_url.startswith("https://"),
            issuer=issuer,
        )


STAFF_SERVICES = web.AppKey[StaffServices]("auth.staff.services")
