"""Signing in to the staff console: a password and always a second factor (a TOTP code or a
recovery code here; passkeys in tests/browser/test_staff_console.py), the session cookie's
flags, throttling, and the session's idle and absolute ends."""

from __future__ import annotations

import asyncio
import html
import time

import asyncpg

from auth.pages import i18n
from auth.services import SERVICES
from auth.staff import totp
from tests.helpers import (
    PASSWORD,
    Gateway,
    MakeGateway,
    clears_cookie,
    csrf_in,
    routes_for,
    set_cookies,
)
from tests.staff_support import (
    FORM_COOKIE,
    STAFF_COOKIE,
    add_member,
    code_step,
    forget_last_step,
    page_token,
    password_step,
    secret_on,
    sign_in,
    staff_cookie,
    staff_services,
    unique_email,
)

T = i18n.translator("nl")


def said(key: str) -> str:
    return html.escape(T[key])


async def test_a_password_and_a_totp_code_sign_in_with_a_cookie_for_the_console_alone(
    gw: Gateway,
) -> None:
    member = await add_member(gw)
    await forget_last_step(gw, member)
    resp = await password_step(gw, member.email)
    assert resp.status == 303 and resp.headers["Location"] == "/staff/login/factor"
    [pending] = set_cookies(resp, STAFF_COOKIE)
    # The password alone opens the second step and nothing else.
    home = await gw.get("/staff/", allow_redirects=False)
    assert home.status == 303 and home.headers["Location"] == "/staff/login"
    resp = await code_step(gw, member.code())
    assert resp.status == 303 and resp.headers["Location"] == "/staff/"
    [cookie] = set_cookies(resp, STAFF_COOKIE)
    assert cookie.value != pending.value  # a new token for the signed-in session
    assert cookie["path"] == "/staff/"
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Strict"
    assert not cookie["secure"]
    assert not cookie["max-age"] and not cookie["expires"]
    home = await gw.get("/staff/")
    assert home.status == 200
    page = await home.text()
    assert member.email in page and "/staff/patrons" in page


async def test_with_an_https_public_url_the_cookie_is_secure_and_prefixed(
    make_gateway: MakeGateway, backend: object
) -> None:
    gw = await make_gateway(
        routes_for(backend.port),  # type: ignore[attr-defined]
        public_url="https://login.library.example.org",
    )
    member = await add_member(gw)
    form = await gw.get("/staff/login")
    [form_cookie] = set_cookies(form, "__Secure-" + FORM_COOKIE)
    assert form_cookie["secure"] is True and form_cookie["path"] == "/staff/"
    # The test client speaks http, so it keeps Secure cookies to itself: sent by hand here.
    resp = await gw.post(
        "/staff/login",
        data={
            "csrf_token": csrf_in(await form.text()),
            "email": member.email,
            "password": PASSWORD,
        },
        headers={"Cookie": f"__Secure-{FORM_COOKIE}={form_cookie.value}"},
        allow_redirects=False,
    )
    assert resp.status == 303
    [cookie] = set_cookies(resp, "__Secure-" + STAFF_COOKIE)
    assert cookie["secure"] is True and cookie["path"] == "/staff/"
    assert cookie["httponly"] is True and cookie["samesite"] == "Strict"


async def test_a_wrong_password_and_an_unknown_address_get_the_same_answer(
    gw: Gateway, pool: asyncpg.Pool
) -> None:
    member = await add_member(gw)
    unknown = await password_step(gw, unique_email("nobody"))
    wrong = await password_step(gw, member.email, "not the password at all")
    assert unknown.status == wrong.status == 401
    assert said("staff.login.failed") in await unknown.text()
    assert said("staff.login.failed") in await wrong.text()
    assert staff_cookie(gw) is None
    # Written once the answer is on its way: wait for the work the gateway queued.
    await asyncio.gather(*gw.app[SERVICES].background)
    rows = await _trail(pool, member.id)
    assert rows == ["staff_login_failed"]


async def _trail(pool: asyncpg.Pool, staff_id: str) -> list[str]:
    return [
        row["action"]
        for row in await pool.fetch(
            "SELECT action FROM audit_events WHERE staff_id = $1::uuid ORDER BY id", staff_id
        )
    ]


