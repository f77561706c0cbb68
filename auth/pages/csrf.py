"""CSRF tokens bound to the session: one random token per session, compared in constant time.

The session cookie is SameSite=Lax already; the token is the second lock, and the one that
also covers login CSRF (an attacker logging a patron into the attacker's account).

A form that answers one particular question kept in the session (the OpenID Connect consent
page: which client, which scopes) carries a token bound to that question instead
(`bound_token`): a page shown for one question then cannot answer another that replaced it in
the session meanwhile, and no other site can make one, since it is keyed by the session's own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import MutableMapping
from typing import Any

FIELD = "csrf_token"


def token_for(session: MutableMapping[str, Any]) -> str:
    token = session.get("csrf")
    if not isinstance(token, str) or len(token) < 32:
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def valid(session: MutableMapping[str, Any], sent: object) -> bool:
    expected = session.get("csrf")
    if not isinstance(expected, str) or not isinstance(sent, str) or not sent:
        return False
    return hmac.compare_digest(expected.encode(), sent.encode("utf-8", "replace"))


def bound_token(session: MutableMapping[str, Any], purpose: str) -> str:
    """A token for the form shown for `purpose` only: `purpose` and its HMAC under this
    session's token."""
    return f"{purpose}.{_mac(token_for(session), purpose)}"


def bound_purpose(session: MutableMapping[str, Any], sent: object) -> str | None:
    """The purpose `sent` was made for by `bound_token` in this session; None for anything
    else (a plain token included: it answers no particular question)."""
    expected = session.get("csrf")
    if not isinstance(expected, str) or not isinstance(sent, str):
        return None
    purpose, dot, mac = sent.rpartition(".")
    if not dot or not purpose:
        return None
    if not hmac.compare_digest(_mac(expected, purpose).encode(), mac.encode("utf-8", "replace")):
        return None
    return purpose


def _mac(key: str, purpose: str) -> str:
    digest = hmac.new(key.encode(), b"bound\x00" + purpose.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
