"""Connections held open under a session (a proxied WebSocket): they end with the session.

A WebSocket is authorised once, at its handshake, and its backend then takes it for the
patron's for as long as it stays open. So each one opened with a session is held here
(`SessionRegistry.hold`) with a function that ends it, and the registry ends it when it hears
that the session is over, on this instance or any other:

- a revocation that names the session (a logout, one session ended from the patron's list):
  at once, without asking anything, since a session once revoked stays revoked;
- one that names only the account (a password change or reset, a disabled account, the
  helpdesk ending them all, a username change): the account's held sessions are looked up
  afresh and those that are over end; a username change ends none;
- notifications may have been missed (the listening connection was lost, and at each try to
  get it back): every held session is looked up afresh, and only those that are over end, so
  a database restart does not throw every patron's sockets away;
- a session's lifetime runs out, which nobody announces: every held session is looked up
  afresh once a minute (`SessionRegistry.recheck_held`, with the activity's writes).

A look-up the database cannot answer ends nothing (the next try of the listening connection,
or its return, asks again); any other failure ends the connections it was about (fail closed).
Checks run in one task at a time, one query for every session waiting to be checked.

Nothing here is on the path of a plain request: it is touched at a handshake, when a socket
closes and when a revocation is heard. A connection is forgotten when it closes (the function
`hold` returns), so memory follows the open sockets and nothing else.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from auth.store.availability import unavailable

log = logging.getLogger("auth.sessions")

Live = Callable[[list[str]], Awaitable[dict[str, str]]]
"""Of some sessions (hex hashes), those that are live now, each with its account id."""


@dataclass(slots=True)
class _Session:
    account_id: str
    ends: dict[int, Callable[[], None]] = field(default_factory=dict)


class HeldConnections:
    """The connections held open under each session, and the checks of those sessions."""

    def __init__(self, live: Live) -> None:
        self._live = live
        self._sessions: dict[str, _Session] = {}
        self._by_account: dict[str, set[str]] = {}
        self._tokens = itertools.count()
        self._suspect: set[str] = set()
        self._checking: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return sum(len(held.ends) for held in self._sessions.values())

    def hold(self, session: str, account_id: str, end: Callable[[], None]) -> Callable[[], None]:
        """Call `end` (once) when `session` (a hex hash, of `account_id`) is over; the
        returned function forgets it, for when the connection closes first."""
        held = self._sessions.get(session)
        if held is None:
            held = self._sessions[session] = _Session(account_id)
            self._by_account.setdefault(account_id, set()).add(session)
        token = next(self._tokens)
        held.ends[token] = end
        return functools.partial(self._release, session, token)

    def _release(self, session: str, token: int) -> None:
        held = self._sessions.get(session)
        if held is None or held.ends.pop(token, None) is None:
            return
        if not held.ends:
            self._drop(session)

    def _drop(self, session: str) -> _Session | None:
        held = self._sessions.pop(session, None)
        if held is not None:
            sessions = self._by_account.get(held.account_id)
            if sessions is not None:
                sessions.discard(session)
                if not sessions:
                    del self._by_account[held.account_id]
        return held

    def end(self, sessions: Iterable[str]) -> None:
        """These sessions are over: end every connection held under them."""
        for session in sessions:
            held = self._drop(session)
            if held is None:
                continue
            log.info(
                "closing %d connection(s) of an ended session",
                len(held.ends),
                extra={"user_id": held.account_id},
            )
            for end in held.ends.values():
                try:
                    end()
                except Exception:
                    log.exception("ending a connection of an ended session failed")

    def check_account(self, account_id: str) -> None:
        """Something about the account changed: look its held sessions up again."""
        self._check(self._by_account.get(account_id, ()))

    def check(self, session: str) -> None:
        self._check((session,))

    def check_all(self) -> None:
        """Notifications may have been missed: look every held session up again."""
        self._check(self._sessions)

    async def checked(self) -> None:
        """Return once no check is running or waiting."""
        while self._checking is not None:
            await asyncio.shield(self._checking)

    def _check(self, sessions: Iterable[str]) -> None:
        self._suspect.update(sessions)
        if self._suspect and self._checking is None:
            self._checking = asyncio.get_running_loop().create_task(self._run_checks())

    async def _run_checks(self) -> None:
        try:
            while self._suspect:
                batch = [session for session in self._suspect if session in self._sessions]
                self._suspect.clear()
                if batch:
                    await self._check_batch(batch)
        finally:
            self._checking = None

    async def _check_batch(self, batch: list[str]) -> None:
        try:
            live = await self._live(batch)
        except Exception as exc:
            if unavailable(exc):
                log.warning(
                    "the sessions of %d open connection(s) cannot be checked now: the database"
                    " cannot be asked; they are checked again when it can",
                    len(batch),
                )
                return
            log.exception("checking the sessions of open connections failed; closing them")
            live = {}
        # A connection held meanwhile under a session found over ends too: it is over.
        over = [
            session
            for session in batch
            if session in self._sessions and live.get(session) != self._sessions[session].account_id
        ]
        self.end(over)
