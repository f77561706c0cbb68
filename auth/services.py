"""Everything the /auth/* pages need, assembled once and stored on the application."""

from __future__ import annotations

from dataclasses import dataclass

import jinja2
from aiohttp import web

from auth.accounts import Accounts
from auth.gate import Authenticator
from auth.lifetimes import Lifetimes
from auth.passwords import PasswordHasher
from auth.sessions import SessionRegistry
from auth.theme import Theme
from auth.tokens import KeyStore


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


SERVICES = web.AppKey[AuthServices]("auth.services")


def template_environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("auth", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        auto_reload=False,
    )


TEMPLATES = web.AppKey[jinja2.Environment]("auth.templates")
