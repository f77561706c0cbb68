"""What every attack in this suite starts from: a backend that records the exact bytes it gets,
a clean brute-force ledger, a way to see that ledger, and a hasher that can be kept busy on cue.

The suite attacks the gateway from the outside, through real sockets, a real PostgreSQL and
real backends. Each test names what it defends against (an OWASP ASVS 4.0.3 requirement, a
CVE, or an advisory of a comparable proxy) in its docstring or parameter ids; docs/security.md
maps every defence to its tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from aiohttp.typedefs import LooseHeaders

from auth.credentials.passwords import PasswordHasher
from tests.helpers import csrf_in
from tests.security.wire import RecordingBackend


@pytest.fixture
async def recorder() -> AsyncIterator[RecordingBackend]:
    backend = RecordingBackend()
    await backend.start()
    yield backend
    await backend.close()


@pytest.fixture(autouse=True)
async def fresh_throttle(pool: asyncpg.Pool) -> None:
    """Every test starts with no failed logins on record: all tests of a module share one
    database and one client address (127.0.0.1), and the per-address limit would otherwise
    carry over from one test to the next."""
    await pool.execute("DELETE FROM login_throttle")


async def ledger(pool: asyncpg.Pool) -> dict[str, int]:
    """The failure counters the throttle keeps, by key (`account:…`, `name:…`, `addr:…`)."""
    rows = await pool.fetch("SELECT key, failures FROM login_throttle")
    return {row["key"]: row["failures"] for row in rows}


async def lift_blocks(pool: asyncpg.Pool) -> None:
    """Let every block run out now, as the clock would (counters are kept)."""
    await pool.execute(
        "UPDATE login_throttle SET blocked_until = now() - interval '1 second'"
        " WHERE blocked_until IS NOT NULL"
    )


async def attempt(
    client: TestClient,
    name: str,
    password: str,
    *,
    headers: LooseHeaders | None = None,
) -> tuple[int, str | None]:
    """One login from a fresh browser: (status, Retry-After). The same extra headers go with
    the form's GET and its POST, as a client that forges them would send them."""
    client.session.cookie_jar.clear()
    page = await client.get("/auth/login", headers=headers)
    assert page.status == 200
    resp = await client.post(
        "/auth/login",
        allow_redirects=False,
        headers=headers,
        data={
            "csrf_token": csrf_in(await page.text()),
            "username": name,
            "password": password,
        },
    )
    return resp.status, resp.headers.get("Retry-After")


@contextlib.asynccontextmanager
async def hasher_held(hasher: PasswordHasher) -> AsyncIterator[None]:
    """Keep a one-slot hasher (max_workers=1, max_queue=0) busy until the block ends.

    The hasher has no public way to be kept busy on cue, so this takes its only slot through
    the same bounded queue a login uses and holds it on an event: deterministic, no timing.
    Inside the block every password check answers HasherBusy at once; a request that does not
    hash at all is unaffected, which is how the tests tell the two apart.
    """
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        entered.set()
        release.wait()

    held = asyncio.ensure_future(hasher._run(hold))
    await asyncio.to_thread(entered.wait)
    try:
        yield
    finally:
        release.set()
        await held
