"""Migration 0009 on a database that has patrons: every account's one pass number becomes its
membership of the default institution, login by pass number keeps working through the real
gateway, and naming the default institution later (`settle_default`) moves them to it."""

from __future__ import annotations

import asyncio
import re
import secrets

import argon2
import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from auth.memberships import Membership
from auth.store import schema
from auth.store.memberships import Memberships
from gateway import database
from tests.helpers import FAST_ARGON2, PASSWORD, MakeGateway, account_on, login, routes_for

# Patrons of before 0009: (pass number, username); one logs in by a pass number with letters.
OLD_PATRONS = [("50001", "50001"), ("50002", "reader-two"), ("AB-50003", "reader-three")]


@pytest.fixture(scope="module")
def database_url(postgres_server: str, request: pytest.FixtureRequest) -> str:
    """This module's database: the schema as it was up to 0008, with patrons in it."""
    name = "t_" + re.sub(r"[^a-z0-9]+", "_", request.module.__name__.lower())[-40:]
    name += "_" + secrets.token_hex(3)
    cheap = argon2.PasswordHasher(
        time_cost=FAST_ARGON2["time_cost"],
        memory_cost=FAST_ARGON2["memory_cost"],
        parallelism=FAST_ARGON2["parallelism"],
    )
    hashed = cheap.hash(PASSWORD)

    async def create() -> str:
        url = await database.ensure_database(postgres_server, name)
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(
                "CREATE TABLE schema_migrations (version text PRIMARY KEY,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for migration, sql in schema.migration_files():
                if migration >= "0009":
                    break
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", migration)
            for number, username in OLD_PATRONS:
                await conn.execute(
                    "INSERT INTO accounts (pass_number, pass_number_canonical, username,"
                    " username_canonical, email, email_canonical, password_hash)"
                    " VALUES ($1, lower($1), $2, lower($2), $3, $3, $4)",
                    number,
                    username,
                    f"{username}@example.org",
                    hashed,
                )
        finally:
            await conn.close()
        return url

    return asyncio.run(create())


async def test_every_old_pass_becomes_a_default_membership_then_the_named_default_ones(
    make_gateway: MakeGateway, backend: TestServer, pool: asyncpg.Pool
) -> None:
    """One test, in this order: the database is the module's, and the second half changes
    it for good."""
    gw = await make_gateway(routes_for(backend.port))  # applies 0009 and what follows
    rows = await pool.fetch("SELECT id::text AS id, pass_number FROM accounts ORDER BY pass_number")
    assert [row["pass_number"] for row in rows] == sorted(n for n, _ in OLD_PATRONS)
    memberships = Memberships(pool)
    for row in rows:
        assert await memberships.of(row["id"]) == (Membership("default", row["pass_number"]),)
        gw.session.cookie_jar.clear()
        assert (await login(gw, row["pass_number"].lower())).status == 303
        cookie = next(m.value for m in gw.session.cookie_jar if m.key == "library_session")
        assert await account_on(gw, cookie) == row["id"]

    # The gateway starts with an institutions file naming kb the default.
    kb_gw = await make_gateway(
        routes_for(backend.port),
        institutions="institutions:\n  - id: kb\n    name: Koninklijke Bibliotheek\n",
    )
    assert kb_gw.app is not None  # started: settle_default('kb') ran
    counts = await pool.fetch(
        "SELECT institution, count(*) AS n FROM memberships GROUP BY institution"
    )
    assert {row["institution"]: row["n"] for row in counts} == {"kb": len(OLD_PATRONS)}
    assert await Memberships(pool).settle_default("kb") == 0  # nothing left to move
    assert (
        await pool.fetchval("SELECT value FROM gateway_state WHERE name = 'default_institution'")
        == "kb"
    )
    kb_gw.session.cookie_jar.clear()
    assert (await login(kb_gw, "ab-50003")).status == 303
