"""The one question the proxy asks of `auth`: who is this request, and what do backends get?

`identify` reads the encrypted cookie, applies the idle and absolute lifetimes, and checks the
session record (cached, revocable). Anything wrong at any step means anonymous, and the cookie
is cleared; nothing here raises for a bad cookie.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from urllib.parse import quote

from aiohttp import web
from aiohttp_session import SESSION_KEY, Session, get_session

from auth.cookies import SessionCookieStorage
from auth.identity import Identity
from auth.lifetimes import REFRESH_EVERY, Lifetimes, Verdict, judge
from auth.sessions import SessionRegistry
from auth.tokens import IdentitySigner

# Printable ASCII but '%' passes as is; anything else is percent-encoded UTF-8, because header
# values are bytes without a declared charset.
_HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def header_safe(value: str) -> str:
    return quote(value, safe=_HEADER_SAFE)


_REFRESHING = web.RequestKey("auth.refreshing", bool)
_REFRESHED_KEPT = 10_000
IDENTITY = web.RequestKey[Identity | None]("auth.identity")


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
        if IDENTITY in request:
            return request[IDENTITY]
        identity = await self._identify(request)
        request[IDENTITY] = identity
        return identity

    async def _identify(self, request: web.Request) -> Identity | None:
        if self.storage.load_cookie(request) is None:
            return None
        session = await get_session(request)
        sid = session.get("sid")
        if sid is None:
            return None  # an anonymous session (say, a login form's CSRF token): keep it
        if not isinstance(sid, str):
            session.invalidate()
            return None
        verdict = judge(session.get("iat"), session.get("seen"), time.time(), self.lifetimes)
        if verdict in (Verdict.IDLE, Verdict.EXPIRED, Verdict.MALFORMED):
            session.invalidate()
            return None
        identity = await self.registry.lookup(sid)
        if identity is None or identity.user_id != session.get("uid"):
            session.invalidate()
            return None
        if verdict is Verdict.REFRESH:
            session["seen"] = int(time.time())
            request[_REFRESHING] = True
        return identity

    def identity_headers(self, identity: Identity, audience: str) -> dict[str, str]:
        return {
            "X-Library-User-Id": identity.user_id,
            "X-Library-Username": header_safe(identity.username),
            "X-Library-Pass-Number": identity.pass_number,
            "X-Library-Identity": self.signer.token(identity, audience),
        }

    async def finish(self, request: web.Request, response: web.StreamResponse) -> None:
        """Write the cookie before the response starts (aiohttp-session's middleware only
        does so for a web.Response, and would then find nothing left to do): refreshed
        activity, or cleared when the session ended.

        A client that does not store cookies (a script, a load test) sends the same old
        cookie every time; refreshing it would cost an encryption on every request, so the
        refreshed value is remembered for a minute and sent again as it is.
        """
        session: Session | None = request.get(SESSION_KEY)
        if session is None or not session._changed:
            return
        old = self.storage.load_cookie(request) if request.get(_REFRESHING) else None
        now = time.monotonic()
        if old is not None:
            remembered = self._refreshed.get(old)
            if remembered is not None and now - remembered[1] < REFRESH_EVERY:
                self.storage.save_cookie(response, remembered[0])
                session._changed = False
                return
        await self.storage.save_session(request, response, session)
        session._changed = False
        if old is not None:
            morsel = response.cookies.get(self.cookie_name)
            if morsel is not None:
                self._refreshed[old] = (morsel.value, now)
                while len(self._refreshed) > _REFRESHED_KEPT:
                    self._refreshed.popitem(last=False)
