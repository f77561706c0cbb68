"""Password hashing: argon2id off the event loop, legacy imports wrapped and upgraded."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
from collections.abc import Callable, Iterator
from typing import TypedDict

import argon2
import bcrypt
import pytest
from passlib.hash import django_pbkdf2_sha256, django_salted_sha1, ldap_salted_sha1, md5_crypt

from auth.credentials.passwords import (
    BCRYPT_MIN_COST,
    HasherBusy,
    PasswordHasher,
    Verification,
    identify,
    is_weak,
    wrap_legacy,
)

PASSWORD = "correct horse B\u00e4tterie \u2713"
WRONG = "correct horse B\u00e4tterie \u2717"


class Costs(TypedDict):
    time_cost: int
    memory_cost: int
    parallelism: int


# Low costs keep the suite quick; the behaviour does not depend on them.
FAST = Costs(time_cost=1, memory_cost=8192, parallelism=1)


@pytest.fixture
def hasher() -> Iterator[PasswordHasher]:
    hasher = PasswordHasher(**FAST)
    yield hasher
    hasher.close()


def _bcrypt(prefix: bytes, cost: int = 4) -> Callable[[str], str]:
    def make(password: str) -> str:
        salt = bcrypt.gensalt(rounds=cost, prefix=prefix)
        return bcrypt.hashpw(password.encode("utf-8"), salt).decode("ascii")

    return make


def _bcrypt_2y(cost: int) -> Callable[[str], str]:
    # PHP's $2y$ is the $2b$ algorithm under another name; no Python library writes it.
    return lambda password: "$2y$" + _bcrypt(b"2b", cost)(password)[4:]


def _argon2i(password: str) -> str:
    return argon2.PasswordHasher(type=argon2.Type.I, **FAST).hash(password)


def _ssha_by_hand(password: str) -> str:
    # What OpenLDAP writes: base64(sha1(password + salt) + salt).
    salt = b"\x01\xfeNaCl\x00!"
    digest = hashlib.sha1(password.encode("utf-8") + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode("ascii")


def _django_sha1_by_hand(password: str) -> str:
    # What Django before 1.4 wrote: sha1$salt$hex(sha1(salt + password)).
    salt = "a1b2c"
    return f"sha1${salt}$" + hashlib.sha1((salt + password).encode("utf-8")).hexdigest()


def _django_pbkdf2_by_hand(password: str) -> str:
    salt, iterations = "r4nd0mSalt", 1200
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt.encode(), iterations)
    return f"pbkdf2_sha256${iterations}${salt}$" + base64.b64encode(digest).decode("ascii")


STRONG = {
    "bcrypt-2a-cost-10": (_bcrypt(b"2a", BCRYPT_MIN_COST), "bcrypt"),
    "bcrypt-2b-cost-10": (_bcrypt(b"2b", BCRYPT_MIN_COST), "bcrypt"),
    "bcrypt-2y-cost-10": (_bcrypt_2y(BCRYPT_MIN_COST), "bcrypt"),
    "argon2i": (_argon2i, "argon2i"),
}
# bcrypt below OWASP's minimum cost of 10 is cracked fast enough to count as weak.
WEAK = {
    "bcrypt-2a-cost-4": (_bcrypt(b"2a"), "bcrypt"),
    "bcrypt-2b-cost-4": (_bcrypt(b"2b"), "bcrypt"),
    "bcrypt-2y-cost-4": (_bcrypt_2y(4), "bcrypt"),
    "bcrypt-2a-cost-9": (_bcrypt(b"2a", BCRYPT_MIN_COST - 1), "bcrypt"),
    "md5-crypt": (md5_crypt.hash, "md5-crypt"),
    "django-pbkdf2": (django_pbkdf2_sha256.using(rounds=1000).hash, "django-pbkdf2-sha256"),
    "django-pbkdf2-by-hand": (_django_pbkdf2_by_hand, "django-pbkdf2-sha256"),
    "ldap-ssha": (ldap_salted_sha1.hash, "ldap-ssha"),
    "ldap-ssha-by-hand": (_ssha_by_hand, "ldap-ssha"),
    "django-sha1": (django_salted_sha1.hash, "django-sha1"),
    "django-sha1-by-hand": (_django_sha1_by_hand, "django-sha1"),
}
LEGACY = {**STRONG, **WEAK}


async def _assert_is_current_argon2id(hasher: PasswordHasher, new_hash: str | None) -> None:
    assert new_hash is not None
    assert identify(new_hash) == "argon2id"
    assert await hasher.verify(new_hash, PASSWORD) == Verification(ok=True, new_hash=None)
    assert await hasher.verify(new_hash, WRONG) == Verification(ok=False, new_hash=None)


async def test_new_hash_is_argon2id_and_checks_the_password(hasher: PasswordHasher) -> None:
    stored = await hasher.hash(PASSWORD)
    assert stored.startswith("$argon2id$")
    assert await hasher.verify(stored, PASSWORD) == Verification(ok=True, new_hash=None)
    assert await hasher.verify(stored, WRONG) == Verification(ok=False, new_hash=None)
    assert await hasher.hash(PASSWORD) != stored  # salted


@pytest.mark.parametrize("name", LEGACY)
def test_identify_names_each_legacy_format(name: str) -> None:
    make, scheme = LEGACY[name]
    assert identify(make(PASSWORD)) == scheme


@pytest.mark.parametrize("name", LEGACY)
async def test_imported_hash_accepts_right_password_and_upgrades(
    hasher: PasswordHasher, name: str
) -> None:
    stored = wrap_legacy(LEGACY[name][0](PASSWORD))
    result = await hasher.verify(stored, PASSWORD)
    assert result.ok
    await _assert_is_current_argon2id(hasher, result.new_hash)


@pytest.mark.parametrize("name", LEGACY)
async def test_imported_hash_refuses_wrong_password(hasher: PasswordHasher, name: str) -> None:
    stored = wrap_legacy(LEGACY[name][0](PASSWORD))
    assert await hasher.verify(stored, WRONG) == Verification(ok=False, new_hash=None)
    assert await hasher.verify(stored, "") == Verification(ok=False, new_hash=None)


@pytest.mark.parametrize("name", STRONG)
def test_strong_formats_are_imported_unchanged(name: str) -> None:
    legacy = STRONG[name][0](PASSWORD)
    assert wrap_legacy(legacy) == legacy


@pytest.mark.parametrize("name", WEAK)
def test_weak_formats_are_wrapped_without_their_digest(name: str) -> None:
    make, scheme = WEAK[name]
    legacy = make(PASSWORD)
    stored = wrap_legacy(legacy)
    assert stored.startswith(f"$wrapped${scheme}$")
    assert identify(stored) == f"wrapped-{scheme}"
    assert "$argon2id$" in stored
    # Nothing that would let a thief run the fast legacy hash: not the whole string, and
    # not its digest part in any of the spellings the formats use.
    assert legacy not in stored
    for digest in _digests(legacy):
        assert digest not in stored


def _digests(legacy: str) -> list[str]:
    """The secret part of a legacy hash, as text, hex and base64."""
    if legacy.startswith("{SSHA}"):
        raw = base64.b64decode(legacy[len("{SSHA}") :])[:20]
    elif legacy.startswith("$2"):
        return [legacy[-31:]]  # bcrypt's checksum, after its 22-character salt
    else:
        tail = legacy.rsplit("$", 1)[1]
        if re.fullmatch(r"[0-9a-f]{40}", tail):
            raw = bytes.fromhex(tail)
        elif legacy.startswith("pbkdf2_sha256$"):
            raw = base64.b64decode(tail)
        else:
            return [tail]  # md5-crypt's own base64 alphabet
    return [
        raw.hex(),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    ]


@pytest.mark.parametrize("name", WEAK)
async def test_weak_formats_verify_even_when_stored_unwrapped(
    hasher: PasswordHasher, name: str
) -> None:
    legacy = WEAK[name][0](PASSWORD)
    result = await hasher.verify(legacy, PASSWORD)
    assert result.ok
    await _assert_is_current_argon2id(hasher, result.new_hash)
    assert not (await hasher.verify(legacy, WRONG)).ok


@pytest.mark.parametrize(
    ("cost", "weak"),
    [("04", True), ("09", True), ("10", False), ("12", False), ("31", False)],
)
def test_bcrypt_is_weak_exactly_below_owasps_minimum_cost(cost: str, weak: bool) -> None:
    """The decision reads the cost field alone (no hashing), so one hash serves every cost."""
    legacy = f"$2b${cost}$" + _bcrypt(b"2b")(PASSWORD)[7:]
    assert is_weak(legacy) is weak
    assert (wrap_legacy(legacy) == legacy) is not weak


async def test_a_wrapped_bcrypt_hash_reads_the_password_as_bcrypt_did(
    hasher: PasswordHasher,
) -> None:
    """Only the first 72 bytes, as the old system did: the patron's whole password fits."""
    long_password = "\u00e9" * 40  # 80 bytes in UTF-8
    legacy = bcrypt.hashpw(long_password.encode()[:72], bcrypt.gensalt(rounds=4)).decode()
    stored = wrap_legacy(legacy)
    assert stored.startswith("$wrapped$bcrypt$")
    result = await hasher.verify(stored, long_password)
    assert result.ok
    assert result.new_hash is not None and identify(result.new_hash) == "argon2id"
    assert (await hasher.verify(result.new_hash, long_password)).ok
    assert not (await hasher.verify(stored, "\u00e9" * 35)).ok


