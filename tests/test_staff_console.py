"""The console's frame, attacked: who reaches /staff/ at all (networks, the switch, patrons,
anonymous browsers, helpdesk members on admin pages), CSRF on every form, a stolen cookie
used from outside the staff networks, a disabled member's session, and the headers every
console page carries."""

from __future__ import annotations

import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from auth.staff import csrf
from gateway.config.routes_file import RoutesInvalid, parse_routes
from tests.helpers import PASSWORD, Gateway, MakeGateway, add_patron, csrf_in, login, routes_for
from tests.staff_support import (
    STAFF_COOKIE,
    add_member,
    page_token,
    password_step,
    sign_in,
    staff_cookie,
)

EVERY_CONSOLE_URL = (
    "/staff/",
    "/staff/login",
    "/staff/login/factor",
    "/staff/activate?token=x",
    "/staff/security",
    "/staff/members",
    "/staff/audit",
    "/staff/patrons?q=reader",
    "/staff/patrons/6f1c1d2e-8f3a-4b7c-9d0e-1a2b3c4d5e6f",
    "/staff/static/passkey.js",
    "/staff/static/console.css",
    "/staff/no-such-page",
)


async def test_the_console_switched_off_is_not_there(
    make_gateway: MakeGateway, backend: TestServer
) -> None:
    gw = await make_gateway(routes_for(backend.port), env={"GATEWAY_STAFF_CONSOLE": "off"})
    for url in EVERY_CONSOLE_URL:
        resp = await gw.get(url, allow_redirects=False)
        assert resp.status == 404, url
    resp = await gw.post("/staff/login", data={"email": "a@b.org"}, allow_redirects=False)
    assert resp.status == 404
    # Still the gateway's own: never passed to a backend (the routes cannot claim it).
    assert "x-request-id" in {name.lower() for name in resp.headers}


async def test_outside_the_staff_networks_every_console_url_is_404(
    make_gateway: MakeGateway, backend: TestServer
) -> None:
    gw = await make_gateway(routes_for(backend.port), env={"GATEWAY_STAFF_NETWORKS": "10.0.0.0/8"})
    for url in EVERY_CONSOLE_URL:
        resp = await gw.get(url, allow_redirects=False)
        assert resp.status == 404, url
    # A client naming an inside address itself is not believed: no proxy is trusted.
    resp = await gw.get("/staff/login", headers={"X-Forwarded-For": "10.1.2.3"})
    assert resp.status == 404
    # The patron pages are where they were.
    assert (await gw.get("/auth/login")).status == 200


async def test_inside_the_networks_through_a_trusted_proxy_the_console_is_there(
    make_gateway: MakeGateway, backend: TestServer
) -> None:
    gw = await make_gateway(
        routes_for(backend.port),
        env={
            "GATEWAY_STAFF_NETWORKS": "10.0.0.0/8, 192.168.10.0/24",
            "GATEWAY_TRUSTED_PROXIES": "127.0.0.1/32",
        },
    )
    inside = {"X-Forwarded-For": "10.1.2.3"}
    assert (await gw.get("/staff/login", headers=inside)).status == 200
    outside = {"X-Forwarded-For": "203.0.113.9"}
    assert (await gw.get("/staff/login", headers=outside)).status == 404


