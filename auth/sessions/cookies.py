"""The encrypted session cookie: its keys, its flags and how a bad one is treated.

aiohttp-session's EncryptedCookieStorage does the encryption; this module gives it a MultiFernet
(the first key encrypts, every key decrypts, so keys rotate without logging anybody out), sets
the cookie's security flags in one place, and makes every unreadable cookie (tampered,
truncated, foreign key, oversized, garbage) an anonymous session that clears the cookie.
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from aiohttp import web
from aiohttp_session import Session, SessionData
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

log = logging.getLogger("auth.cookies")

COOKIE_NAME = "library_session"
# Browsers cap a cookie near 4 KiB; ours is a few hundred bytes. Anything larger is not ours.
MAX_COOKIE_BYTES = 4096
DECODED_CACHE_SIZE = 100_000
"""The default of GATEWAY_SESSION_CACHE_SIZE: cookies kept decoded, least recently used out."""


class CookieKeyError(ValueError):
    """GATEWAY_COOKIE_KEYS holds something that is not a Fernet key."""


def parse_keys(value: str) -> MultiFernet:
    keys = [item.strip() for item in value.split(",") if item.strip()]
    if not keys:
        raise CookieKeyError("no keys given")
    try:
        return MultiFernet([Fernet(key) for key in keys])
    except ValueError as exc:
        raise CookieKeyError(
            "each key must be 32 url-safe base64-encoded bytes "
            "(make one with: library-gateway keys new-cookie-key)"
        ) from exc


def load_or_create_key_file(data_dir: Path) -> str:
    """The key kept in the data dir when GATEWAY_COOKIE_KEYS is unset (made once, 0600)."""
    path = data_dir / "cookie.key"
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key().decode("ascii")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="ascii").strip()  # another process won the race
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(key + "\n")
    log.warning(
        "GATEWAY_COOKIE_KEYS is not set: using a key kept in the data dir. Set it for "
        "production and for more than one instance.",
        extra={"key_file": str(path)},
    )
    return key


def cookie_value(header: str | None, name: str) -> str | None:
    """Our cookie's value from a Cookie header, without parsing every other cookie into
    Morsels (the proxy path runs this on every request). Browsers send the most specific
    cookie first; with the same name twice, the first one is taken, as aiohttp does."""
    if not header or name not in header:
        return None
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip().strip('"')
    return None


def cookie_name(secure: bool) -> str:
    # The __Host- prefix makes browsers refuse the cookie unless it is Secure, host-only and
    # Path=/, so a sibling subdomain cannot plant or shadow it.
    return f"__Host-{COOKIE_NAME}" if secure else COOKIE_NAME


def cookie_flags(secure: bool) -> dict[str, Any]:
    """The cookie's attributes, in one place. No Max-Age/Expires: it ends with the browser."""
    return {"path": "/", "domain": None, "secure": secure, "httponly": True, "samesite": "Lax"}


class SessionCookieStorage(EncryptedCookieStorage):
    def __init__(
        self, fernet: MultiFernet, *, secure: bool, cache_size: int = DECODED_CACHE_SIZE
    ) -> None:
        flags = cookie_flags(secure)
        super().__init__(
            Fernet(Fernet.generate_key()),  # replaced below; the base class wants a Fernet
            cookie_name=cookie_name(secure),
            max_age=None,
            path=flags["path"],
            domain=flags["domain"],
            secure=flags["secure"],
            httponly=flags["httponly"],
            samesite=flags["samesite"],
        )
        self._fernet = fernet  # type: ignore[assignment]
        self._secure = secure
        self._decoded: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._cache_size = cache_size

    def load_cookie(self, request: web.Request) -> str | None:
        return cookie_value(request.headers.get("Cookie"), self.cookie_name)

    async def load_session(self, request: web.Request) -> Session:
        cookie = self.load_cookie(request)
        if cookie is None:
            return Session(None, data=None, new=True, max_age=None)
        data = self.decode(cookie)
        if data is None:
            session = Session(None, data=None, new=True, max_age=None)
            session.invalidate()  # changed and empty: the response clears the bad cookie
            return session
        return Session(None, data=cast(SessionData, data), new=False, max_age=None)

    def decode(self, cookie: str) -> dict[str, Any] | None:
        """The cookie's data as a fresh copy the caller may change, or None when it is not
        a cookie this gateway wrote."""
        data = self.peek(cookie)
        if data is None:
            return None
        return {"created": data["created"], "session": dict(data["session"])}

    def peek(self, cookie: str) -> Mapping[str, Any] | None:
        """The cookie's data, shared with the cache (read it, never change it), or None when
        it is not a cookie this gateway wrote.

        Decrypting costs more than the rest of a proxied request's own work, and a patron
        sends the same cookie until it is refreshed (at most once a minute), so good cookies
        are remembered in a small LRU keyed by their exact value. Only successful decodes
        are kept: garbage is never cached, so it cannot push good entries out.
        """
        cached = self._decoded.get(cookie)
        if cached is not None:
            self._decoded.move_to_end(cookie)
            return cached
        if len(cookie) > MAX_COOKIE_BYTES:
            return None
        try:
            plain = self._fernet.decrypt(cookie.encode("ascii"))
            data = json.loads(plain)
        except (InvalidToken, UnicodeError, ValueError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("session"), dict):
            return None
        data.setdefault("created", None)
        self._decoded[cookie] = data
        if len(self._decoded) > self._cache_size:
            self._decoded.popitem(last=False)
        return data

    def save_cookie(
        self, response: web.StreamResponse, cookie_data: str, *, max_age: int | None = None
    ) -> None:
        if cookie_data:
            response.set_cookie(self.cookie_name, cookie_data, **cookie_flags(self._secure))
        else:
            response.del_cookie(
                self.cookie_name, path="/", secure=self._secure, httponly=True, samesite="Lax"
            )
