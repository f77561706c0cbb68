"""Everything the /auth/* pages need, assembled once and stored on the application."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import jinja2
from aiohttp import web

from auth.credentials.password_policy import PasswordPolicy
from auth.credentials.passwords import PasswordHasher
from auth.credentials.throttle import Throttle
from auth.mail import Composer, Outbox
from auth.pages.theme import Theme
from auth.sessions.authenticator import Authenticator
from auth.sessions.lifetimes import Lifetimes
from auth.sessions.registry import SessionRegistry
from auth.signing import KeyStore
from auth.store.accounts import Accounts
from auth.store.links import Links


@dataclass
class AuthServices:
    accounts: Accounts
    hasher: PasswordHasher
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
    policy: PasswordPolicy = field(default_factory=PasswordPolicy)
    reset_ttl: float = 1800.0
    activation_ttl: float = 7 * 86400.0
    personal_data_url: str = ""
    # Work done after answering (forgot-password and -username), so the answer's timing
    # cannot tell whether an account matched. Kept here so shutdown can wait for it.
    background: set[asyncio.Task[None]] = field(default_factory=set)

    def after_response(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)


SERVICES = web.AppKey[AuthServices]("auth.services")


def template_environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("auth", "templates"),
        # HTML is escaped; mail text templates (.txt) are plain text and must not be.
        autoescape=jinja2.select_autoescape(["html"], default_for_string=True, default=False),
        undefined=jinja2.StrictUndefined,
        auto_reload=False,
    )


TEMPLATES = web.AppKey[jinja2.Environment]("auth.templates")
