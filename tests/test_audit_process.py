"""The audit trail of a real `library-gateway run` (tests/test_scale_out.py's processes): a
row and the access log line of its request name the same request id and client, so an
operator goes from one to the other."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests.gateway_processes import add_account, base_env, log_in
from tests.test_scale_out import Launch, backend, cookie_keys, http, launch

__all__ = ["backend", "cookie_keys", "http", "launch"]  # fixtures, imported to be used here

pytestmark = pytest.mark.slow


async def test_a_logins_row_names_the_request_id_of_its_access_log_line(
    launch: Launch,
    http: aiohttp.ClientSession,
    database_url: str,
    cookie_keys: str,
    tmp_path: Path,
    pool: asyncpg.Pool,
) -> None:
    gateway = await launch()
    account_id, username = await add_account(base_env(database_url, cookie_keys), tmp_path)
    since = len(gateway.logs)
    status, _ = await log_in(http, gateway, username)
    assert status == 303
    _, line = await gateway.wait_for_log(
        lambda entry: (
            entry.get("message") == "request"
            and (entry.get("method"), entry.get("path")) == ("POST", "/auth/login")
        ),
        since,
    )
    row = await pool.fetchrow(
        "SELECT request_id, remote FROM audit_events"
        " WHERE account_id = $1::uuid AND action = 'login_succeeded'",
        account_id,
    )
    assert row is not None and line["status"] == 303
    assert (row["request_id"], row["remote"]) == (line["request_id"], line["client"])
    assert row["request_id"]  # one the gateway made: the client sent none