async def test_a_stolen_staff_cookie_used_outside_the_staff_networks_gets_404(
    make_gateway: MakeGateway, backend: TestServer
) -> None:
    gw = await make_gateway(
        routes_for(backend.port),
        env={"GATEWAY_STAFF_NETWORKS": "10.0.0.0/8", "GATEWAY_TRUSTED_PROXIES": "127.0.0.1/32"},
    )
    inside = {"X-Forwarded-For": "10.1.2.3"}
    member = await add_member(gw, role="admin")
    gw.session.cookie_jar.clear()
    token = csrf_in(await (await gw.get("/staff/login", headers=inside)).text())
    resp = await gw.post(
        "/staff/login",
        data={
            "csrf_token": token,
            "email": member.email,
            "password": PASSWORD,
        },
        headers=inside,
        allow_redirects=False,
    )
    assert resp.status == 303
    factor = csrf_in(await (await gw.get("/staff/login/factor", headers=inside)).text())
    resp = await gw.post(
        "/staff/login/factor",
        data={"csrf_token": factor, "method": "totp", "code": member.code()},
        headers=inside,
        allow_redirects=False,
    )
    assert resp.status == 303, await resp.text()
    cookie = staff_cookie(gw)
    assert cookie is not None
    stolen = {"Cookie": f"{STAFF_COOKIE}={cookie}"}
    gw.session.cookie_jar.clear()
    assert (await gw.get("/staff/members", headers={**stolen, **inside})).status == 200
    for url in ("/staff/", "/staff/members", "/staff/audit", "/staff/security"):
        resp = await gw.get(
            url, headers={**stolen, "X-Forwarded-For": "198.51.100.7"}, allow_redirects=False
        )
        assert resp.status == 404, url
        assert member.email not in await resp.text()


async def test_a_patron_session_opens_nothing_in_the_console(
    gw: Gateway, pool: asyncpg.Pool, hasher: object
) -> None:
    patron = await add_patron(pool, hasher)  # type: ignore[arg-type]
    assert (await login(gw, patron.username)).status == 303
    for url in (
        "/staff/",
        "/staff/members",
        "/staff/audit",
        "/staff/security",
        "/staff/login/factor",
    ):
        resp = await gw.get(url, allow_redirects=False)
        assert resp.status == 303 and resp.headers["Location"] == "/staff/login", url
    # The console never reads, writes or clears the patron's cookie.
    resp = await gw.get("/staff/login")
    assert "library_session" not in resp.headers.get("Set-Cookie", "")


async def test_anonymous_browsers_are_sent_to_the_sign_in_page(gw: Gateway) -> None:
    for url in (
        "/staff/",
        "/staff/members",
        "/staff/audit",
        "/staff/security",
        "/staff/security/totp",
    ):
        resp = await gw.get(url, allow_redirects=False)
        assert resp.status == 303 and resp.headers["Location"] == "/staff/login", url
    resp = await gw.get("/staff", allow_redirects=False)
    assert resp.status in (301, 308) and resp.headers["Location"] == "/staff/"
    # A forged or foreign cookie is anonymous too, and is cleared.
    resp = await gw.get(
        "/staff/", headers={"Cookie": f"{STAFF_COOKIE}={'x' * 43}"}, allow_redirects=False
    )
    assert resp.status == 303
    assert (
        "Max-Age=0" in resp.headers.get("Set-Cookie", "")
        or "expires" in resp.headers.get("Set-Cookie", "").lower()
    )


async def test_a_helpdesk_member_gets_403_on_every_admin_page(
    gw: Gateway, pool: asyncpg.Pool
) -> None:
    member = await add_member(gw, role="helpdesk")
    await sign_in(gw, member)
    for url in ("/staff/members", "/staff/audit", "/staff/audit?actor=x"):
        resp = await gw.get(url, allow_redirects=False)
        assert resp.status == 403, url
    token = await page_token(gw, "/staff/")
    before = await pool.fetchval("SELECT count(*) FROM staff_members")
    for url, fields in (
        (
            "/staff/members/add",
            {"email": "new@library.example.org", "role": "admin", "reason": "me"},
        ),
        ("/staff/members/disable", {"staff_id": member.id, "reason": "try"}),
        ("/staff/members/role", {"staff_id": member.id, "role": "admin", "reason": "promote me"}),
        ("/staff/members/reset", {"staff_id": member.id, "reason": "try"}),
    ):
        resp = await gw.post(url, data={"csrf_token": token, **fields}, allow_redirects=False)
        assert resp.status == 403, url
    assert await pool.fetchval("SELECT count(*) FROM staff_members") == before
    assert (
        await pool.fetchval("SELECT role FROM staff_members WHERE id = $1::uuid", member.id)
        == "helpdesk"
    )


