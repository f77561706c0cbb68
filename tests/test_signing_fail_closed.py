"""An instance that cannot sign identities must not forward patrons without one (and must
not answer 500 either): it says 503 and logs why, until its keys are fixed."""

from __future__ import annotations

import logging

import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from auth.credentials.passwords import PasswordHasher
from auth.services import SERVICES
from tests.helpers import MakeGateway, add_patron, login, routes_for


async def test_an_unreadable_signing_key_means_503_not_an_unsigned_identity(
    make_gateway: MakeGateway,
    backend: TestServer,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gw = await make_gateway(routes_for(backend.port))
    patron = await add_patron(pool, hasher)
    assert (await login(gw, patron.username)).status == 303
    assert (await gw.get("/reservations/mine")).status == 200

    # The stored key no longer decrypts with this instance's cookie keys (replaced keys,
    # a restored backup from elsewhere): the instance re-reads its keys.
    await pool.execute("UPDATE signing_keys SET private_key = 'not a fernet token' WHERE active")
    keys = gw.app[SERVICES].keys
    with caplog.at_level(logging.ERROR, logger="auth.tokens"):
        await keys.refresh()
    assert keys.active is None
    # The operator is told why, and where the fix lies.
    [why] = [record for record in caplog.records if record.name == "auth.tokens"]
    assert why.levelno == logging.ERROR
    assert "no active signing key can be decrypted" in why.getMessage()
    assert "GATEWAY_COOKIE_KEYS" in why.getMessage()

    resp = await gw.get("/reservations/elsewhere", headers={"Accept": "application/json"})
    assert resp.status == 503
    assert (await resp.json())["error"] == "service_unavailable"
    # Anonymous traffic is not affected: it carries no identity to sign.
    gw.session.cookie_jar.clear()
    assert (await gw.get("/open/hours")).status == 200

    # Fixed keys (a new active key this instance can read) put patrons through again.
    await keys.rotate()
    assert (await login(gw, patron.username)).status == 303
    assert (await gw.get("/reservations/mine")).status == 200
