"""The first admin's story, end to end: `library-gateway staff add` mails an activation
link; the link opens a page to choose a password, then the enrolment of a TOTP app, then the
recovery codes, shown once; the other `staff` commands; every change on the audit trail with
the operator as its actor."""

from __future__ import annotations

import html
import time
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from auth.pages import i18n
from auth.staff import totp
from gateway.demo.mailcatcher import MailCatcher
from tests.helpers import (
    PASSWORD,
    Gateway,
    MakeGateway,
    cli,
    csrf_in,
    followed,
    link_in,
    mail_for,
    routes_for,
)
from tests.staff_support import (
    STAFF_COOKIE,
    codes_on,
    page_token,
    password_step,
    secret_on,
    staff_cookie,
    unique_email,
)

pytestmark = pytest.mark.timeout(300)
T = i18n.translator("nl")


@pytest.fixture
async def gw(make_gateway: MakeGateway, backend: TestServer) -> Gateway:
    """The console at a domain name, as an operator's is: passkeys are on offer beside the
    app (at an IP address they are not: tests/test_staff_console.py)."""
    return await make_gateway(
        routes_for(backend.port), env={"GATEWAY_PUBLIC_URL": "http://localhost:8080"}
    )


def staff_cli(database_url: str, catcher: MailCatcher, tmp: Path, *args: str) -> tuple[int, str]:
    done = cli(
        "staff",
        *args,
        "--data-dir",
        str(tmp),
        env={
            "GATEWAY_DATABASE_URL": database_url,
            "GATEWAY_SMTP_URL": catcher.url,
            "GATEWAY_PUBLIC_URL": "https://login.library.example.org",
        },
    )
    return done.returncode, done.stdout + done.stderr


async def activate(gw: Gateway, link: str, password: str = PASSWORD) -> None:
    """Follow an activation link: choose the password, enrol a TOTP app from the secret the
    page shows, and come out signed in (the recovery codes page)."""
    path = followed(link)
    assert link.startswith("https://login.library.example.org/staff/activate?token=")
    gw.session.cookie_jar.clear()
    form = await gw.get(path)
    assert form.status == 200
    token = csrf_in(await form.text())
    fields = {"csrf_token": token, "token": link.split("token=", 1)[1], "password": "password"}
    weak = await gw.post("/staff/activate", data=fields, allow_redirects=False)
    assert weak.status == 422
    resp = await gw.post(
        "/staff/activate", data={**fields, "password": password}, allow_redirects=False
    )
    assert resp.status == 303 and resp.headers["Location"] == "/staff/security"
    # Choosing a password opens the enrolment and nothing else.
    assert (await gw.get("/staff/", allow_redirects=False)).status == 303
    choices = await (await gw.get("/staff/security")).text()
    assert "/staff/security/totp" in choices and "/staff/security/passkey" in choices
    enrol = await gw.get("/staff/security/totp")
    page = await enrol.text()
    assert "<svg" in page  # the QR code, inline
    secret = secret_on(page)
    # A reload shows the same secret: the app may have scanned it already.
    assert secret_on(await (await gw.get("/staff/security/totp")).text()) == secret
    token = csrf_in(page)
    wrong = await gw.post("/staff/security/totp", data={"csrf_token": token, "code": "12345"})
    assert wrong.status == 422
    code = totp.code_at(secret, totp.step_at(time.time()))
    done = await gw.post(
        "/staff/security/totp", data={"csrf_token": token, "code": code, "name": "Work phone"}
    )
    assert done.status == 200
    shown = await done.text()
    assert html.escape(T["staff.codes.activated"]) in shown
    assert len(codes_on(shown)) == 10
    assert done.headers["Cache-Control"] == "no-store"


async def test_the_first_admin_is_added_on_the_command_line_and_activates_by_mail(
    gw: Gateway, pool: asyncpg.Pool, mail_catcher: MailCatcher, tmp_path: Path, database_url: str
) -> None:
    email = unique_email("first-admin")
    code, out = staff_cli(
        database_url, mail_catcher, tmp_path, "add", "--email", email, "--role", "admin"
    )
    assert code == 0, out
    assert f"activation mail sent to the mail server at 127.0.0.1:{mail_catcher.port}" in out
    link = link_in(await mail_for(mail_catcher, email, "staff_activate"))
    assert "token=" not in out  # the link goes by mail only
    await activate(gw, link)
    assert (await gw.get("/staff/")).status == 200
    assert (await gw.get("/staff/members")).status == 200
    member_id = await pool.fetchval(
        "SELECT id::text FROM staff_members WHERE email = $1 AND activated_at IS NOT NULL", email
    )
    rows = await pool.fetch(
        "SELECT actor_kind, actor_id, action, details FROM audit_events WHERE staff_id = $1::uuid"
        " ORDER BY id",
        member_id,
    )
    assert [row["action"] for row in rows] == [
        "staff_added",
        "staff_factor_added",
        "staff_activated",
    ]
    assert rows[0]["actor_kind"] == "operator" and rows[0]["actor_id"]
    assert rows[1]["actor_kind"] == rows[2]["actor_kind"] == "staff"
    # The link was spent.
    assert (await gw.get(followed(link))).status == 410
    # The same address again is refused.
    code, out = staff_cli(
        database_url, mail_catcher, tmp_path, "add", "--email", email.upper(), "--role", "helpdesk"
    )
    assert code == 1 and "already" in out
    code, out = staff_cli(
        database_url,
        mail_catcher,
        tmp_path,
        "add",
        "--email",
        "not an address",
        "--role",
        "helpdesk",
    )
    assert code == 1


