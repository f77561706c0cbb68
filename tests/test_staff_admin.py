"""The admin's pages (staff list, add, disable, enable, role, starting a sign-in over, the
audit trail) and every member's "my security" page: each change takes its reason (or the
member's password), and leaves its row on the audit trail."""

from __future__ import annotations

import asyncio
import html

import asyncpg
import pytest

from auth.audit import Origin
from auth.pages import i18n
from auth.staff.model import NotAnAdmin
from auth.staff.trail import actor as trail_actor
from gateway.demo.mailcatcher import MailCatcher
from tests.helpers import PASSWORD, Gateway, followed, link_in, mail_for, settle
from tests.staff_support import (
    Member,
    add_member,
    code_step,
    codes_on,
    page_token,
    password_step,
    sign_in,
    staff_services,
    unique_email,
)

T = i18n.translator("nl")


def said(key: str) -> str:
    return html.escape(T[key])


async def post(gw: Gateway, url: str, fields: dict[str, str]) -> tuple[int, str, str]:
    token = await page_token(gw, "/staff/members")
    resp = await gw.post(url, data={"csrf_token": token, **fields}, allow_redirects=False)
    return resp.status, resp.headers.get("Location", ""), await resp.text()


async def trail(pool: asyncpg.Pool, staff_id: str) -> list[tuple[str, str | None, str | None]]:
    return [
        (row["action"], row["actor_id"], row["reason"])
        for row in await pool.fetch(
            "SELECT action, actor_id, reason FROM audit_events WHERE staff_id = $1::uuid"
            " AND actor_kind = 'staff' ORDER BY id",
            staff_id,
        )
    ]


async def test_an_admin_adds_a_member_who_gets_the_activation_mail(
    mailing_gw: Gateway, pool: asyncpg.Pool, mail_catcher: MailCatcher
) -> None:
    gw = mailing_gw
    admin = await add_member(gw, role="admin")
    await sign_in(gw, admin)
    email = unique_email("new")
    status, _, page = await post(
        gw, "/staff/members/add", {"email": email, "role": "helpdesk", "reason": ""}
    )
    assert status == 422 and said("staff.members.error.reason") in page
    assert await pool.fetchval("SELECT count(*) FROM staff_members WHERE email = $1", email) == 0
    status, _, _ = await post(
        gw,
        "/staff/members/add",
        {"email": "a<b>@x.org", "role": "helpdesk", "reason": "new colleague"},
    )
    assert status == 422
    status, _, _ = await post(
        gw, "/staff/members/add", {"email": email, "role": "root", "reason": "new colleague"}
    )
    assert status == 422
    status, location, _ = await post(
        gw, "/staff/members/add", {"email": email, "role": "helpdesk", "reason": "new colleague"}
    )
    assert status == 303 and location == "/staff/members?notice=added"
    status, _, page = await post(
        gw, "/staff/members/add", {"email": email.upper(), "role": "admin", "reason": "again"}
    )
    assert status == 409 and said("staff.members.error.email_taken") in page
    await settle(gw)
    mail = await mail_for(mail_catcher, email, "staff_activate")
    assert "/staff/activate?token=" in link_in(mail)
    assert (await gw.get(followed(link_in(mail)))).status == 200
    new_id = await pool.fetchval("SELECT id::text FROM staff_members WHERE email = $1", email)
    assert await trail(pool, new_id) == [("staff_added", admin.id, "new colleague")]
    listing = await (await gw.get("/staff/members")).text()
    assert email in listing and said("staff.members.state.pending") in listing


async def test_an_admin_disables_enables_changes_role_and_starts_over(
    gw: Gateway, pool: asyncpg.Pool
) -> None:
    admin, member = await add_member(gw, role="admin"), await add_member(gw)
    await sign_in(gw, admin)
    for url, fields, notice in (
        ("/staff/members/disable", {"reason": "on leave"}, "disabled"),
        ("/staff/members/disable", {"reason": "on leave"}, "unchanged"),
        ("/staff/members/enable", {"reason": "back from leave"}, "enabled"),
        ("/staff/members/role", {"role": "admin", "reason": "team lead now"}, "role"),
        ("/staff/members/reset", {"reason": "lost their phone"}, "reset"),
    ):
        status, location, _ = await post(gw, url, {"staff_id": member.id, **fields})
        assert (status, location) == (303, f"/staff/members?notice={notice}"), url
    assert await trail(pool, member.id) == [
        ("staff_disabled", admin.id, "on leave"),
        ("staff_enabled", admin.id, "back from leave"),
        ("staff_role_changed", admin.id, "team lead now"),
        ("staff_reset", admin.id, "lost their phone"),
    ]
    row = await pool.fetchrow(
        "SELECT role, password_hash, activated_at FROM staff_members WHERE id = $1::uuid", member.id
    )
    assert row["role"] == "admin" and row["password_hash"] is None and row["activated_at"] is None
    # No reason, no change; an unknown member, 404; one's own account, refused.
    status, _, _ = await post(gw, "/staff/members/disable", {"staff_id": admin.id, "reason": ""})
    assert status == 422
    status, _, _ = await post(
        gw, "/staff/members/disable", {"staff_id": "not-a-uuid", "reason": "typo"}
    )
    assert status == 404
    for url in ("/staff/members/disable", "/staff/members/reset", "/staff/members/role"):
        status, _, page = await post(
            gw, url, {"staff_id": admin.id, "role": "helpdesk", "reason": "oops"}
        )
        assert status == 409 and said("staff.members.error.self") in page, url
    assert await pool.fetchval(
        "SELECT role = 'admin' AND NOT disabled FROM staff_members WHERE id = $1::uuid", admin.id
    )