# Every form of the console, and what it would change.
FULL_FORMS = {
    "/staff/security/remove": {"factor": "1", "password": PASSWORD},
    "/staff/security/recovery-codes": {"password": PASSWORD},
    "/staff/security/totp": {"code": "123456", "password": PASSWORD},
    "/staff/security/passkey": {"credential": "{}", "password": PASSWORD},
    "/staff/members/add": {
        "email": "csrf@library.example.org",
        "role": "admin",
        "reason": "forged",
    },
    "/staff/members/disable": {"staff_id": "", "reason": "forged"},
    "/staff/members/enable": {"staff_id": "", "reason": "forged"},
    "/staff/members/role": {"staff_id": "", "role": "admin", "reason": "forged"},
    "/staff/members/reset": {"staff_id": "", "reason": "forged"},
    "/staff/logout": {},
}
PENDING_FORMS = {
    "/staff/login/factor": {"method": "recovery", "code": "0000-0000-0000-0000"},
    "/staff/login/passkey": {"credential": "{}"},
}
ANONYMOUS_FORMS = {
    "/staff/login": {"email": "x@library.example.org", "password": "whatever it is"},
    "/staff/activate": {"token": "x" * 43, "password": "a new password for me"},
}


async def _state(pool: asyncpg.Pool) -> tuple[object, ...]:
    return tuple(
        [
            await pool.fetchval("SELECT count(*) FROM audit_events"),
            await pool.fetchval("SELECT count(*) FROM staff_members"),
            await pool.fetchval("SELECT count(*) FROM staff_factors"),
            await pool.fetchval("SELECT count(*) FROM staff_recovery_codes WHERE used_at IS NULL"),
            await pool.fetchval("SELECT count(*) FROM staff_sessions WHERE ended_at IS NULL"),
            await pool.fetchval("SELECT count(*) FROM login_throttle"),
            tuple(await pool.fetch("SELECT id, role, disabled FROM staff_members ORDER BY id")),
        ]
    )


@pytest.mark.parametrize("forged", ["missing", "wrong", "another browser's"])
async def test_every_form_refuses_a_missing_or_foreign_csrf_token(
    gw: Gateway, pool: asyncpg.Pool, forged: str
) -> None:
    victim, colleague = await add_member(gw, role="admin"), await add_member(gw)
    # The attacker's own browser, signed in: its token is genuine, for its own session only.
    attacker = await add_member(gw, role="admin")
    await sign_in(gw, attacker)
    foreign = await page_token(gw, "/staff/")

    def token() -> dict[str, str]:
        if forged == "missing":
            return {}
        if forged == "wrong":
            return {"csrf_token": csrf.token_for("x" * 43)}
        return {"csrf_token": foreign}

    await sign_in(gw, victim)
    await page_token(gw, "/staff/")
    before = await _state(pool)
    for url, fields in FULL_FORMS.items():
        if "staff_id" in fields:
            fields = {**fields, "staff_id": colleague.id}
        resp = await gw.post(url, data={**token(), **fields}, allow_redirects=False)
        assert resp.status == 403, f"{url}: {resp.status}"
    gw.session.cookie_jar.clear()
    resp = await password_step(gw, colleague.email)
    assert resp.status == 303
    await page_token(gw, "/staff/login/factor")
    middle = await _state(pool)
    for url, fields in PENDING_FORMS.items():
        resp = await gw.post(url, data={**token(), **fields}, allow_redirects=False)
        assert resp.status == 403, f"{url}: {resp.status}"
    assert await _state(pool) == middle
    gw.session.cookie_jar.clear()
    await page_token(gw, "/staff/login")
    for url, fields in ANONYMOUS_FORMS.items():
        resp = await gw.post(url, data={**token(), **fields}, allow_redirects=False)
        assert resp.status == 403, f"{url}: {resp.status}"
    # Nothing changed but the colleague's own (genuine) password step: a pending session.
    after = await _state(pool)
    assert middle[:4] == before[:4] and middle[5:] == before[5:]
    assert after == middle


