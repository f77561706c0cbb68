"""What every attack in this suite starts from: a backend that records the exact bytes it gets,
and a clean brute-force ledger (tests/helpers.py reads that ledger and keeps a hasher busy on
cue).

The suite attacks the gateway from the outside, through real sockets, a real PostgreSQL and
real backends. Each test names what it defends against (an OWASP ASVS 4.0.3 requirement, a
CVE, or an advisory of a comparable proxy) in its docstring or parameter ids; docs/security.md
maps every defence to its tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

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