async def test_an_admin_cannot_act_on_themselves_by_spelling_their_id_another_way(
    gw: Gateway, pool: asyncpg.Pool
) -> None:
    """A uuid is read in capitals and without dashes too: each is still the admin's own
    account, and the console must keep its admin."""
    admin = await add_member(gw, role="admin")
    await sign_in(gw, admin)
    spellings = (admin.id.upper(), admin.id.replace("-", ""), admin.id.replace("-", "").upper())
    for url in (
        "/staff/members/role",
        "/staff/members/disable",
        "/staff/members/reset",
    ):
        for spelling in spellings:
            status, _, page = await post(
                gw, url, {"staff_id": spelling, "role": "helpdesk", "reason": "step down"}
            )
            assert status == 409 and said("staff.members.error.self") in page, (url, spelling)
    row = await pool.fetchrow(
        "SELECT role, disabled, password_hash IS NOT NULL AS has_password FROM staff_members"
        " WHERE id = $1::uuid",
        admin.id,
    )
    assert dict(row) == {"role": "admin", "disabled": False, "has_password": True}
    assert [row[0] for row in await trail(pool, admin.id)] == ["staff_login_succeeded"]


async def _remove(gw: Gateway, change: str, target: Member, by: Member) -> bool:
    """`by` demotes or disables `target` through the console's service; False if refused
    because `by` is no admin any more."""
    management, actor = staff_services(gw).management, trail_actor(by.id, by.email)
    try:
        if change == "role":
            await management.set_role(
                target.id, "helpdesk", actor=actor, origin=Origin(), reason="reorganised"
            )
        else:
            await management.set_disabled(
                target.id, True, actor=actor, origin=Origin(), reason="reorganised"
            )
    except NotAnAdmin:
        return False
    return True


@pytest.mark.parametrize("change", ["role", "disable"])
async def test_two_admins_removing_each_other_at_once_leave_one_admin(
    gw: Gateway, pool: asyncpg.Pool, change: str
) -> None:
    """Each change locks the admin acting with the member it changes, so the second of two
    admins demoting (or disabling) each other at the same moment finds itself no admin and
    is refused: the console never ends up without one."""
    one, two = await add_member(gw, role="admin"), await add_member(gw, role="admin")
    done = await asyncio.gather(_remove(gw, change, two, one), _remove(gw, change, one, two))
    assert sorted(done) == [False, True]
    left = await pool.fetchval(
        "SELECT count(*) FROM staff_members WHERE id = ANY($1::uuid[])"
        " AND role = 'admin' AND NOT disabled",
        [one.id, two.id],
    )
    assert left == 1


async def test_the_audit_trail_page_newest_first_paged_and_by_actor(
    gw: Gateway, pool: asyncpg.Pool
) -> None:
    admin, member = await add_member(gw, role="admin"), await add_member(gw)
    await sign_in(gw, member)
    await sign_in(gw, admin)
    for n in range(3):
        await post(gw, "/staff/members/disable", {"staff_id": member.id, "reason": f"round {n}"})
        await post(gw, "/staff/members/enable", {"staff_id": member.id, "reason": f"round {n}"})
    page = await (await gw.get(f"/staff/audit?actor={admin.id}")).text()
    assert page.index("round 2") < page.index("round 1") < page.index("round 0")
    assert html.escape(T["audit.staff_disabled"]) in page
    assert member.email in page
    mine = await (await gw.get(f"/staff/audit?actor={member.id}")).text()
    assert "round 0" not in mine and html.escape(T["audit.staff_login_succeeded"]) in mine
    # Paging: more rows than a page, then the next page from the last id shown.
    await pool.executemany(
        "INSERT INTO audit_events (actor_kind, actor_id, action)"
        " VALUES ('system', 'filler', 'logout')",
        [()] * 60,
    )
    first = await (await gw.get("/staff/audit")).text()
    assert "/staff/audit?before_id=" in first
    before = first.split("/staff/audit?before_id=", 1)[1].split('"', 1)[0]
    second = await gw.get(f"/staff/audit?before_id={before}")
    assert second.status == 200 and "round 2" in await second.text()
    for junk in ("abc", "-1", "9" * 40, "1e3"):
        assert (await gw.get(f"/staff/audit?before_id={junk}")).status == 200


