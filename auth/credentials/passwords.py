"""Password hashing that never blocks the event loop, and the legacy formats we inherit.

New passwords are hashed with argon2id. Accounts imported from older library systems arrive
with bcrypt, md5-crypt, Django PBKDF2, LDAP ``{SSHA}`` or Django's salted SHA-1 hashes. The
weak ones (all of these but bcrypt of cost ``BCRYPT_MIN_COST`` or more) are *wrapped* at
import: argon2id is computed over the legacy hash string, and only the salt and rounds (or
cost) needed to recompute that string are kept beside it, so a stolen database holds no
fast-to-crack digest. At the patron's next successful login every legacy or wrapped hash is
replaced by a plain argon2id hash (``Verification.new_hash``).

argon2 is deliberately slow and memory-hungry, so all hashing runs in a small thread pool.
The pool's queue is bounded: when too many verifications wait, ``HasherBusy`` lets the caller
answer a fast 503 instead of letting a login flood pile up memory and latency.

Stored formats::

    $argon2id$v=19$m=…,t=…,p=…$…                 current
    $argon2i$… / $argon2d$…                       verified, then rehashed
    $2a$… / $2b$… / $2y$…                         bcrypt, verified, then rehashed
    $wrapped$<scheme>$<params>$argon2id$v=19$…    a weak legacy hash inside argon2id
    $1$… / pbkdf2_sha256$… / {SSHA}… / sha1$…     weak legacy hashes, if ever stored unwrapped
    $2b$04$… (cost below 10)                      likewise
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import secrets
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, TypeVar

import argon2
import bcrypt
from passlib.hash import django_pbkdf2_sha256, django_salted_sha1, ldap_salted_sha1, md5_crypt

__all__ = [
    "BCRYPT_MIN_COST",
    "HasherBusy",
    "Hashing",
    "PasswordHasher",
    "Verification",
    "identify",
    "is_weak",
    "wrap_legacy",
]

# OWASP's recommended argon2id setting (Password Storage Cheat Sheet): 19 MiB, 2 passes,
# one lane. Raising them later is safe: every login re-hashes with the new parameters.
DEFAULT_TIME_COST = 2
DEFAULT_MEMORY_COST = 19456  # KiB per hash in flight
DEFAULT_PARALLELISM = 1

_WRAPPED_PREFIX = "$wrapped$"
_ARGON2_PREFIXES = {"$argon2id$": "argon2id", "$argon2i$": "argon2i", "$argon2d$": "argon2d"}
_BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
# bcrypt only ever looked at the first 72 bytes; systems that used it silently truncated.
_BCRYPT_MAX_BYTES = 72
# OWASP's minimum bcrypt work factor (Password Storage Cheat Sheet); below it a bcrypt hash is
# cheap enough to crack that it is wrapped like the other weak formats.
BCRYPT_MIN_COST = 10
# bcrypt's own range of costs; outside it no bcrypt library computes the hash.
_BCRYPT_COSTS = range(4, 32)
_BCRYPT = re.compile(r"\$(2[aby])\$(\d\d)\$([./A-Za-z0-9]{22})[./A-Za-z0-9]{31}")

_T = TypeVar("_T")


class Verification(NamedTuple):
    """The outcome of a password check.

    ``new_hash`` is set when the check succeeded and the stored hash should be replaced.
    """

    ok: bool
    new_hash: str | None


_FAILED = Verification(ok=False, new_hash=None)


class Hashing(Protocol):
    """What the pages ask of a hasher: `PasswordHasher`, or something that wraps one (the
    gateway's tracing times each call)."""

    async def hash(self, password: str) -> str: ...

    async def verify(self, stored: str | None, password: str) -> Verification: ...


class HasherBusy(Exception):
    """More password checks are waiting than the hasher queues; answer 503 at once."""


class _LegacyScheme(Protocol):
    """A legacy format: how to recognise and check it, and, when it is weak, how to wrap it."""

    def identify(self, stored: str) -> bool: ...

    def verify(self, password: str, stored: str) -> bool: ...

    def weak(self, stored: str) -> bool:
        """Whether a hash of this format is wrapped at import (ValueError if garbled)."""
        ...

    def params(self, legacy_hash: str) -> tuple[str, str]:
        """The canonical legacy string and the parameters needed to recompute it."""
        ...

    def recompute(self, params: str, password: str) -> str:
        """The legacy hash string that ``password`` would have had with these parameters."""
        ...


@dataclass(frozen=True)
class _PasslibScheme:
    """A weak format passlib reads and recomputes from the password and its salt (and rounds)."""

    handler: Any  # a passlib hash class; passlib ships no type information
    salt_is_bytes: bool = False
    has_rounds: bool = False

    def identify(self, stored: str) -> bool:
        return bool(self.handler.identify(stored))

    def verify(self, password: str, stored: str) -> bool:
        return bool(self.handler.verify(password, stored))

    def weak(self, stored: str) -> bool:
        return True

    def params(self, legacy_hash: str) -> tuple[str, str]:
        parsed = self.handler.from_string(legacy_hash)
        salt = parsed.salt if self.salt_is_bytes else parsed.salt.encode("utf-8")
        params = base64.urlsafe_b64encode(salt).decode("ascii").rstrip("=")
        if self.has_rounds:
            params = f"{int(parsed.rounds)}.{params}"
        return parsed.to_string(), params

    def recompute(self, params: str, password: str) -> str:
        rounds_text, _, salt_text = params.rpartition(".")
        raw_salt = base64.urlsafe_b64decode(salt_text + "=" * (-len(salt_text) % 4))
        salt = raw_salt if self.salt_is_bytes else raw_salt.decode("utf-8")
        if self.has_rounds:
            handler = self.handler.using(salt=salt, rounds=int(rounds_text))
        else:
            handler = self.handler.using(salt=salt)
        return str(handler.hash(password))


class _BcryptScheme:
    """bcrypt: kept as it came from cost ``BCRYPT_MIN_COST`` up, wrapped below it. The
    parameters of a wrapped one are its variant, cost and salt (``2b.04.<22 characters>``);
    the 31-character checksum, which is what a cracker needs, is not kept."""

    def identify(self, stored: str) -> bool:
        return stored.startswith(_BCRYPT_PREFIXES)

    def verify(self, password: str, stored: str) -> bool:
        return bcrypt.checkpw(_bcrypt_secret(password), stored.encode("ascii"))

    def weak(self, stored: str) -> bool:
        return self._parts(stored)[1] < BCRYPT_MIN_COST

    def params(self, legacy_hash: str) -> tuple[str, str]:
        variant, cost, salt = self._parts(legacy_hash)
        return legacy_hash, f"{variant}.{cost:02d}.{salt}"

    def recompute(self, params: str, password: str) -> str:
        variant, cost, salt = params.split(".", 2)
        setting = f"${variant}${cost}${salt}".encode("ascii")
        return bcrypt.hashpw(_bcrypt_secret(password), setting).decode("ascii")

    @staticmethod
    def _parts(legacy_hash: str) -> tuple[str, int, str]:
        match = _BCRYPT.fullmatch(legacy_hash)
        if match is None or int(match[2]) not in _BCRYPT_COSTS:
            raise ValueError("not a bcrypt hash")
        return match[1], int(match[2]), match[3]


def _bcrypt_secret(password: str) -> bytes:
    return password.encode("utf-8")[:_BCRYPT_MAX_BYTES]


# Every legacy format by the name `identify` gives it (bcrypt first: its prefixes are exact).
_LEGACY: dict[str, _LegacyScheme] = {
    "bcrypt": _BcryptScheme(),
    "md5-crypt": _PasslibScheme(md5_crypt),
    "django-pbkdf2-sha256": _PasslibScheme(django_pbkdf2_sha256, has_rounds=True),
    "ldap-ssha": _PasslibScheme(ldap_salted_sha1, salt_is_bytes=True),
    "django-sha1": _PasslibScheme(django_salted_sha1),
}


def identify(stored: str) -> str | None:
    """The scheme of a stored hash: ``argon2id``, ``bcrypt``, ``wrapped-md5-crypt``, … or None."""
    for prefix, name in _ARGON2_PREFIXES.items():
        if stored.startswith(prefix):
            return name
    if stored.startswith(_WRAPPED_PREFIX):
        inner = stored[len(_WRAPPED_PREFIX) :].split("$", 1)[0]
        return f"wrapped-{inner}" if inner in _LEGACY else None
    for name, scheme in _LEGACY.items():
        if scheme.identify(stored):
            return name
    return None


def is_weak(legacy_hash: str) -> bool:
    """Whether an imported hash is stored wrapped in argon2id: every legacy format but argon2
    and bcrypt of cost ``BCRYPT_MIN_COST`` or more. Raises ``ValueError`` for a format we do
    not support or a bcrypt hash that does not parse."""
    return _weak_scheme(legacy_hash) is not None


def _weak_scheme(legacy_hash: str) -> tuple[str, _LegacyScheme] | None:
    scheme = identify(legacy_hash)
    if scheme is None:
        raise ValueError("unsupported password hash format")
    legacy = _LEGACY.get(scheme)
    if legacy is None or not legacy.weak(legacy_hash):
        return None
    return scheme, legacy


def wrap_legacy(
    legacy_hash: str,
    *,
    time_cost: int = DEFAULT_TIME_COST,
    memory_cost: int = DEFAULT_MEMORY_COST,
    parallelism: int = DEFAULT_PARALLELISM,
) -> str:
    """A storable form of an imported hash; weak formats come back wrapped in argon2id.

    argon2 (any variant), bcrypt of cost ``BCRYPT_MIN_COST`` or more and already wrapped
    values are returned unchanged (see ``is_weak``). Raises ``ValueError`` for a format we do
    not support or a value that does not parse. The argon2 costs are those of the gateway
    unless given (the importer checks a file at the least cost).
    """
    weak = _weak_scheme(legacy_hash)
    if weak is None:
        return legacy_hash
    scheme, legacy = weak
    canonical, params = legacy.params(legacy_hash)
    wrapped = _argon2(time_cost, memory_cost, parallelism).hash(canonical)
    return f"{_WRAPPED_PREFIX}{scheme}${params}${wrapped.removeprefix('$')}"


def _argon2(time_cost: int, memory_cost: int, parallelism: int) -> argon2.PasswordHasher:
    return argon2.PasswordHasher(
        time_cost=time_cost,
        memory_cost=memory_cost,
        parallelism=parallelism,
        type=argon2.Type.ID,
    )


def _yield_to_the_loop() -> None:
    """Run hashing threads at a lower CPU priority than the event loop (Linux sets nice per
    thread), so a storm of logins slows logins, not every patron's proxied request."""
    if hasattr(os, "setpriority") and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


class PasswordHasher:
    """Hashes and verifies passwords in a bounded thread pool."""

    def __init__(
        self,
        *,
        time_cost: int = DEFAULT_TIME_COST,
        memory_cost: int = DEFAULT_MEMORY_COST,
        parallelism: int = DEFAULT_PARALLELISM,
        max_workers: int = 2,
        max_queue: int = 64,
    ) -> None:
        if max_workers < 1 or max_queue < 0:
            raise ValueError("max_workers must be at least 1 and max_queue at least 0")
        self._argon2 = _argon2(time_cost, memory_cost, parallelism)
        # Unknown accounts are checked against this, so they cost what a real account costs
        # and an attacker cannot tell from the response time which login names exist.
        self._dummy = self._argon2.hash(secrets.token_urlsafe(32))
        self._executor = ThreadPoolExecutor(
            max_workers, thread_name_prefix="password-hasher", initializer=_yield_to_the_loop
        )
        self._capacity = max_workers + max_queue
        self._in_flight = 0
        self._lock = threading.Lock()

    async def hash(self, password: str) -> str:
        """argon2id of ``password`` with the configured parameters."""
        return await self._run(self._argon2.hash, password)

    async def verify(self, stored: str | None, password: str) -> Verification:
        """Check ``password`` against ``stored``; ``None`` stands for an unknown account."""
        if stored is None:
            return await self._run(self._spend_dummy_work, password)
        return await self._run(self._verify, stored, password)

    def close(self) -> None:
        """Drop queued work and wait for the checks already running."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def _run(self, function: Callable[..., _T], *args: Any) -> _T:
        with self._lock:
            if self._in_flight >= self._capacity:
                raise HasherBusy("too many password checks are waiting")
            self._in_flight += 1
        future: Future[_T] | None = None
        try:
            future = self._executor.submit(function, *args)
            return await asyncio.wrap_future(future)
        finally:
            # A caller that gave up (cancelled) does not free the slot while its hash still
            # runs: the slot is released when the work is really over.
            if future is None:
                self._release()
            else:
                future.add_done_callback(self._release)

    def _release(self, _future: object = None) -> None:
        with self._lock:
            self._in_flight -= 1

    def _spend_dummy_work(self, password: str) -> Verification:
        # It never matches (the dummy's secret was thrown away); only its cost matters.
        with contextlib.suppress(Exception):
            self._argon2.verify(self._dummy, password)
        return _FAILED

    def _verify(self, stored: str, password: str) -> Verification:
        scheme = identify(stored)
        if scheme is None:
            return _FAILED
        try:
            ok = self._check(scheme, stored, password)
        except Exception:
            # Garbage in the database, a truncated import, a password that cannot be
            # encoded: whatever cannot be checked is a failed login, never a 500.
            return _FAILED
        if not ok:
            return _FAILED
        if scheme == "argon2id" and not self._argon2.check_needs_rehash(stored):
            return Verification(ok=True, new_hash=None)
        return Verification(ok=True, new_hash=self._argon2.hash(password))

    def _check(self, scheme: str, stored: str, password: str) -> bool:
        if scheme in _ARGON2_PREFIXES.values():
            return self._argon2_matches(stored, password)
        if scheme.startswith("wrapped-"):
            inner, params, wrapped = stored[len(_WRAPPED_PREFIX) :].split("$", 2)
            legacy = _LEGACY[inner].recompute(params, password)
            return self._argon2_matches("$" + wrapped, legacy)
        return _LEGACY[scheme].verify(password, stored)

    def _argon2_matches(self, stored: str, secret: str) -> bool:
        try:
            return self._argon2.verify(stored, secret)
        except argon2.exceptions.VerifyMismatchError:
            return False