def test_wrapping_is_idempotent() -> None:
    stored = wrap_legacy(md5_crypt.hash(PASSWORD))
    assert wrap_legacy(stored) == stored


async def test_wrapper_params_cannot_be_swapped(hasher: PasswordHasher) -> None:
    # The argon2 part only matches the legacy string made with its own salt.
    mine = wrap_legacy(md5_crypt.using(salt="saltAAAA").hash(PASSWORD))
    other = wrap_legacy(md5_crypt.using(salt="saltBBBB").hash(PASSWORD))
    hybrid = other.partition("$argon2id$")[0] + "$argon2id$" + mine.partition("$argon2id$")[2]
    assert hybrid not in (mine, other)
    assert (await hasher.verify(mine, PASSWORD)).ok
    assert (await hasher.verify(other, PASSWORD)).ok
    assert not (await hasher.verify(hybrid, PASSWORD)).ok


async def test_bcrypt_legacy_limit_of_72_bytes(hasher: PasswordHasher) -> None:
    long_password = "\u00e9" * 40  # 80 bytes in UTF-8
    # The old system only ever hashed the first 72 bytes.
    stored = bcrypt.hashpw(long_password.encode()[:72], bcrypt.gensalt(rounds=4)).decode()
    result = await hasher.verify(stored, long_password)
    assert result.ok and result.new_hash is not None
    # The upgraded hash covers the whole password, not just the part bcrypt saw.
    assert (await hasher.verify(result.new_hash, long_password)).ok
    assert not (await hasher.verify(result.new_hash, "\u00e9" * 36)).ok