async def test_a_wrong_code_is_refused_and_counted(gw: Gateway, pool: asyncpg.Pool) -> None:
    member = await add_member(gw)
    await password_step(gw, member.email)
    wrong = "000000" if member.code() != "000000" else "111111"
    resp = await code_step(gw, wrong)
    assert resp.status == 401
    assert said("staff.login.factor_failed") in await resp.text()
    counters = await pool.fetch(
        "SELECT key, failures FROM login_throttle WHERE key = $1", f"staff:{member.id}"
    )
    assert [row["failures"] for row in counters] == [1]


async def test_a_totp_code_is_never_taken_twice_not_even_within_its_step(gw: Gateway) -> None:
    member = await add_member(gw)
    await sign_in(gw, member)
    code = member.code()
    # The same code, again, from another browser that has the password too.
    gw.session.cookie_jar.clear()
    await password_step(gw, member.email)
    resp = await code_step(gw, code)
    assert resp.status == 401
    # Nor the code of the step before, which the clock drift window would otherwise allow.
    resp = await code_step(gw, member.code(-1))
    assert resp.status == 401
    # The next step's code is new, and is accepted.
    resp = await code_step(gw, member.code(+1))
    assert resp.status == 303 and resp.headers["Location"] == "/staff/"


def test_the_drift_window_is_one_step_either_side() -> None:
    secret = totp.new_secret()
    now = 1_700_000_000.0
    step = totp.step_at(now)
    for offset in (-1, 0, 1):
        assert totp.matching_step(secret, totp.code_at(secret, step + offset), now, None) == (
            step + offset
        )
    for offset in (-3, -2, 2, 3):
        code = totp.code_at(secret, step + offset)
        if all(code != totp.code_at(secret, step + near) for near in (-1, 0, 1)):
            assert totp.matching_step(secret, code, now, None) is None
    # A step at or before the last one accepted never matches again.
    assert totp.matching_step(secret, totp.code_at(secret, step), now, step) is None
    assert totp.matching_step(secret, totp.code_at(secret, step - 1), now, step - 1) is None
    assert totp.matching_step(secret, totp.code_at(secret, step + 1), now, step) == step + 1
    assert totp.matching_step(secret, "12345", now, None) is None
    assert totp.matching_step(secret, "١٢٣٤٥٦", now, None) is None  # not ASCII digits


async def test_a_recovery_code_signs_in_once(gw: Gateway, pool: asyncpg.Pool) -> None:
    member = await add_member(gw)
    await password_step(gw, member.email)
    typed = member.codes[3].upper().replace("-", " ")  # as somebody might type it
    resp = await code_step(gw, typed, method="recovery")
    assert resp.status == 303 and resp.headers["Location"] == "/staff/security?notice=recovery_used"
    security = await (await gw.get(resp.headers["Location"])).text()
    assert said("staff.security.recovery_used") in security
    assert html.escape(T["staff.security.codes_left"].format(count=9)) in security
    gw.session.cookie_jar.clear()
    await password_step(gw, member.email)
    resp = await code_step(gw, member.codes[3], method="recovery")
    assert resp.status == 401
    assert await _trail(pool, member.id) == [
        "staff_login_succeeded",
        "staff_recovery_code_used",
        "staff_login_failed",
    ]


async def test_another_members_recovery_code_does_not_work(gw: Gateway) -> None:
    member, other = await add_member(gw), await add_member(gw)
    await password_step(gw, member.email)
    resp = await code_step(gw, other.codes[0], method="recovery")
    assert resp.status == 401


async def test_failures_block_the_member_even_with_the_right_password(
    gw: Gateway, pool: asyncpg.Pool
) -> None:
    member = await add_member(gw)
    for _ in range(5):
        assert (await password_step(gw, member.email, "a wrong password")).status == 401
    blocked = await password_step(gw, member.email)
    assert blocked.status == 429
    assert int(blocked.headers["Retry-After"]) > 0
    assert staff_cookie(gw) is None
    # An address that is nobody's is throttled the same way.
    nobody = unique_email("nobody")
    for _ in range(5):
        assert (await password_step(gw, nobody, "a wrong password")).status == 401
    assert (await password_step(gw, nobody, "a wrong password")).status == 429
    # Wrong codes count too: a member with the password cannot guess codes for ever.
    other = await add_member(gw)
    await password_step(gw, other.email)
    for _ in range(5):
        assert (
            await code_step(gw, "999999" if other.code() != "999999" else "888888")
        ).status == 401
    await forget_last_step(gw, other)
    assert (await code_step(gw, other.code())).status == 429


