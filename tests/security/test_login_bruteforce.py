"""Password guessing against the login form from browsers the gateway does not know: per
account, per unknown name and per address, with temporary blocks shared through PostgreSQL (in
the spirit of Authelia's regulation). Blocks are run out by moving `blocked_until` into the
past, never by waiting. What a patron's own browser (a device cookie) gets is in
test_device_cookies.py.
"""

from __future__ import annotations

import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from auth.credentials.passwords import PasswordHasher
from tests.helpers import (
    PASSWORD,
    Gateway,
    MakeGateway,
    add_patron,
    attempt,
    ledger,
    lift_blocks,
    routes_for,
    unique_pass_number,
)

FREE_FAILURES = 5
ADDRESS_FREE_SCORE = 100


@pytest.fixture
async def gw(make_gateway: MakeGateway, backend: TestServer) -> Gateway:
    return await make_gateway(routes_for(backend.port))


async def statuses_for(gw: Gateway, names: list[str], password: str) -> list[int]:
    return [(await attempt(gw, name, password))[0] for name in names]


def full_width(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


async def test_the_sixth_failure_is_answered_429_with_retry_after(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """Online guessing of one account (ASVS 2.2.1: at most 100 failures an hour; here five
    free, then a 30 s block)."""
    patron = await add_patron(pool, hasher)
    answers = [await attempt(gw, patron.username, f"guess number {n}") for n in range(6)]
    assert [status for status, _ in answers] == [401] * 5 + [429]
    assert [retry for _, retry in answers[:5]] == [None] * 5
    retry_after = answers[5][1]
    assert retry_after is not None and retry_after.isdigit()
    assert 0 < int(retry_after) <= 30


async def test_during_a_block_even_the_right_password_is_refused(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """A block that lets the right password through would tell the attacker when a guess was
    right (Authelia regulation: a banned user is denied "regardless")."""
    patron = await add_patron(pool, hasher)
    await statuses_for(gw, [patron.username] * FREE_FAILURES, "not the password")
    status, retry_after = await attempt(gw, patron.username, PASSWORD)
    assert status == 429
    assert retry_after is not None
    # Whatever cookie the refused attempt left in the jar, it is not a session.
    resp = await gw.get("/reservations/mine", headers={"Accept": "application/json"})
    assert resp.status == 401


async def test_an_unknown_name_is_blocked_exactly_like_a_real_one(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """If only real accounts were ever blocked, the sixth answer would enumerate them
    (Authelia issue 949; ASVS 2.2.1)."""
    patron = await add_patron(pool, hasher)
    real = await statuses_for(gw, [patron.username] * 7, "not the password")
    unknown_name = f"nobody{unique_pass_number()}"
    unknown = await statuses_for(gw, [unknown_name] * 7, "not the password")
    assert real == unknown == [401] * 5 + [429, 429]
    assert (await ledger(pool))[f"name:{unknown_name}"] == FREE_FAILURES


async def test_username_pass_number_and_their_spellings_share_one_counter(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """Authelia GHSA-m5mf-3963-4x26: counting each login identifier separately doubles the
    guesses an attacker gets. Username, pass number, upper case and full width all name
    the same account here, so they draw on one budget."""
    patron = await add_patron(pool, hasher, username=f"Reader.{unique_pass_number()}")
    spellings = [
        patron.username,
        patron.pass_number,
        patron.username.upper(),
        full_width(patron.pass_number),
        full_width(patron.username.lower()),
    ]
    assert await statuses_for(gw, spellings, "not the password") == [401] * 5
    assert await statuses_for(gw, [patron.pass_number, patron.username], PASSWORD) == [429, 429]
    counters = await ledger(pool)
    assert counters[f"account:{patron.id}"] == FREE_FAILURES
    assert not [key for key in counters if key.startswith("name:")]


async def test_spraying_many_names_from_one_address_trips_the_address_limit(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """Password spraying: one common password against many accounts stays under every
    per-account limit, so the address is counted too (ASVS 2.2.1, ASVS 8.1.4), far above
    what a reading room behind one address does in an hour."""
    victim = await add_patron(pool, hasher)
    names = [f"sprayed{unique_pass_number()}" for _ in range(ADDRESS_FREE_SCORE + 10)]
    assert set(await statuses_for(gw, names[:ADDRESS_FREE_SCORE], "Summer2024!")) == {401}
    # Past the hundredth failure the address blocks, for a second per point over: the score
    # has decayed a little while the test ran, so the block comes within a few more.
    statuses = []
    for name in names[ADDRESS_FREE_SCORE:]:
        statuses.append((await attempt(gw, name, "Summer2024!"))[0])
        if statuses[-1] == 429:
            break
    assert statuses[-1] == 429
    # The address is blocked now: a fresh name, and even a real patron's right password from
    # a browser that never logged in as them.
    status, retry_after = await attempt(gw, f"fresh{unique_pass_number()}", "Summer2024!")
    assert status == 429 and retry_after is not None and 0 < int(retry_after) <= 60
    assert (await attempt(gw, victim.username, PASSWORD))[0] == 429
    counters = await ledger(pool)
    assert counters["addr:127.0.0.1"] == ADDRESS_FREE_SCORE + statuses.index(429)
    assert all(counters[f"name:{name}"] == 1 for name in names[:ADDRESS_FREE_SCORE])


async def test_the_address_block_is_a_minute_at_most_and_wears_off(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """The address limit decays instead of doubling without end: however many failures an
    address has made, one more blocks it for a minute at most, and a score an hour old has
    lost almost all its weight."""
    patron = await add_patron(pool, hasher)
    await pool.execute(
        "INSERT INTO login_throttle (key, failures, score) VALUES ('addr:127.0.0.1', 5000, 5000)"
    )
    assert (await attempt(gw, f"fresh{unique_pass_number()}", "guess"))[0] == 401
    status, retry_after = await attempt(gw, patron.username, PASSWORD)
    assert status == 429 and retry_after is not None and 50 < int(retry_after) <= 60
    # An hour later (six half-lives) the same score is worth 5000 / 64 = 78: under the limit.
    await pool.execute(
        "UPDATE login_throttle SET last_failure_at = now() - interval '1 hour',"
        " blocked_until = NULL, score = 5000 WHERE key = 'addr:127.0.0.1'"
    )
    assert (await attempt(gw, f"fresh{unique_pass_number()}", "guess"))[0] == 401
    assert (await attempt(gw, patron.username, PASSWORD))[0] == 303


async def test_a_success_clears_the_accounts_counter(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """A patron who mistypes a few times and then gets in starts again from zero; the
    attacker's earlier failures do not carry over into a block (Authelia regulation)."""
    patron = await add_patron(pool, hasher)
    assert await statuses_for(gw, [patron.username] * 4, "typo") == [401] * 4
    assert (await attempt(gw, patron.username, PASSWORD))[0] == 303
    assert f"account:{patron.id}" not in await ledger(pool)
    assert await statuses_for(gw, [patron.username] * 4, "typo") == [401] * 4
    assert (await attempt(gw, patron.username, PASSWORD))[0] == 303


async def test_a_block_runs_out_and_the_next_one_is_twice_as_long(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """The block is temporary (no permanent lockout an attacker could inflict, ASVS 2.2.1)
    and doubles for an attacker who keeps going."""
    patron = await add_patron(pool, hasher)
    await statuses_for(gw, [patron.username] * FREE_FAILURES, "guess")
    first = await attempt(gw, patron.username, "guess")
    assert first[0] == 429 and first[1] is not None and int(first[1]) <= 30
    await lift_blocks(pool)
    # The block is over, but the counter is not: one more failure blocks again, for longer.
    assert (await attempt(gw, patron.username, "guess"))[0] == 401
    second = await attempt(gw, patron.username, PASSWORD)
    assert second[0] == 429 and second[1] is not None
    assert 30 < int(second[1]) <= 60
    await lift_blocks(pool)
    assert (await attempt(gw, patron.username, PASSWORD))[0] == 303


async def test_the_longest_account_block_is_five_minutes(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """Doubling without a ceiling would let an attacker lock a patron out for days; the
    account's block is the one anybody who knows a username can inflict, so it stays short
    (and never reaches the patron's own browser: test_device_cookies.py)."""
    patron = await add_patron(pool, hasher)
    assert (await attempt(gw, patron.username, "guess"))[0] == 401
    await pool.execute(
        "UPDATE login_throttle SET failures = 1000 WHERE key = $1", f"account:{patron.id}"
    )
    assert (await attempt(gw, patron.username, "guess"))[0] == 401
    status, retry_after = await attempt(gw, patron.username, PASSWORD)
    assert status == 429 and retry_after is not None
    assert 5 * 60 - 60 < int(retry_after) <= 5 * 60


async def test_a_block_is_shared_by_every_gateway_instance(
    make_gateway: MakeGateway, backend: TestServer, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """Spreading guesses over the instances behind a load balancer gains nothing: the
    counters live in PostgreSQL (ASVS 1.11.2, no unsynchronised state)."""
    first = await make_gateway(routes_for(backend.port))
    second = await make_gateway(routes_for(backend.port))
    patron = await add_patron(pool, hasher)
    for n in range(FREE_FAILURES):
        assert (await attempt(first if n % 2 else second, patron.username, "guess"))[0] == 401
    assert (await attempt(first, patron.username, PASSWORD))[0] == 429
    assert (await attempt(second, patron.username, PASSWORD))[0] == 429