async def test_a_member_who_left_before_enrolling_signs_in_to_the_enrolment(
    gw: Gateway, mail_catcher: MailCatcher, tmp_path: Path, database_url: str
) -> None:
    email = unique_email("half-way")
    assert (
        staff_cli(
            database_url, mail_catcher, tmp_path, "add", "--email", email, "--role", "helpdesk"
        )[0]
        == 0
    )
    link = link_in(await mail_for(mail_catcher, email, "staff_activate"))
    token = await page_token(gw, followed(link))
    resp = await gw.post(
        "/staff/activate",
        data={"csrf_token": token, "token": link.split("token=", 1)[1], "password": PASSWORD},
        allow_redirects=False,
    )
    assert resp.status == 303
    gw.session.cookie_jar.clear()
    resp = await password_step(gw, email)
    assert resp.status == 303 and resp.headers["Location"] == "/staff/security"
    assert (await gw.get("/staff/", allow_redirects=False)).status == 303


async def test_disable_enable_role_reset_and_list(
    gw: Gateway, pool: asyncpg.Pool, mail_catcher: MailCatcher, tmp_path: Path, database_url: str
) -> None:
    email = unique_email("colleague")
    assert (
        staff_cli(
            database_url,
            mail_catcher,
            tmp_path,
            "add",
            "--email",
            email,
            "--role",
            "helpdesk",
            "--lang",
            "en",
        )[0]
        == 0
    )
    await activate(gw, link_in(await mail_for(mail_catcher, email, "staff_activate", "en")))
    cookie = staff_cookie(gw)
    assert cookie is not None

    code, out = staff_cli(database_url, mail_catcher, tmp_path, "list")
    assert code == 0 and email in out and "helpdesk" in out and "active" in out

    code, out = staff_cli(
        database_url, mail_catcher, tmp_path, "disable", "--email", email, "--reason", "left"
    )
    assert code == 0 and "1 session ended" in out, out
    gw.session.cookie_jar.clear()
    resp = await gw.get(
        "/staff/", headers={"Cookie": f"{STAFF_COOKIE}={cookie}"}, allow_redirects=False
    )
    assert resp.status == 303
    assert (await password_step(gw, email)).status == 401

    assert staff_cli(database_url, mail_catcher, tmp_path, "enable", "--email", email)[0] == 0
    assert (
        staff_cli(
            database_url, mail_catcher, tmp_path, "role", "--email", email, "--role", "admin"
        )[0]
        == 0
    )
    assert await pool.fetchval("SELECT role FROM staff_members WHERE email = $1", email) == "admin"

    # The lost-factor procedure: everything gone, a new link mailed.
    code, out = staff_cli(
        database_url, mail_catcher, tmp_path, "reset", "--email", email, "--reason", "lost phone"
    )
    assert code == 0, out
    gw.session.cookie_jar.clear()
    assert (await password_step(gw, email)).status == 401
    factors = await pool.fetchval(
        "SELECT count(*) FROM staff_factors f JOIN staff_members m ON m.id = f.staff_id"
        " WHERE m.email = $1",
        email,
    )
    assert factors == 0
    new_link = link_in(await mail_for(mail_catcher, email, "staff_activate"))
    await activate(gw, new_link, password="a brand new password here")
    assert (await gw.get("/staff/members")).status == 200

    actions = [
        (row["actor_kind"], row["action"], row["reason"])
        for row in await pool.fetch(
            "SELECT e.actor_kind, e.action, e.reason FROM audit_events e"
            " JOIN staff_members m ON m.id = e.staff_id WHERE m.email = $1 ORDER BY e.id",
            email,
        )
        if row["actor_kind"] == "operator"
    ]
    assert actions == [
        ("operator", "staff_added", None),
        ("operator", "staff_disabled", "left"),
        ("operator", "staff_enabled", None),
        ("operator", "staff_role_changed", None),
        ("operator", "staff_reset", "lost phone"),
    ]
    code, out = staff_cli(
        database_url, mail_catcher, tmp_path, "disable", "--email", unique_email("nobody")
    )
    assert code == 1 and "no such staff member" in out