async def test_codes_guessed_all_at_once_get_five_tries_not_one_each(
    gw: Gateway, pool: asyncpg.Pool
) -> None:
    """A code is quick to check, so an attacker with the password sends many guesses at
    once: each is counted before it is judged, so no more of them are judged than the five
    one at a time would get."""
    member = await add_member(gw)
    assert (await password_step(gw, member.email)).status == 303
    token = await page_token(gw, "/staff/login/factor")
    valid = {member.code(offset) for offset in (-1, 0, 1)}
    guesses = [code for n in range(40) if (code := f"{n:06d}") not in valid][:30]

    async def guess(code: str) -> int:
        resp = await gw.post(
            "/staff/login/factor",
            data={"csrf_token": token, "method": "totp", "code": code},
            allow_redirects=False,
        )
        return resp.status

    statuses = await asyncio.gather(*(guess(code) for code in guesses))
    assert sorted(statuses) == [401] * 5 + [429] * 25
    assert (
        sorted(await _trail(pool, member.id))
        == ["staff_login_blocked"] + ["staff_login_failed"] * 5
    )
    failures = await pool.fetchval(
        "SELECT failures FROM login_throttle WHERE key = $1", f"staff:{member.id}"
    )
    assert failures == 5
    await forget_last_step(gw, member)
    assert (await code_step(gw, member.code())).status == 429


