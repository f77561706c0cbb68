"""Everything the /auth/* pages need, assembled once and stored on the application."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg
import jinja2
from aiohttp import web

from auth import urls
from auth.credentials.devices import DeviceCodec
from auth.credentials.mail_limits import MailLimits
from auth.credentials.password_policy import PasswordPolicy
from auth.credentials.passwords import Hashing
from auth.credentials.throttle import Throttle
from auth.credentials.usernames import check_username
from auth.mail import Composer, Outbox
from auth.memberships import InstitutionTable
from auth.pages.theme import Theme
from auth.sessions.authenticator import Authenticator
from auth.sessions.lifetimes import Lifetimes
from auth.sessions.registry import SessionRegistry
from auth.signing import KeyStore
from auth.store.accounts import Account, Accounts
from auth.store.audit import AuditTrail
from auth.store.links import Links


@dataclass
class AuthServices:
    accounts: Accounts
    hasher: Hashing
    registry: SessionRegistry
    authenticator: Authenticator
    keys: KeyStore
    lifetimes: Lifetimes
    theme: Theme
    public_url: str
    links: Links
    outbox: Outbox
    composer: Composer
    pass_number_pattern: re.Pattern[str]
    throttle: Throttle
    mail_limits: MailLimits
    devices: DeviceCodec
    audit: AuditTrail
    policy: PasswordPolicy = field(default_factory=PasswordPolicy)
    reset_ttl: float = 1800.0
    activation_ttl: float = 7 * 86400.0
    personal_data_url: str = ""
    # Mail the patron when a browser new to their account logs in (GATEWAY_SIGNIN_NOTICES).
    signin_notices: bool = False
    # Work done after answering (forgot-password and -username), so the answer's timing
    # cannot tell whether an account matched. Kept here so shutdown can wait for it.
    background: set[asyncio.Task[None]] = field(default_factory=set)

    def username_for(self, account: Account, wanted: str, passes: Iterable[str] = ()) -> str:
        """`wanted` as `account`'s username under the rules (``UsernameRejected`` if not):
        the same for a member choosing one at activation and a patron changing theirs.
        `passes`: the pass numbers the account holds (passes linked from other libraries
        among them); each may be the username as its first may."""
        return check_username(
            wanted,
            own_pass_number=(account.pass_number, *passes),
            pass_number_pattern=self.pass_number_pattern,
        )

    async def replace_password(
        self,
        conn: asyncpg.Connection,
        account: Account,
        new_hash: str,
        *,
        lang: str,
        reset: bool,
        keep_sid: str | None = None,
    ) -> None:
        """Store a patron's new password inside the caller's transaction: every session of
        theirs ends (but `keep_sid`, the caller's own), every device cookie of theirs stops
        vouching for a browser, every reset link mailed before stops working (whoever got
        hold of one must not set a password after the patron chose a new one), and the
        notice to the stored address is queued with the change, so none of it happens
        without the rest."""
        await self.accounts.set_password_hash(account.id, new_hash, conn=conn)
        await self.accounts.void_devices(account.id, conn=conn)
        await self.links.void_all(conn, account.id)
        await self.registry.revoke_account(account.id, keep_sid=keep_sid, conn=conn)
        if account.email:
            await Outbox.put(
                conn,
                self.composer.compose(
                    "password_changed", lang, account.email, username=account.username, reset=reset
                ),
                account_id=account.id,
            )

    def after_response(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)


SERVICES = web.AppKey[AuthServices]("auth.services")


class InstitutionSource(Protocol):
    """The institutions in force (institutions.yaml, reloaded; or the one built in)."""

    @property
    def table(self) -> InstitutionTable: ...


@dataclass(frozen=True)
class FixedInstitutions:
    """An `InstitutionSource` that never changes (no institutions file)."""

    table: InstitutionTable


INSTITUTIONS = web.AppKey[InstitutionSource]("auth.institutions")


def template_environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("auth", "templates"),
        # HTML is escaped; mail text templates (.txt) are plain text and must not be.
        autoescape=jinja2.select_autoescape(["html"], default_for_string=True, default=False),
        undefined=jinja2.StrictUndefined,
        auto_reload=False,
    )
    # Forms and links name the pages as auth.urls does (`{{ urls.LOGIN }}`).
    environment.globals["urls"] = urls
    return environment


TEMPLATES = web.AppKey[jinja2.Environment]("auth.templates")