async def test_unknown_account_never_succeeds(hasher: PasswordHasher) -> None:
    for password in (PASSWORD, "", "x" * 300, "\ud800"):
        assert await hasher.verify(None, password) == Verification(ok=False, new_hash=None)


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "garbage",
        "plaintext-password",
        "$argon2id$",
        "$argon2id$v=19$m=8192,t=1,p=1$bm90IGEgaGFzaA",
        "$2b$04$short",
        "$2y$99$" + "a" * 53,
        "$1$",
        "$1$salt$notbase64!!",
        "pbkdf2_sha256$x$y$z",
        "{SSHA}!!!",
        "{SSHA}",
        "sha1$$",
        "$wrapped$",
        "$wrapped$md5-crypt$",
        "$wrapped$md5-crypt$$$",
        "$wrapped$unknown$c2FsdA$argon2id$v=19$m=8192,t=1,p=1$c2FsdHNhbHQ$aGFzaA",
        "$wrapped$md5-crypt$!!$argon2id$v=19$m=8192,t=1,p=1$c2FsdHNhbHQ$aGFzaA",
        "$wrapped$django-pbkdf2-sha256$notanumber.c2FsdA$argon2id$v=19$m=8,t=1,p=1$YQ$YQ",
        "$5$rounds=5000$saltsalt$unsupportedsha256crypt",
    ],
)
async def test_garbage_in_the_database_is_a_failed_login(
    hasher: PasswordHasher, stored: str
) -> None:
    assert await hasher.verify(stored, PASSWORD) == Verification(ok=False, new_hash=None)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "plaintext",
        "$5$saltsalt$abc",
        "{SHA}abc",
        "$1$salt$!!",
        "$2b$04$short",
        "$2b$03$" + "a" * 53,  # below any cost bcrypt computes
    ],
)
def test_unsupported_import_is_refused(value: str) -> None:
    with pytest.raises(ValueError):
        wrap_legacy(value)


async def test_raised_parameters_trigger_a_rehash() -> None:
    old = PasswordHasher(**FAST)
    new = PasswordHasher(time_cost=2, memory_cost=16384, parallelism=1)
    try:
        stored = await old.hash(PASSWORD)
        result = await new.verify(stored, PASSWORD)
        assert result.ok and result.new_hash is not None
        assert "m=16384,t=2,p=1" in result.new_hash
        assert await new.verify(result.new_hash, PASSWORD) == Verification(True, None)
        # A wrong password never yields a replacement hash.
        assert await new.verify(stored, WRONG) == Verification(False, None)
    finally:
        old.close()
        new.close()


async def test_full_queue_answers_busy_at_once() -> None:
    hasher = PasswordHasher(**FAST, max_workers=1, max_queue=1)
    try:
        # The three checks claim their slots in the same turn of the loop, before any result
        # can come back: one runs, one waits, the third finds the queue full.
        results = await asyncio.gather(
            hasher.verify(None, "a"),
            hasher.hash("b"),
            hasher.verify(None, "c"),
            return_exceptions=True,
        )
        assert results[0] == Verification(ok=False, new_hash=None)
        assert isinstance(results[1], str) and results[1].startswith("$argon2id$")
        assert isinstance(results[2], HasherBusy)
        # Slots are given back: once the queue drained, the hasher answers again.
        again = await asyncio.gather(hasher.verify(None, "d"), hasher.verify(None, "e"))
        assert list(again) == [Verification(False, None), Verification(False, None)]
    finally:
        hasher.close()


async def test_event_loop_keeps_turning_while_hashing() -> None:
    # 256 MiB per hash: far too slow to go unnoticed if it ran on the loop.
    hasher = PasswordHasher(time_cost=1, memory_cost=262144, parallelism=1, max_workers=1)
    try:
        hashing = asyncio.create_task(hasher.hash(PASSWORD))
        turns = 0
        while True:
            await asyncio.sleep(0)  # one turn of the loop, not a wait
            if hashing.done():
                break
            turns += 1
        # Had the hash run on the loop, the task would have finished within the first turn.
        assert turns >= 1
        stored = hashing.result()
        assert "m=262144" in stored
    finally:
        hasher.close()