async def test_a_session_idle_too_long_ends(gw: Gateway, pool: asyncpg.Pool) -> None:
    member = await add_member(gw)
    await sign_in(gw, member)
    assert (await gw.get("/staff/")).status == 200
    await pool.execute(
        "UPDATE staff_sessions SET last_seen_at = now() - interval '901 seconds'"
        " WHERE staff_id = $1::uuid AND ended_at IS NULL",
        member.id,
    )
    resp = await gw.get("/staff/", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/staff/login"
    assert clears_cookie(resp, STAFF_COOKIE)
    live = await pool.fetchval(
        "SELECT count(*) FROM staff_sessions WHERE staff_id = $1::uuid AND ended_at IS NULL",
        member.id,
    )
    assert live == 0


async def test_an_active_session_ends_at_its_absolute_lifetime(
    gw: Gateway, pool: asyncpg.Pool
) -> None:
    member = await add_member(gw)
    cookie = await sign_in(gw, member)
    await pool.execute(
        "UPDATE staff_sessions SET created_at = now() - interval '8 hours 1 second'"
        " WHERE staff_id = $1::uuid AND ended_at IS NULL",
        member.id,
    )
    gw.session.cookie_jar.clear()
    resp = await gw.get(
        "/staff/", headers={"Cookie": f"{STAFF_COOKIE}={cookie}"}, allow_redirects=False
    )
    assert resp.status == 303 and resp.headers["Location"] == "/staff/login"


async def test_the_limits_follow_the_settings(
    make_gateway: MakeGateway, backend: object, pool: asyncpg.Pool
) -> None:
    gw = await make_gateway(
        routes_for(backend.port),  # type: ignore[attr-defined]
        env={"GATEWAY_STAFF_IDLE_TIMEOUT": "60", "GATEWAY_STAFF_SESSION_LIFETIME": "3600"},
    )
    member = await add_member(gw)
    await sign_in(gw, member)
    await pool.execute(
        "UPDATE staff_sessions SET last_seen_at = now() - interval '61 seconds'"
        " WHERE staff_id = $1::uuid AND ended_at IS NULL",
        member.id,
    )
    assert (await gw.get("/staff/", allow_redirects=False)).status == 303
    await sign_in(gw, member)
    await pool.execute(
        "UPDATE staff_sessions SET created_at = now() - interval '3601 seconds'"
        " WHERE staff_id = $1::uuid AND ended_at IS NULL",
        member.id,
    )
    assert (await gw.get("/staff/", allow_redirects=False)).status == 303


async def test_a_second_step_left_waiting_ends(gw: Gateway, pool: asyncpg.Pool) -> None:
    member = await add_member(gw)
    await password_step(gw, member.email)
    await pool.execute(
        "UPDATE staff_sessions SET created_at = now() - interval '901 seconds'"
        " WHERE staff_id = $1::uuid AND ended_at IS NULL",
        member.id,
    )
    resp = await gw.get("/staff/login/factor", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/staff/login"


async def test_signing_out_ends_the_session_on_the_server(gw: Gateway, pool: asyncpg.Pool) -> None:
    member = await add_member(gw)
    cookie = await sign_in(gw, member)
    token = await page_token(gw, "/staff/")
    resp = await gw.post("/staff/logout", data={"csrf_token": token}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/staff/login?notice=signed_out"
    assert clears_cookie(resp, STAFF_COOKIE)
    # A copy of the cookie kept from before is worth nothing now.
    gw.session.cookie_jar.clear()
    resp = await gw.get(
        "/staff/", headers={"Cookie": f"{STAFF_COOKIE}={cookie}"}, allow_redirects=False
    )
    assert resp.status == 303
    assert "staff_logout" in await _trail(pool, member.id)


async def test_a_member_without_a_factor_cannot_sign_in_with_the_password_alone(
    gw: Gateway, pool: asyncpg.Pool
) -> None:
    member = await add_member(gw)
    await pool.execute("DELETE FROM staff_factors WHERE staff_id = $1::uuid", member.id)
    resp = await password_step(gw, member.email)
    assert resp.status == 403
    assert staff_cookie(gw) is None


async def test_a_password_reused_from_the_patron_side_means_nothing_here(
    gw: Gateway, pool: asyncpg.Pool
) -> None:
    # Patron and staff accounts are apart: the same address with a patron's password fails.
    member = await add_member(gw, password="the staff member's own password")
    resp = await password_step(gw, member.email, PASSWORD)
    assert resp.status == 401


async def test_one_code_sent_twice_at_once_signs_in_once(gw: Gateway) -> None:
    member = await add_member(gw)
    await forget_last_step(gw, member)
    browsers = []
    for _ in range(2):
        gw.session.cookie_jar.clear()
        assert (await password_step(gw, member.email)).status == 303
        cookie = staff_cookie(gw)
        assert cookie is not None
        page = await gw.get("/staff/login/factor")
        browsers.append((cookie, csrf_in(await page.text())))
    gw.session.cookie_jar.clear()
    code = member.code()
    answers = await asyncio.gather(
        *(
            gw.post(
                "/staff/login/factor",
                data={"csrf_token": token, "method": "totp", "code": code},
                headers={"Cookie": f"{STAFF_COOKIE}={cookie}"},
                allow_redirects=False,
            )
            for cookie, token in browsers
        )
    )
    assert sorted(answer.status for answer in answers) == [303, 401]


async def test_an_enrolment_left_open_ends_once_the_member_is_activated_elsewhere(
    gw: Gateway, pool: asyncpg.Pool
) -> None:
    """Somebody with the password of a member who has not enrolled yet gets the enrolment
    (no factor to ask for); once the member has enrolled a factor in their own browser, that
    session must not go on to plant a second one and read out new recovery codes."""
    services = staff_services(gw)
    email = unique_email("enrolling")
    password_hash = await services.hasher.hash(PASSWORD)
    async with services.members.transaction() as conn:
        member = await services.members.add(email, "admin", conn=conn)
        await services.members.set_password_hash(member.id, password_hash, conn=conn)
    resp = await password_step(gw, email)
    assert resp.status == 303 and resp.headers["Location"] == "/staff/security"
    page = await (await gw.get("/staff/security/totp")).text()
    secret = secret_on(page)
    # Meanwhile the member enrols a passkey in their own browser, and is activated.
    async with services.members.transaction() as conn:
        await conn.execute(
            "INSERT INTO staff_factors (staff_id, kind, name, credential_id, public_key,"
            " sign_count, transports) VALUES ($1::uuid, 'passkey', 'Laptop', $2, $3, 0, '{}')",
            member.id,
            b"credential of the member's own",
            b"public key",
        )
        await services.members.mark_activated(member.id, conn=conn)
    codes = await pool.fetchval(
        "SELECT count(*) FROM staff_recovery_codes WHERE staff_id = $1::uuid", member.id
    )
    token = csrf_in(page)
    resp = await gw.post(
        "/staff/security/totp",
        data={
            "csrf_token": token,
            "code": totp.code_at(secret, totp.step_at(time.time())),
            "name": "Mine now",
        },
        allow_redirects=False,
    )
    assert resp.status == 303 and resp.headers["Location"] == "/staff/login?notice=expired"
    kinds = await pool.fetch("SELECT kind FROM staff_factors WHERE staff_id = $1::uuid", member.id)
    assert [row["kind"] for row in kinds] == ["passkey"]
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM staff_recovery_codes WHERE staff_id = $1::uuid", member.id
        )
        == codes
    )
    assert (await gw.get("/staff/", allow_redirects=False)).status == 303
    live = await pool.fetchval(
        "SELECT count(*) FROM staff_sessions WHERE staff_id = $1::uuid AND ended_at IS NULL",
        member.id,
    )
    assert live == 0
