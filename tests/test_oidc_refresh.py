"""Refresh tokens (rotation, reuse detection, the session they belong to), revocation
(RFC 7009) and introspection (RFC 7662), driven over plain HTTP as a library's server would.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any
from urllib.parse import quote_plus

import asyncpg
import pytest
from aiohttp import ClientResponse

from auth.credentials.passwords import PasswordHasher
from auth.sessions.registry import SessionRegistry
from auth.store.accounts import Account, Accounts
from tests.helpers import Gateway, add_patron, csrf_in, login, post_form
from tests.test_oidc_provider import (
    PARTNER,
    SECRET,
    WEB,
    authorize_url,
    code_for,
    exchange,
    gw,
    patron,
    pkce,
    verified,
)

__all__ = ["gw", "patron"]  # fixtures, imported to be used here


def basic(client_id: str, secret: str = SECRET) -> dict[str, str]:
    pair = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return {"Authorization": "Basic " + base64.b64encode(pair).decode()}


async def tokens_for(
    gw: Gateway, scope: str = "openid profile email library", client_id: str = "online-library"
) -> dict[str, Any]:
    redirect = WEB if client_id == "online-library" else PARTNER
    params = await code_for(gw, authorize_url(client_id, redirect, scope=scope, nonce="n-first"))
    resp = await exchange(gw, params["code"], client_id=client_id, redirect_uri=redirect)
    assert resp.status == 200, await resp.text()
    tokens: dict[str, Any] = await resp.json()
    return tokens


async def refresh(
    gw: Gateway, token: str, client_id: str = "online-library", **extra: str
) -> ClientResponse:
    return await gw.post(
        "/auth/oidc/token",
        data={"grant_type": "refresh_token", "refresh_token": token, **extra},
        headers=basic(client_id),
    )


async def introspect(gw: Gateway, token: str, client_id: str = "online-library") -> dict[str, Any]:
    resp = await gw.post("/auth/oidc/introspect", data={"token": token}, headers=basic(client_id))
    assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
    answer: dict[str, Any] = await resp.json()
    return answer


async def userinfo_status(gw: Gateway, access_token: str) -> int:
    resp = await gw.get("/auth/oidc/userinfo", headers={"Authorization": f"Bearer {access_token}"})
    return resp.status


async def test_a_refresh_rotates_the_token_and_keeps_the_patron(
    gw: Gateway, patron: Account
) -> None:
    await login(gw, patron.username)
    first = await tokens_for(gw)
    assert first["refresh_token"]
    resp = await refresh(gw, first["refresh_token"])
    assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
    second = await resp.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert await userinfo_status(gw, second["access_token"]) == 200
    old = await verified(gw, first["id_token"], "online-library")
    new = await verified(gw, second["id_token"], "online-library")
    assert (new["sub"], new["sid"], new["auth_time"]) == (old["sub"], old["sid"], old["auth_time"])
    assert "nonce" not in new  # OIDC Core 12.2
    # The `library` scope's claims are read anew on a refresh, memberships included.
    assert (
        new["memberships"]
        == old["memberships"]
        == [{"institution": "default", "type": None, "valid_until": None}]
    )
    assert second["scope"] == first["scope"]


async def test_a_used_refresh_token_presented_again_ends_the_whole_grant(
    gw: Gateway, patron: Account, caplog: pytest.LogCaptureFixture
) -> None:
    await login(gw, patron.username)
    first = await tokens_for(gw)
    second = await (await refresh(gw, first["refresh_token"])).json()
    caplog.set_level(logging.WARNING, logger="auth.oidc")
    replay = await refresh(gw, first["refresh_token"])  # the stolen copy
    assert replay.status == 400 and (await replay.json())["error"] == "invalid_grant"
    # The legitimate holder's newer token and what it bought are gone too.
    again = await refresh(gw, second["refresh_token"])
    assert again.status == 400 and (await again.json())["error"] == "invalid_grant"
    assert await userinfo_status(gw, second["access_token"]) == 401
    assert (await introspect(gw, second["access_token"])) == {"active": False}
    events = [r for r in caplog.records if getattr(r, "event", None) == "refresh_token_reuse"]
    assert len(events) == 1 and events[0].__dict__["account_id"] == patron.id
    assert first["refresh_token"] not in caplog.text


async def test_a_used_refresh_token_presented_again_is_on_the_patrons_trail(
    gw: Gateway, patron: Account, pool: asyncpg.Pool
) -> None:
    await login(gw, patron.username)
    first = await tokens_for(gw)
    assert (await refresh(gw, first["refresh_token"])).status == 200
    replay = await refresh(gw, first["refresh_token"])
    assert replay.status == 400
    [row] = await pool.fetch(
        "SELECT * FROM audit_events WHERE account_id = $1::uuid AND action = 'refresh_token_reuse'",
        patron.id,
    )
    assert row["actor_kind"] == "system" and row["request_id"] == replay.headers["X-Request-Id"]
    assert json.loads(row["details"]) == {"client_id": "online-library"}
    assert first["refresh_token"] not in str(dict(row))


async def test_another_clients_refresh_token_is_refused_and_left_alone(
    gw: Gateway, patron: Account
) -> None:
    await login(gw, patron.username)
    first = await tokens_for(gw)
    stolen = await refresh(gw, first["refresh_token"], client_id="partner")
    assert stolen.status == 400 and (await stolen.json())["error"] == "invalid_grant"
    assert (await refresh(gw, first["refresh_token"])).status == 200


async def test_scope_may_narrow_on_refresh_never_widen(gw: Gateway, patron: Account) -> None:
    await login(gw, patron.username)
    first = await tokens_for(gw, scope="openid profile")
    wider = await refresh(gw, first["refresh_token"], scope="openid profile email")
    assert wider.status == 400 and (await wider.json())["error"] == "invalid_scope"
    narrow = await refresh(gw, first["refresh_token"], scope="openid")
    assert narrow.status == 200 and (await narrow.json())["scope"] == "openid"


async def test_a_refresh_token_ends_with_the_browser_session(gw: Gateway, patron: Account) -> None:
    await login(gw, patron.username)
    tokens = await tokens_for(gw)
    assert (await introspect(gw, tokens["refresh_token"]))["active"] is True
    page = await gw.get("/auth/logout")
    resp = await post_form(gw, "/auth/logout", {"csrf_token": csrf_in(await page.text())})
    assert resp.status == 303
    refused = await refresh(gw, tokens["refresh_token"])
    assert refused.status == 400 and (await refused.json())["error"] == "invalid_grant"
    assert (await introspect(gw, tokens["refresh_token"])) == {"active": False}
    assert (await introspect(gw, tokens["access_token"])) == {"active": False}


async def test_offline_access_outlives_a_logout_but_not_a_new_password(
    gw: Gateway, patron: Account, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    await login(gw, patron.username)
    tokens = await tokens_for(gw, scope="openid offline_access")
    assert "offline_access" in tokens["scope"].split()
    page = await gw.get("/auth/logout")
    await post_form(gw, "/auth/logout", {"csrf_token": csrf_in(await page.text())})
    after_logout = await refresh(gw, tokens["refresh_token"])
    assert after_logout.status == 200
    offline = await after_logout.json()
    assert await userinfo_status(gw, offline["access_token"]) == 200
    # A new password ends offline grants too (what `replace_password` does for every path).
    registry = SessionRegistry(pool)
    await registry.revoke_account(patron.id)
    refused = await refresh(gw, offline["refresh_token"])
    assert refused.status == 400
    assert await userinfo_status(gw, offline["access_token"]) == 401


async def test_revoking_a_refresh_token_ends_its_grant(gw: Gateway, patron: Account) -> None:
    await login(gw, patron.username)
    tokens = await tokens_for(gw)
    resp = await gw.post(
        "/auth/oidc/revoke",
        data={"token": tokens["refresh_token"], "token_type_hint": "refresh_token"},
        headers=basic("online-library"),
    )
    assert resp.status == 200
    assert (await refresh(gw, tokens["refresh_token"])).status == 400
    assert await userinfo_status(gw, tokens["access_token"]) == 401
    assert (await introspect(gw, tokens["access_token"])) == {"active": False}


async def test_revoking_an_access_token_ends_it_alone(gw: Gateway, patron: Account) -> None:
    await login(gw, patron.username)
    tokens = await tokens_for(gw)
    resp = await gw.post(
        "/auth/oidc/revoke", data={"token": tokens["access_token"]}, headers=basic("online-library")
    )
    assert resp.status == 200
    assert await userinfo_status(gw, tokens["access_token"]) == 401
    assert (await introspect(gw, tokens["access_token"])) == {"active": False}
    assert (await refresh(gw, tokens["refresh_token"])).status == 200


async def test_revocation_needs_the_client_and_says_nothing_about_other_tokens(
    gw: Gateway, patron: Account
) -> None:
    await login(gw, patron.username)
    tokens = await tokens_for(gw)
    anonymous = await gw.post("/auth/oidc/revoke", data={"token": tokens["refresh_token"]})
    assert anonymous.status == 401 and (await anonymous.json())["error"] == "invalid_client"
    wrong = await gw.post(
        "/auth/oidc/revoke",
        data={"token": tokens["refresh_token"]},
        headers=basic("online-library", "not-the-secret-" + "y" * 40),
    )
    assert wrong.status == 401
    # Another client's token: the same 200 as for anything, and the token still works.
    other = await gw.post(
        "/auth/oidc/revoke", data={"token": tokens["refresh_token"]}, headers=basic("partner")
    )
    assert other.status == 200
    unknown = await gw.post(
        "/auth/oidc/revoke", data={"token": "no-such-token"}, headers=basic("online-library")
    )
    assert unknown.status == 200
    assert (await refresh(gw, tokens["refresh_token"])).status == 200


async def test_introspection_tells_the_issuing_client_about_a_live_token(
    gw: Gateway, patron: Account
) -> None:
    await login(gw, patron.username)
    tokens = await tokens_for(gw)
    access = await introspect(gw, tokens["access_token"])
    assert access["active"] is True and access["client_id"] == "online-library"
    assert access["sub"] == patron.id and access["token_type"] == "Bearer"
    assert access["username"] == patron.username
    assert set(access["scope"].split()) == {"openid", "profile", "email", "library"}
    assert access["exp"] > access["iat"]
    refresh_state = await introspect(gw, tokens["refresh_token"])
    assert refresh_state["active"] is True and refresh_state["sub"] == patron.id
    # Another client, a public client, garbage: nothing to learn.
    assert (await introspect(gw, tokens["access_token"], client_id="partner")) == {"active": False}
    public = await gw.post(
        "/auth/oidc/introspect", data={"token": tokens["access_token"], "client_id": "app"}
    )
    assert public.status == 401
    assert (await introspect(gw, "eyJhbGciOiJub25lIn0.e30.")) == {"active": False}


async def test_a_disabled_account_s_tokens_are_inactive_at_once(
    gw: Gateway, patron: Account, pool: asyncpg.Pool
) -> None:
    await login(gw, patron.username)
    tokens = await tokens_for(gw, scope="openid offline_access")
    accounts = Accounts(pool)
    async with accounts.transaction() as conn:  # what `accounts disable` does
        await accounts.set_disabled(patron.id, True, conn=conn)
        await SessionRegistry(pool).revoke_account(patron.id, conn=conn)
    assert (await introspect(gw, tokens["access_token"])) == {"active": False}
    assert (await introspect(gw, tokens["refresh_token"])) == {"active": False}
    assert (await refresh(gw, tokens["refresh_token"])).status == 400


async def test_a_public_client_gets_a_rotating_refresh_token_with_pkce(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    other = await add_patron(pool, hasher)
    await login(gw, other.username)
    verifier, challenge = pkce()
    redirect = "http://127.0.0.1:9/app"
    params = await code_for(
        gw, authorize_url("app", redirect, code_challenge=challenge, code_challenge_method="S256")
    )
    resp = await exchange(
        gw, params["code"], client_id="app", redirect_uri=redirect, verifier=verifier, secret=None
    )
    tokens = await resp.json()
    rotated = await gw.post(
        "/auth/oidc/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": "app",
        },
    )
    assert rotated.status == 200
    assert (await rotated.json())["refresh_token"] != tokens["refresh_token"]