async def test_a_disabled_members_session_ends_at_once(gw: Gateway, pool: asyncpg.Pool) -> None:
    admin, member = await add_member(gw, role="admin"), await add_member(gw)
    member_cookie = await sign_in(gw, member)
    assert (await gw.get("/staff/")).status == 200
    await sign_in(gw, admin)
    token = await page_token(gw, "/staff/members")
    resp = await gw.post(
        "/staff/members/disable",
        data={"csrf_token": token, "staff_id": member.id, "reason": "left the library"},
        allow_redirects=False,
    )
    assert resp.status == 303
    gw.session.cookie_jar.clear()
    resp = await gw.get(
        "/staff/", headers={"Cookie": f"{STAFF_COOKIE}={member_cookie}"}, allow_redirects=False
    )
    assert resp.status == 303 and resp.headers["Location"] == "/staff/login"
    assert (await password_step(gw, member.email)).status == 401


def test_a_route_cannot_claim_the_console() -> None:
    for prefix in ("/staff", "/staff/patrons"):
        text = (
            f"routes:\n  - name: x\n    prefix: {prefix}\n"
            "    backend: http://127.0.0.1:9\n    auth: public\n"
        )
        with pytest.raises(RoutesInvalid) as caught:
            parse_routes(text, "routes.yaml")
        assert "routes.yaml:3:" in str(caught.value.problems[0])
        assert "/staff" in str(caught.value.problems[0])


async def test_console_pages_carry_the_documents_policy(gw: Gateway) -> None:
    resp = await gw.get("/staff/login")
    csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "script-src" not in csp  # no script at all on a page without a passkey ceremony
    assert "form-action 'self'" in csp
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert "publickey-credentials-get=(self)" in resp.headers["Permissions-Policy"]
    assert "camera=()" in resp.headers["Permissions-Policy"]
    # The patron pages still allow WebAuthn to nobody.
    patron = await gw.get("/auth/login")
    assert "publickey-credentials-get=()" in patron.headers["Permissions-Policy"]


async def test_the_passkey_page_may_run_its_own_script_and_nothing_else(
    make_gateway: MakeGateway, backend: TestServer
) -> None:
    # A console at a domain name: at an IP address there is no passkey page (see below).
    gw = await make_gateway(
        routes_for(backend.port), env={"GATEWAY_PUBLIC_URL": "http://localhost:8080"}
    )
    member = await add_member(gw)
    await sign_in(gw, member)
    resp = await gw.get("/staff/security/passkey")
    assert resp.status == 200
    csp = resp.headers["Content-Security-Policy"]
    [nonce] = [
        part.split("'nonce-")[1].rstrip("'") for part in csp.split(";") if "script-src" in part
    ]
    page = await resp.text()
    assert f'<script src="/staff/static/passkey.js" nonce="{nonce}"></script>' in page
    assert page.count("<script") == 1
    script = await gw.get("/staff/static/passkey.js")
    assert script.status == 200 and "javascript" in script.headers["Content-Type"]


async def test_a_console_at_an_ip_address_offers_no_passkey(
    make_gateway: MakeGateway, backend: TestServer, pool: asyncpg.Pool
) -> None:
    """Browsers refuse WebAuthn for an IP address (the demo's http://127.0.0.1:8080): the
    console says so instead of a ceremony that can only fail, and the app stays on offer."""
    gw = await make_gateway(
        routes_for(backend.port), env={"GATEWAY_PUBLIC_URL": "http://127.0.0.1:8080"}
    )
    member = await add_member(gw)
    await sign_in(gw, member)
    security = await (await gw.get("/staff/security")).text()
    assert 'href="/staff/security/passkey"' not in security
    resp = await gw.get("/staff/security/passkey")
    assert resp.status == 409
    assert "IP" in await resp.text()
    token = await page_token(gw, "/staff/security")
    resp = await gw.post(
        "/staff/security/passkey",
        data={"csrf_token": token, "credential": "{}", "name": "x", "password": PASSWORD},
    )
    assert resp.status == 409
    passkeys = await pool.fetchval(
        "SELECT count(*) FROM staff_factors WHERE staff_id = $1::uuid AND kind = 'passkey'",
        member.id,
    )
    assert passkeys == 0
