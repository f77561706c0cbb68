"""The one question the proxy asks of `auth`: who is this request, and what do backends get?

Both entry points read the encrypted cookie, apply the idle and absolute lifetimes, and check
the session record (cached, revocable). Anything wrong at any step means anonymous, and the
cookie is cleared; nothing here raises for a bad cookie.

- `identify_cookie` (+ `settle` when the session record must be looked up) and `renew`: the
  proxy's path, run for every request, straight from the cookie's value (decrypted once per
  value) without building a session object;
- `identify`: the gateway's own pages, through aiohttp-session, which the pages use anyway.
"""

from __future__ import annotations

import enum
import functools
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, NamedTuple, cast
from urllib.parse import quote

from aiohttp import hdrs, web
from aiohttp_session import Session, SessionData, get_session

from auth.identity import Identity
from auth.memberships import header_value
from auth.sessions.cookies import SessionCookieStorage
from auth.sessions.lifetimes import REFRESH_EVERY, Lifetimes, Verdict, judge
from auth.sessions.registry import UNKNOWN, SessionRegistry
from auth.signing import IdentitySigner

# Printable ASCII but '%' passes as is; anything else is percent-encoded UTF-8, because header
# values are bytes without a declared charset.
_HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


@functools.lru_cache(maxsize=4096)
def header_safe(value: str) -> str:
    return quote(value, safe=_HEADER_SAFE)


_REFRESHED_KEPT = 10_000
IDENTITY = web.RequestKey[Identity | None]("auth.identity")
_ENDED = frozenset({Verdict.IDLE, Verdict.EXPIRED, Verdict.MALFORMED})


class Renewal(enum.Enum):
    """What a request's cookie needs on the way back."""

    KEEP = "keep"
    REFRESH = "refresh"  # still valid; record the activity (at most once a minute)
    CLEAR = "clear"  # ended, revoked or not ours: the browser should drop it


class Unsettled(NamedTuple):
    """A cookie that only its session record can settle (not in the cache just now)."""

    sid: str
    session: Mapping[str, Any]
    renewal: Renewal


class Authenticator:
    def __init__(
        self,
        storage: SessionCookieStorage,
        registry: SessionRegistry,
        signer: IdentitySigner,
        lifetimes: Lifetimes,
    ) -> None:
        self.storage = storage
        self.registry = registry
        self.signer = signer
        self.lifetimes = lifetimes
        self.cookie_name = storage.cookie_name
        self._refreshed: OrderedDict[str, tuple[str, float]] = OrderedDict()

    async def identify(self, request: web.Request) -> Identity | None:
        """Who is asking, for the gateway's own pages: the cookie is read through the page's
        aiohttp-session, which also writes any change to it."""
        if IDENTITY in request:
            return request[IDENTITY]
        identity = None
        if self.storage.load_cookie(request) is not None:
            session = await get_session(request)
            identity, renewal = await self._resolve(session)
            if renewal is Renewal.CLEAR:
                session.invalidate()
            elif renewal is Renewal.REFRESH:
                session["seen"] = int(time.time())
        request[IDENTITY] = identity
        return identity

    def identify_cookie(self, cookie: str | None) -> tuple[Identity | None, Renewal] | Unsettled:
        """Who is asking, for the proxy: straight from the cookie's value, without a
        session object (the proxy path runs this for every request); `renew` then puts
        the renewal on the response. Nearly always the answer is at hand (the session
        record is cached, or the cookie settles it alone), and no coroutine is spent on it;
        when only the session record can tell, the answer is `Unsettled`, for `settle`."""
        if cookie is None:
            return None, Renewal.KEEP
        data = self.storage.peek(cookie)
        if data is None:
            return None, Renewal.CLEAR
        session = data["session"]
        sid, renewal = self._examine(session)
        if sid is None:
            return None, renewal
        identity = self.registry.cached(sid)
        if identity is UNKNOWN:
            return Unsettled(sid, session, renewal)
        return self._confirm(identity, session, renewal)

    async def settle(self, unsettled: Unsettled) -> tuple[Identity | None, Renewal]:
        """`identify_cookie`'s answer, once the session record has been looked up."""
        identity = await self.registry.lookup(unsettled.sid)
        return self._confirm(identity, unsettled.session, unsettled.renewal)

    async def _resolve(self, session: Mapping[str, Any]) -> tuple[Identity | None, Renewal]:
        sid, renewal = self._examine(session)
        if sid is None:
            return None, renewal
        return self._confirm(await self.registry.lookup(sid), session, renewal)

    def _examine(self, session: Mapping[str, Any]) -> tuple[str | None, Renewal]:
        """The session id the cookie's data names, if its lifetimes allow, and what the
        cookie needs; (None, KEEP) for an anonymous session (a login form's CSRF token)."""
        sid = session.get("sid")
        if sid is None:
            return None, Renewal.KEEP
        if not isinstance(sid, str):
            return None, Renewal.CLEAR
        verdict = judge(session.get("iat"), session.get("seen"), time.time(), self.lifetimes)
        if verdict in _ENDED:
            return None, Renewal.CLEAR
        return sid, Renewal.REFRESH if verdict is Verdict.REFRESH else Renewal.KEEP

    def _confirm(
        self, identity: Identity | None, session: Mapping[str, Any], renewal: Renewal
    ) -> tuple[Identity | None, Renewal]:
        """The session record must exist, be live and belong to the cookie's account. A
        renewal is also the moment to note the activity for the patron's list of sessions
        (in memory; the registry writes it in batches)."""
        if identity is None or identity.user_id != session.get("uid"):
            return None, Renewal.CLEAR
        if renewal is Renewal.REFRESH:
            self.registry.seen(identity.session)
        return identity, renewal

    def identity_headers(self, identity: Identity, audience: str) -> list[tuple[str, str]]:
        found = [
            ("X-Library-User-Id", identity.user_id),
            ("X-Library-Username", header_safe(identity.username)),
            ("X-Library-Pass-Number", header_safe(identity.pass_number)),
            ("X-Library-Identity", self.signer.token(identity, audience)),
        ]
        if identity.memberships:
            # Absent when the patron holds none (never an empty header).
            found.append(("X-Library-Memberships", header_safe(header_value(identity.memberships))))
        return found

    async def renew(
        self, request: web.Request, response: web.StreamResponse, cookie: str, renewal: Renewal
    ) -> None:
        """Put the cookie change `identify_cookie` asked for on a proxied response.

        A client that does not store cookies (a script, a load test) sends the same old
        cookie every time; refreshing it would cost an encryption on every request, so the
        refreshed Set-Cookie header is remembered for a minute and sent again as it is.
        """
        if renewal is Renewal.CLEAR:
            self.storage.save_cookie(response, "")
            return
        if renewal is not Renewal.REFRESH:
            return
        now = time.monotonic()
        remembered = self._refreshed.get(cookie)
        if remembered is not None and now - remembered[1] < REFRESH_EVERY:
            response.headers.add(hdrs.SET_COOKIE, remembered[0])
            return
        data = self.storage.decode(cookie)
        if data is None:
            return
        session = Session(None, data=cast(SessionData, data), new=False, max_age=None)
        session["seen"] = int(time.time())
        await self.storage.save_session(request, response, session)
        morsel = response.cookies.get(self.cookie_name)
        if morsel is not None:
            self._refreshed[cookie] = (morsel.OutputString(), now)
            while len(self._refreshed) > _REFRESHED_KEPT:
                self._refreshed.popitem(last=False)
