"""The audit trail: every security event of a patron lands on it, through the real pages and
commands on a real database, with who, whom, from where and the request's id; a name that is
nobody's never does; nobody can change or remove a row (not the gateway's own pool, not a role
that does not own the table as docs/operations.md makes it, not the owner short of disabling
a trigger on purpose); and `library-gateway audit export` streams it as JSON lines."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import pwd
import re
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestServer
from cryptography.fernet import MultiFernet
from passlib.hash import md5_crypt

from auth.audit import ACTIONS, Actor, Event, label
from auth.credentials.passwords import PasswordHasher, wrap_legacy
from auth.mail import SmtpTransport
from auth.pages import i18n
from auth.store.accounts import Account
from auth.store.audit import AuditTrail
from gateway.appkeys import POOL
from gateway.cli.audit import moment
from gateway.demo.mailcatcher import MailCatcher
from tests.helpers import (
    PASSWORD,
    ROOT,
    Gateway,
    MakeGateway,
    add_patron,
    attempt,
    cli,
    csrf_in,
    fetch,
    form_token,
    jar_cookie,
    login,
    post_form,
    routes_for,
    settle,
    token_of,
    unique_pass_number,
)
from tests.security.test_enumeration import comparable
from tests.test_account_sessions import handle_of
from tests.test_activation import activate, invite
from tests.test_linking import INSTITUTIONS, OTHER_PASSWORD, kb_patron, link
from tests.test_oidc_provider import CLIENTS, SECRET
from tests.test_recovery import ask_reset, post_reset, reset_link

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
NEW_PASSWORD = "a lantern in the stacks"
WRONG = "not the password at all"


# Every column, the ids as text (as `Account.id` is).
ROW = (
    "SELECT id, at, actor_kind, actor_id, actor_name, action, account_id::text AS account_id,"
    " staff_id::text AS staff_id, remote, user_agent, reason, request_id, details"
    " FROM audit_events"
)


async def trail_of(pool: asyncpg.Pool, account_id: str) -> list[asyncpg.Record]:
    """Every row about the account, oldest first."""
    return list(await pool.fetch(ROW + " WHERE account_id = $1::uuid ORDER BY id", account_id))


def actions(rows: list[asyncpg.Record]) -> list[str]:
    return [row["action"] for row in rows]


def details(row: asyncpg.Record) -> dict[str, Any]:
    value = row["details"]
    found: dict[str, Any] = json.loads(value) if isinstance(value, str) else value
    return found


async def newest_id(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT coalesce(max(id), 0) FROM audit_events"))


async def written_since(pool: asyncpg.Pool, last_id: int) -> list[asyncpg.Record]:
    return list(await pool.fetch(ROW + " WHERE id > $1 ORDER BY id", last_id))


# --- A patron's security events -------------------------------------------------------------


async def test_a_login_is_on_the_trail_with_its_browser_address_and_request_id(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    patron = await add_patron(pool, hasher)
    headers = {"User-Agent": FIREFOX}
    page = await gw.get("/auth/login", headers=headers)
    fields = {"csrf_token": csrf_in(await page.text()), "username": patron.pass_number}
    resp = await post_form(gw, "/auth/login", {**fields, "password": PASSWORD}, headers=headers)
    assert resp.status == 303

    [row] = await trail_of(pool, patron.id)
    assert row["action"] == "login_succeeded"
    assert (row["actor_kind"], row["actor_id"], row["actor_name"]) == (
        "patron",
        patron.id,
        patron.username,
    )
    assert (row["remote"], row["user_agent"]) == ("127.0.0.1", FIREFOX)
    # The id the client got back, and the one the access log line of the request carries
    # (tests/test_audit_process.py reads that line from a real gateway's log).
    assert row["request_id"] == resp.headers["X-Request-Id"]
    assert details(row) == {"new_device": True}


async def test_a_wrong_password_is_on_the_accounts_trail_and_an_unknown_name_nowhere(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """A failed login for an existing account is on its trail, written after the answer; one
    for a name that is nobody's writes nothing at all (a patron's typo is nobody's business),
    and both answers stay alike."""
    patron = await add_patron(pool, hasher)
    unknown = f"reader{unique_pass_number()}-typo"
    before = await newest_id(pool)

    answers = []
    for name in (patron.username, unknown):
        gw.session.cookie_jar.clear()
        token = await form_token(gw, "/auth/login")
        resp = await post_form(
            gw,
            "/auth/login",
            {"csrf_token": token, "username": name, "password": WRONG},
            headers={"User-Agent": FIREFOX},
        )
        answers.append(await comparable(resp, name))
    assert answers[0] == answers[1] and answers[0][0] == 401
    await settle(gw)

    [row] = await written_since(pool, before)
    assert (row["action"], row["account_id"]) == ("login_failed", patron.id)
    # Whoever typed it is not logged in: no actor id, whatever name they claimed.
    assert (row["actor_kind"], row["actor_id"], row["actor_name"]) == ("patron", None, None)
    assert row["user_agent"] == FIREFOX and details(row) == {"form": "login"}
    typed = await pool.fetchval(
        "SELECT count(*) FROM audit_events WHERE strpos(audit_events::text, $1) > 0", unknown
    )
    assert typed == 0


async def test_the_failure_that_starts_a_block_is_on_the_trail_and_the_refused_tries_not(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    patron = await add_patron(pool, hasher)
    for _ in range(5):  # the fifth consecutive failure blocks the account for 30 s
        assert (await attempt(gw, patron.username, WRONG))[0] == 401
        await settle(gw)  # each failure's rows, before the next failure's
    assert (await attempt(gw, patron.username, PASSWORD))[0] == 429
    await settle(gw)

    rows = await trail_of(pool, patron.id)
    assert actions(rows) == ["login_failed"] * 5 + ["login_blocked"]
    assert details(rows[-1]) == {"form": "login", "account_seconds": 30}


async def test_a_logout_is_on_the_trail_once(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    patron = await add_patron(pool, hasher)
    assert (await login(gw, patron.username)).status == 303
    token = await form_token(gw, "/auth/logout")
    cookie = jar_cookie(gw)
    assert (await post_form(gw, "/auth/logout", {"csrf_token": token})).status == 303
    # The same (now dead) session logging out again ends nothing and writes nothing.
    again = await fetch(gw, "/auth/logout", cookie, method="POST", data={"csrf_token": token})
    assert again.status == 303

    rows = await trail_of(pool, patron.id)
    assert actions(rows) == ["login_succeeded", "logout"]
    assert (rows[1]["actor_id"], rows[1]["actor_name"]) == (patron.id, patron.username)


async def test_a_logout_a_connected_library_asked_for_is_on_the_trail(
    make_gateway: MakeGateway,
    backend: TestServer,
    monkeypatch: pytest.MonkeyPatch,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
) -> None:
    monkeypatch.setenv("OIDC_TEST_SECRET", SECRET)
    federated = await make_gateway(routes_for(backend.port), clients=CLIENTS)
    patron = await add_patron(pool, hasher)
    assert (await login(federated, patron.username)).status == 303
    page = await federated.get("/auth/oidc/logout?client_id=online-library")
    asked = {"csrf_token": csrf_in(await page.text()), "decision": "logout"}
    assert (await post_form(federated, "/auth/oidc/logout", asked)).status == 200
    assert actions(await trail_of(pool, patron.id)) == ["login_succeeded", "logout"]


async def post_account(gw: Gateway, path: str, fields: dict[str, str]) -> int:
    token = await form_token(gw, "/auth/account")
    return (await post_form(gw, path, {"csrf_token": token, **fields})).status


async def test_changes_on_the_account_page_are_on_the_trail_and_refused_ones_are_not(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    patron = await add_patron(pool, hasher)
    other = await add_patron(pool, hasher)
    assert (await login(gw, patron.username)).status == 303
    new_name = f"reader.new.{unique_pass_number()}"
    username = "/auth/account/username"
    assert (
        await post_account(gw, username, {"new_username": other.username, "password": PASSWORD})
        == 409
    )
    assert await post_account(gw, username, {"new_username": new_name, "password": WRONG}) == 403
    await settle(gw)  # its row is written beside the answer: before the next change's
    assert await post_account(gw, username, {"new_username": new_name, "password": PASSWORD}) == 303
    password = "/auth/account/password"
    weak = {"current_password": PASSWORD, "new_password": "short"}
    assert await post_account(gw, password, weak) == 422
    good = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    assert await post_account(gw, password, good) == 303
    await settle(gw)

    rows = await trail_of(pool, patron.id)
    assert actions(rows) == [
        "login_succeeded",
        "login_failed",  # the wrong current password, from the logged-in patron
        "username_changed",
        "password_changed",
    ]
    failed, renamed, changed = rows[1:]
    assert details(failed) == {"form": "account"} and failed["actor_id"] == patron.id
    assert details(renamed) == {"old": patron.username, "new": new_name}
    assert renamed["actor_name"] == patron.username  # as they were known when they acted
    assert changed["actor_name"] == new_name and details(changed) == {}
    assert await trail_of(pool, other.id) == []


async def browser(gw: Gateway, patron: Account) -> str:
    """Log `patron` in from a browser of its own; its session cookie."""
    gw.session.cookie_jar.clear()
    assert (await login(gw, patron.username)).status == 303
    cookie = jar_cookie(gw)
    assert cookie is not None
    return cookie


async def post_from(gw: Gateway, cookie: str, path: str, **fields: str) -> int:
    """Post a form of the account page from the browser holding `cookie`."""
    page = await fetch(gw, "/auth/account", cookie, headers={"Accept": "text/html"})
    token = csrf_in(await page.text())
    resp = await fetch(gw, path, cookie, method="POST", data={"csrf_token": token, **fields})
    return resp.status


async def test_ending_sessions_from_the_list_is_on_the_trail(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, cookie_keys: MultiFernet
) -> None:
    patron = await add_patron(pool, hasher)
    other, this = await browser(gw, patron), await browser(gw, patron)
    handle = handle_of(cookie_keys, other)
    end = "/auth/account/sessions/end"
    assert await post_from(gw, this, end, session=handle) == 303
    # Again: it has ended already, so nothing more happens, and nothing is written; nor
    # when there is no other session left to end.
    assert await post_from(gw, this, end, session=handle) == 303
    assert await post_from(gw, this, "/auth/account/sessions/end-others") == 303
    rows = await trail_of(pool, patron.id)
    assert actions(rows) == ["login_succeeded", "login_succeeded", "session_ended"]
    assert rows[-1]["actor_id"] == patron.id

    await browser(gw, patron)
    await browser(gw, patron)
    assert await post_from(gw, this, "/auth/account/sessions/end-others") == 303
    rows = await trail_of(pool, patron.id)
    assert actions(rows)[-1] == "sessions_ended" and details(rows[-1]) == {"count": 2}


@pytest.fixture
def mgw(mailing_gw: Gateway, fresh_recovery_mails: None) -> Gateway:
    return mailing_gw


async def test_a_reset_asked_for_and_used_is_on_the_trail_and_an_unknown_identifier_nowhere(
    mgw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, mail_catcher: MailCatcher
) -> None:
    patron = await add_patron(pool, hasher)
    before = await newest_id(pool)
    unknown = f"nobody{unique_pass_number()}"
    assert (await ask_reset(mgw, unknown)).status == 200
    await settle(mgw)
    assert await written_since(pool, before) == []

    token = token_of(await reset_link(mgw, mail_catcher, patron))
    assert (await post_reset(mgw, token, NEW_PASSWORD)).status == 303

    requested, reset = await trail_of(pool, patron.id)
    assert requested["action"] == "password_reset_requested"
    assert (requested["actor_kind"], requested["actor_id"]) == ("patron", None)
    assert details(requested) == {"outcome": "sent"} and requested["request_id"]
    assert reset["action"] == "password_reset" and reset["actor_id"] == patron.id
    assert token not in json.dumps([dict(row) for row in (requested, reset)], default=str)


async def test_an_activation_is_on_the_trail(
    mgw: Gateway, pool: asyncpg.Pool, mail_catcher: MailCatcher
) -> None:
    number, link_text = await invite(mgw, mail_catcher)
    chosen = f"new.member.{number}"
    assert (await activate(mgw, link_text, chosen, NEW_PASSWORD)).status == 303
    account_id = await pool.fetchval("SELECT id::text FROM accounts WHERE pass_number = $1", number)
    [row] = await trail_of(pool, account_id)
    assert (row["action"], row["actor_id"], row["actor_name"]) == (
        "account_activated",
        account_id,
        chosen,
    )


async def test_linking_a_pass_is_on_both_trails_and_a_wrong_password_on_the_pass_holders(
    make_gateway: MakeGateway,
    backend: TestServer,
    mail_catcher: MailCatcher,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
) -> None:
    lgw = await make_gateway(
        routes_for(backend.port),
        institutions=INSTITUTIONS,
        mail_transport=SmtpTransport(mail_catcher.url),
    )
    patron = await add_patron(pool, hasher)
    other = await kb_patron(pool, hasher)
    assert (await login(lgw, patron.username)).status == 303
    before = await newest_id(pool)
    nobodys = "KB" + unique_pass_number()
    assert (await link(lgw, "kb", nobodys, OTHER_PASSWORD)).status == 403
    await settle(lgw)
    assert await written_since(pool, before) == []  # a pass nobody holds: nobody's trail

    assert (await link(lgw, "kb", other.pass_number, WRONG)).status == 403
    await settle(lgw)  # the failure's row, written beside the answer, before the merge's
    assert (await link(lgw, "kb", other.pass_number, OTHER_PASSWORD)).status == 303
    await settle(lgw)

    failed, absorbed = await trail_of(pool, other.id)
    assert (failed["action"], details(failed)) == ("login_failed", {"form": "link"})
    assert (failed["actor_id"], failed["actor_name"]) == (patron.id, patron.username)
    assert absorbed["action"] == "account_absorbed"
    assert details(absorbed) == {"merged_into": patron.id, "passes": [f"kb:{other.pass_number}"]}
    mine = await trail_of(pool, patron.id)
    assert actions(mine) == ["login_succeeded", "account_merged", "pass_linked"]
    assert details(mine[1]) == {
        "absorbed": other.id,
        "absorbed_username": other.username,
        "passes": [f"kb:{other.pass_number}"],
    }
    assert mine[1]["request_id"] == mine[2]["request_id"] == absorbed["request_id"]


async def test_an_imported_hash_replaced_at_login_is_on_the_trail_once(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    legacy = wrap_legacy(md5_crypt.hash(PASSWORD))
    patron = await add_patron(pool, hasher, password_hash=legacy)
    for _ in range(2):
        gw.session.cookie_jar.clear()
        assert (await login(gw, patron.username)).status == 303
    rows = await trail_of(pool, patron.id)
    assert actions(rows) == ["legacy_hash_upgraded", "login_succeeded", "login_succeeded"]
    assert details(rows[0]) == {"scheme": "wrapped-md5-crypt"}
    assert legacy not in json.dumps(details(rows[0]))


def test_every_action_has_words_in_both_languages() -> None:
    for action, english in ACTIONS.items():
        assert label(action, "en") == english
        for lang in i18n.LANGUAGES:
            words = i18n.translator(lang)[f"audit.{action}"]
            assert words and words != action, (lang, action)
    assert label("a_later_versions_action", "nl") == "a_later_versions_action"
    with pytest.raises(ValueError, match="unknown audit action"):
        Event("made_up", Actor("system"))


# --- Nobody changes a row ---------------------------------------------------------------------

CHANGES = (
    "UPDATE audit_events SET reason = 'rewritten' WHERE id = $1",
    "DELETE FROM audit_events WHERE id = $1",
    "TRUNCATE audit_events",
)


async def one_row(pool: asyncpg.Pool) -> asyncpg.Record:
    trail = AuditTrail(pool)
    await trail.record(Event("logout", Actor("system"), details={"marker": secrets.token_hex(4)}))
    row = await pool.fetchrow(ROW + " ORDER BY id DESC LIMIT 1")
    assert row is not None
    return row


async def refused(pool: asyncpg.Pool, statement: str, row_id: int) -> str:
    args = (row_id,) if "$1" in statement else ()
    with pytest.raises(asyncpg.InsufficientPrivilegeError) as refusal:
        await pool.execute(statement, *args)
    return str(refusal.value)


async def test_the_gateways_own_pool_can_neither_update_delete_nor_truncate_the_trail(
    gw: Gateway, pool: asyncpg.Pool
) -> None:
    own = gw.app[POOL]
    row = await one_row(own)
    for statement in CHANGES:
        assert "append-only" in await refused(own, statement, row["id"])
    assert await pool.fetchrow(ROW + " WHERE id = $1", row["id"]) == row


def sql_blocks(section: str) -> list[str]:
    """The ```sql blocks of a section of docs/operations.md (up to the next heading), as an
    operator copies them."""
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    start = text.index(f"\n{section}\n") + len(section) + 2
    end = text.find("\n#", start)
    return re.findall(r"```sql\n(.*?)```", text[start : end if end > 0 else None], re.S)


async def test_the_owner_deletes_old_rows_only_as_the_docs_say_disabling_the_trigger(
    pool: asyncpg.Pool,
) -> None:
    row = await one_row(pool)
    for statement in CHANGES:
        assert "append-only" in await refused(pool, statement, row["id"])
    old = await pool.fetchval(
        "INSERT INTO audit_events (at, actor_kind, action) VALUES"
        " (now() - interval '3 years', 'system', 'logout') RETURNING id"
    )
    [retention] = sql_blocks("## The audit trail")
    await pool.execute(retention)
    assert await pool.fetchval("SELECT count(*) FROM audit_events WHERE id = $1", old) == 0
    assert await pool.fetchval("SELECT count(*) FROM audit_events WHERE id = $1", row["id"]) == 1
    assert "append-only" in await refused(pool, CHANGES[1], row["id"])  # the trigger is back


@pytest.fixture
async def app_role(database_url: str, pool: asyncpg.Pool) -> AsyncIterator[str]:
    """A role made with the statements docs/operations.md gives operators, and the database
    URL that logs in as it."""
    name = f"gateway_app_{secrets.token_hex(4)}"
    [grants] = sql_blocks("### The application's database role")
    await pool.execute(grants.replace("library_gateway_app", name))
    head, _, query = database_url.partition("?")
    scheme, _, rest = head.partition("://")
    host_part = rest.split("@", 1)[-1]
    yield f"{scheme}://{name}:unused@{host_part}" + (f"?{query}" if query else "")
    await pool.execute(f"DROP OWNED BY {name}")
    await pool.execute(f"DROP ROLE {name}")


async def test_a_gateway_run_as_a_role_that_does_not_own_the_trail_appends_but_never_changes_it(
    app_role: str,
    make_gateway: MakeGateway,
    backend: TestServer,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
) -> None:
    gw = await make_gateway(routes_for(backend.port), database_url=app_role)
    own = gw.app[POOL]
    assert await own.fetchval("SELECT current_user") != await pool.fetchval("SELECT current_user")
    patron = await add_patron(pool, hasher)
    assert (await login(gw, patron.username)).status == 303  # the role INSERTs
    [row] = await trail_of(own, patron.id)  # and SELECTs
    for statement in CHANGES:
        assert "permission denied for table audit_events" in await refused(
            own, statement, row["id"]
        )
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="must be owner"):
        await own.execute("ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update_delete")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="must be owner"):
        await own.execute("DROP TABLE audit_events")
    assert await pool.fetchrow(ROW + " WHERE id = $1", row["id"]) == row
    await gw.close()  # before the role is dropped


# --- The command line ---------------------------------------------------------------------------


async def command(database_url: str, cwd: Path, *args: str, stdin: str = "") -> str:
    done = await asyncio.to_thread(
        cli, *args, stdin=stdin, env={"GATEWAY_DATABASE_URL": database_url}, cwd=cwd
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_what_an_operator_does_on_the_command_line_is_on_the_trail_as_theirs(
    database_url: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    operator = pwd.getpwuid(os.geteuid()).pw_name
    number, kb_number = unique_pass_number(), "KB" + unique_pass_number()
    run = ("--pass-number", number)
    await command(
        database_url,
        tmp_path,
        *("accounts", "add", *run, "--email", f"a{number}@example.org", "--password-stdin"),
        stdin=PASSWORD + "\n",
    )
    await command(database_url, tmp_path, "accounts", "disable", *run)
    await command(database_url, tmp_path, "accounts", "enable", *run)
    membership = ("--institution", "kb", "--pass-number", kb_number)
    await command(
        database_url, tmp_path, "accounts", "membership", "add", "--account", number, *membership
    )
    await command(database_url, tmp_path, "accounts", "membership", "end", *membership)
    invited = unique_pass_number()
    await command(
        database_url,
        tmp_path,
        *("accounts", "invite", "--pass-number", invited, "--email", f"i{invited}@example.org"),
    )
    await command(
        database_url,
        tmp_path,
        *("accounts", "invite", "--pass-number", invited, "--email", f"new{invited}@example.org"),
    )
    imported = unique_pass_number()
    csv = tmp_path / "old-system.csv"
    csv.write_text(f"pass_number,email,password_hash\n{imported},m@example.org,\n", "utf-8")
    before = await newest_id(pool)
    await command(database_url, tmp_path, "accounts", "import", csv.name)

    account_id = await pool.fetchval("SELECT id::text FROM accounts WHERE pass_number = $1", number)
    rows = await trail_of(pool, account_id)
    assert [(row["action"], details(row)["command"]) for row in rows] == [
        ("operator_account_added", "accounts add"),
        ("operator_account_changed", "accounts disable"),
        ("operator_account_changed", "accounts enable"),
        ("pass_linked", "accounts membership add"),
        ("membership_ended", "accounts membership end"),
    ]
    assert {(row["actor_kind"], row["actor_id"]) for row in rows} == {("operator", operator)}
    assert details(rows[1]) == {
        "command": "accounts disable",
        "disabled": True,
        "changed": True,
        "sessions_ended": 0,
    }
    assert details(rows[3])["passes"] == details(rows[4])["passes"] == [f"kb:{kb_number}"]
    invited_id = await pool.fetchval(
        "SELECT id::text FROM accounts WHERE pass_number = $1", invited
    )
    assert actions(await trail_of(pool, invited_id)) == ["operator_account_added", "email_changed"]
    [run_row] = await written_since(pool, before)
    assert (run_row["action"], run_row["account_id"], run_row["actor_id"]) == (
        "operator_import",
        None,
        operator,
    )
    assert details(run_row) == {
        "command": "accounts import",
        "file": "old-system.csv",
        "institution": None,
        "imported": 1,
        "without_password": 1,
        "present": 0,
        "refused": 0,
    }


# --- audit export ----------------------------------------------------------------------------


def test_when_is_a_date_a_time_or_a_duration_back_from_now() -> None:
    now = dt.datetime(2026, 5, 3, 12, 0, tzinfo=dt.UTC)
    assert moment("24h", now) == now - dt.timedelta(hours=24)
    assert moment("90m", now) == now - dt.timedelta(minutes=90)
    assert moment("7d", now) == now - dt.timedelta(days=7)
    assert moment("2w", now) == now - dt.timedelta(weeks=2)
    assert moment("2026-05-01", now) == dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
    assert moment("2026-05-01T08:00", now) == dt.datetime(2026, 5, 1, 8, tzinfo=dt.UTC)
    assert moment("2026-05-01T08:00+02:00", now) == dt.datetime(2026, 5, 1, 6, tzinfo=dt.UTC)
    assert moment("2026-05-01T06:00Z", now) == dt.datetime(2026, 5, 1, 6, tzinfo=dt.UTC)
    for bad in ("yesterday", "24", "h", "-1d", "3y", "2026-13-01", ""):
        with pytest.raises(ValueError, match="neither an ISO 8601"):
            moment(bad, now)
    # Before the calendar begins: refused as well, never an OverflowError's traceback.
    for far in ("999999d", "999999w", "0001-01-01T00:00+01:00"):
        with pytest.raises(ValueError, match="before the year 1"):
            moment(far, now)


async def old_rows(pool: asyncpg.Pool, day: str, count: int, **facts: Any) -> list[int]:
    """`count` rows written (as an INSERT may) at moments of `day`, one a minute."""
    rows = await pool.fetch(
        "INSERT INTO audit_events (at, actor_kind, action, details)"
        " SELECT ($1::date + make_interval(mins => n)) AT TIME ZONE 'UTC', 'system', 'logout',"
        " $3::jsonb"
        " FROM generate_series(0, $2 - 1) AS n RETURNING id",
        dt.date.fromisoformat(day),
        count,
        json.dumps(facts),
    )
    return [row["id"] for row in rows]


async def export(database_url: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        cli, "audit", "export", *args, env={"GATEWAY_DATABASE_URL": database_url}, cwd=cwd
    )


@pytest.mark.slow
async def test_audit_export_writes_the_window_oldest_first_as_json_lines(
    database_url: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    first = await old_rows(pool, "2001-01-01", 2)
    inside = await old_rows(pool, "2001-01-02", 3, marker="inside")
    after = await old_rows(pool, "2001-01-03", 1)
    done = await export(database_url, tmp_path, "--since", "2001-01-02", "--until", "2001-01-03")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["id"] for line in lines] == inside
    assert lines[0] == {
        "id": inside[0],
        "at": "2001-01-02T00:00:00+00:00",
        "actor_kind": "system",
        "actor_id": None,
        "actor_name": None,
        "action": "logout",
        "account_id": None,
        "staff_id": None,
        "remote": None,
        "user_agent": None,
        "reason": None,
        "request_id": None,
        "details": {"marker": "inside"},
    }
    # An offset is honoured: 01:01 in Amsterdam's winter is 00:01 UTC, the first day's last.
    done = await export(
        database_url, tmp_path, "--since", "2001-01-01T01:01+01:00", "--until", "2001-01-02"
    )
    assert [json.loads(line)["id"] for line in done.stdout.splitlines()] == first[1:]
    # A duration back from now: everything recent, nothing of 2001.
    recent = await one_row(pool)
    done = await export(database_url, tmp_path, "--since", "1h")
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    ids = [line["id"] for line in lines]
    assert recent["id"] in ids and not set(ids) & set(first + inside + after)
    moments = [dt.datetime.fromisoformat(line["at"]) for line in lines]
    assert moments == sorted(moments)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--since", "yesterday"), "neither an ISO 8601"),
        (("--since", "1d", "--until", "2d"), "--until must come after --since"),
        (("--since", "999999d"), "before the year 1"),
    ],
)
async def test_audit_export_refuses_a_when_it_cannot_read(
    database_url: str, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    done = await export(database_url, tmp_path, *args)
    assert done.returncode == 2 and message in done.stderr and done.stdout == ""


async def test_the_trail_is_read_in_batches_none_lost_none_twice(pool: asyncpg.Pool) -> None:
    ids = await old_rows(pool, "2001-02-01", 7)
    since = dt.datetime(2001, 2, 1, tzinfo=dt.UTC)
    until = since + dt.timedelta(days=1)
    for batch in (1, 3, 7, 100):
        rows = [row async for row in AuditTrail(pool).since(since, until=until, batch=batch)]
        assert [row.id for row in rows] == ids, batch
    assert [row async for row in AuditTrail(pool).since(until, until=until)] == []


@pytest.mark.slow
async def test_audit_export_into_a_reader_that_stops_early_ends_quietly(
    database_url: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    await old_rows(pool, "2002-01-01", 1400, padding="x" * 200)  # well over a pipe's buffer
    window = ("--since", "2002-01-01", "--until", "2002-01-02")

    def head_one() -> tuple[bytes, int, bytes]:  # `audit export ... | head -1`
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "audit", "export", *window],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "GATEWAY_DATABASE_URL": database_url},
            cwd=tmp_path,
        )
        assert process.stdout is not None and process.stderr is not None
        line = process.stdout.readline()
        process.stdout.close()  # as `| head -1` does
        code = process.wait(timeout=120)
        with process.stderr:
            return line, code, process.stderr.read()

    line, code, errors = await asyncio.to_thread(head_one)
    assert json.loads(line)["at"].startswith("2002-01-01T00:00")
    assert code == 0 and b"Traceback" not in errors, errors.decode()