async def test_an_actor_no_row_can_name_shows_no_rows_never_an_error(gw: Gateway) -> None:
    admin = await add_member(gw, role="admin")
    await sign_in(gw, admin)
    for junk in ("%00", "a%00b", "%1B%5B2J", "nobody"):
        resp = await gw.get(f"/staff/audit?actor={junk}")
        assert resp.status == 200, junk
        page = await resp.text()
        assert said("staff.audit.none") in page and admin.email not in page.split("</select>")[1]


async def test_my_security_keeps_the_last_factor_and_asks_for_the_password(
    gw: Gateway, pool: asyncpg.Pool
) -> None:
    member = await add_member(gw)
    await sign_in(gw, member)
    page = await (await gw.get("/staff/security")).text()
    assert said("staff.security.only_one") in page
    factor_id = await pool.fetchval(
        "SELECT id FROM staff_factors WHERE staff_id = $1::uuid", member.id
    )
    token = await page_token(gw, "/staff/security")
    resp = await gw.post(
        "/staff/security/remove",
        data={"csrf_token": token, "factor": str(factor_id), "password": PASSWORD},
    )
    assert resp.status == 409 and said("staff.security.last_factor") in await resp.text()
    resp = await gw.post(
        "/staff/security/recovery-codes", data={"csrf_token": token, "password": "not mine"}
    )
    assert resp.status == 403
    resp = await gw.post(
        "/staff/security/recovery-codes", data={"csrf_token": token, "password": PASSWORD}
    )
    assert resp.status == 200
    codes = codes_on(await resp.text())
    assert len(codes) == 10 and not set(codes) & set(member.codes)
    # The old codes stopped working, the new ones work.
    gw.session.cookie_jar.clear()
    await password_step(gw, member.email)
    assert (await code_step(gw, member.codes[0], method="recovery")).status == 401
    assert (await code_step(gw, codes[0], method="recovery")).status == 303
    actions = [
        row["action"]
        for row in await pool.fetch(
            "SELECT action FROM audit_events WHERE staff_id = $1::uuid ORDER BY id", member.id
        )
    ]
    assert "staff_recovery_codes_renewed" in actions


async def test_a_second_factor_added_then_the_first_removed(
    gw: Gateway, pool: asyncpg.Pool
) -> None:
    member = await add_member(gw)
    await sign_in(gw, member)
    # A passkey row as a browser would have left it (the ceremony itself: the browser tests).
    await pool.execute(
        "INSERT INTO staff_factors (staff_id, kind, name, credential_id, public_key, sign_count)"
        " VALUES ($1::uuid, 'passkey', 'Laptop', $2, $3, 0)",
        member.id,
        member.id.encode(),
        b"not a key",
    )
    totp_id = await pool.fetchval(
        "SELECT id FROM staff_factors WHERE staff_id = $1::uuid AND kind = 'totp'", member.id
    )
    token = await page_token(gw, "/staff/security")
    resp = await gw.post(
        "/staff/security/remove",
        data={"csrf_token": token, "factor": str(totp_id), "password": "wrong"},
        allow_redirects=False,
    )
    assert resp.status == 403
    resp = await gw.post(
        "/staff/security/remove",
        data={"csrf_token": token, "factor": str(totp_id), "password": PASSWORD},
        allow_redirects=False,
    )
    assert resp.status == 303
    # Somebody else's factor is not one's to remove.
    other = await add_member(gw)
    other_factor = await pool.fetchval(
        "SELECT id FROM staff_factors WHERE staff_id = $1::uuid", other.id
    )
    resp = await gw.post(
        "/staff/security/remove",
        data={"csrf_token": token, "factor": str(other_factor), "password": PASSWORD},
        allow_redirects=False,
    )
    assert resp.status in (404, 409)
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM staff_factors WHERE staff_id = $1::uuid", other.id
        )
        == 1
    )
    kinds = await pool.fetch("SELECT kind FROM staff_factors WHERE staff_id = $1::uuid", member.id)
    assert [row["kind"] for row in kinds] == ["passkey"]
