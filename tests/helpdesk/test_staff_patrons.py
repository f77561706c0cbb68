"""The helpdesk's patron pages (`auth.staff.patrons`) on a real gateway, PostgreSQL and SMTP:
the search, the patron's page with every part of the overview, and every action through its
form, each leaving its row with the reason and the staff member. Attacked: no reason, no or a
wrong or another session's CSRF token (nothing changes), anonymous and patron browsers, a
helpdesk member on the admin pages, unknown and malformed ids, hostile names on the page."""

from __future__ import annotations

import html
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp import ClientResponse
from markupsafe import escape

from auth.credentials.passwords import PasswordHasher
from auth.helpdesk import model
from auth.helpdesk.errors import (
    EmailRejected,
    NoSuchPatron,
    NotApplicable,
    ReasonRequired,
)
from auth.helpdesk.model import PatronOverview
from auth.memberships import Membership
from auth.pages import i18n
from auth.services import SERVICES, AuthServices
from auth.staff import patron_view
from auth.store import merges
from auth.store.accounts import Account, Accounts
from auth.store.memberships import Memberships
from gateway.demo.mailcatcher import MailCatcher
from tests.helpdesk.support import BOUNCING, block, new_member, state_of
from tests.helpers import (
    PASSWORD,
    Gateway,
    account_on,
    add_patron,
    attempt,
    can_log_in,
    jar_cookie,
    login,
    mail_for,
    outbox_for,
    settle,
    unique_pass_number,
)
from tests.staff_support import Member, add_member, page_token, sign_in
from tests.test_backchannel import signed_in_at

pytestmark = pytest.mark.usefixtures("fresh_recovery_mails")

NL, EN = i18n.translator("nl"), i18n.translator("en")
EVERY_ACTION = patron_view.ACTIONS
HOSTILE = '<img src=x onerror="alert(1)">'


def said(key: str, **values: object) -> str:
    """A text of the console in Dutch, as the page shows it (escaped)."""
    return html.escape(NL[key].format(**values) if values else NL[key])


# --- The gateway: tests/helpdesk_support.py ----------------------------------------------------


@pytest.fixture
async def desk(gw: Gateway) -> Member:
    """A helpdesk member, signed in on `gw`."""
    member = await add_member(gw, role="helpdesk")
    await sign_in(gw, member)
    return member


# --- Through the pages ------------------------------------------------------------------------


def page_of(account_id: str) -> str:
    return f"/staff/patrons/{account_id}"


async def act(gw: Gateway, account_id: str, action: str, **fields: str) -> ClientResponse:
    """Post one action's form with the token of the patron's page (which is shown first)."""
    token = await page_token(gw, page_of(account_id))
    return await gw.post(
        f"{page_of(account_id)}/{action}",
        data={"csrf_token": token, **fields},
        allow_redirects=False,
    )


async def done(gw: Gateway, account_id: str, action: str, **fields: str) -> str:
    """Post an action that must work: 303 back to the patron's page; that page's text."""
    resp = await act(gw, account_id, action, **fields)
    assert resp.status == 303, (action, resp.status, await resp.text())
    location = resp.headers["Location"]
    assert location.startswith(page_of(account_id) + "?done="), location
    shown = await gw.get(location)
    assert shown.status == 200
    return await shown.text()


async def rows(pool: asyncpg.Pool, account_id: str) -> list[asyncpg.Record]:
    """Rows the staff wrote about the account that did something (looking is left out)."""
    return list(
        await pool.fetch(
            "SELECT * FROM audit_events WHERE account_id = $1::uuid AND actor_kind = 'staff'"
            " AND action <> 'helpdesk_viewed' ORDER BY id",
            account_id,
        )
    )


def the_row(found: list[asyncpg.Record], action: str, reason: str, by: Member) -> dict[str, Any]:
    [row] = found
    assert (row["action"], row["reason"]) == (action, reason)
    assert (row["actor_kind"], row["actor_id"], row["actor_name"]) == ("staff", by.id, by.email)
    assert row["remote"] == "127.0.0.1" and row["request_id"]
    details: dict[str, Any] = orjson.loads(row["details"])
    return details


async def views(pool: asyncpg.Pool, account_id: str) -> int:
    return int(
        await pool.fetchval(
            "SELECT count(*) FROM audit_events WHERE account_id = $1::uuid"
            " AND action = 'helpdesk_viewed'",
            account_id,
        )
    )


# --- The rules the page follows, as pure functions --------------------------------------------


def overview(state: model.State, *, email: str | None = "a@example.org", blocked: bool) -> Any:
    now = datetime.now(UTC)
    return PatronOverview(
        account_id=str(uuid.uuid4()),
        username="reader",
        email=email,
        pass_number="1",
        state=state,
        merged_into=str(uuid.uuid4()) if state == "merged" else None,
        created_at=now,
        memberships=(),
        ended_passes=(),
        block=model.Block(5, now, now + timedelta(seconds=30), True) if blocked else None,
        sign_ins=(),
        sessions=(),
        mails=(),
        links=(),
    )


def test_only_the_actions_that_fit_the_state_are_offered() -> None:
    offered = patron_view.offered
    assert offered(overview("active", blocked=True)) == {
        "reset",
        "unblock",
        "end_sessions",
        "disable",
        "email",
    }
    assert offered(overview("active", blocked=False)) == {
        "reset",
        "end_sessions",
        "disable",
        "email",
    }
    assert offered(overview("active", email=None, blocked=False)) == {
        "end_sessions",
        "disable",
        "email",
    }
    assert offered(overview("not_activated", blocked=False)) == {
        "activation",
        "end_sessions",
        "disable",
        "email",
    }
    assert offered(overview("disabled", blocked=True)) == {
        "unblock",
        "end_sessions",
        "enable",
        "email",
    }
    assert offered(overview("merged", blocked=True)) == frozenset()
    for state in ("active", "not_activated", "disabled", "merged"):
        for blocked in (True, False):
            assert offered(overview(state, blocked=blocked)) <= set(EVERY_ACTION)


def test_each_refusal_has_the_status_errors_py_names_and_a_message_in_both_languages() -> None:
    answers = {
        ReasonRequired("x"): (422, "reason"),
        EmailRejected("syntax", "x"): (422, "new_email"),
        NotApplicable("unchanged", "x"): (409, "new_email"),
        NoSuchPatron("x"): (404, None),
    }
    for code in ("merged", "disabled", "enabled", "activated", "no_email"):
        answers[NotApplicable(code, "x")] = (409, None)
    for exc, (status, field) in answers.items():
        answer = patron_view.refusal(exc)
        assert (answer.status, answer.field) == (status, field), exc
        assert answer.message in NL and answer.message in EN


def test_times_are_shown_on_dutch_clocks_to_the_second() -> None:
    moment = datetime(2026, 1, 31, 22, 5, 9, tzinfo=UTC)
    assert patron_view.at(moment, "nl") == "31 januari 2026 om 23:05:09"
    assert patron_view.at(moment, "en") == "31 January 2026, 23:05:09"


# --- Finding a patron -------------------------------------------------------------------------


async def test_the_search_lists_a_patron_by_pass_number_username_address_or_id(
    gw: Gateway, pool: asyncpg.Pool, patron: Account, desk: Member
) -> None:
    assert patron.email is not None
    for query in (
        patron.pass_number,
        patron.username.upper(),
        patron.email.upper(),
        patron.id,
        f"  {patron.pass_number} ",
    ):
        resp = await gw.get("/staff/patrons", params={"q": query})
        assert resp.status == 200, query
        text = await resp.text()
        # One match is still a list: the desk opens the page once it knows who it is.
        assert text.count(f'href="/staff/patrons/{patron.id}"') == 1, query
        assert patron.username in text and patron.email in text
        assert said("staff.patron.state.active") in text
    text = await (await gw.get("/staff/patrons", params={"q": patron.pass_number})).text()
    assert said("staff.patrons.key.pass_number") in text
    # Searching is not recorded; opening is.
    assert await views(pool, patron.id) == 0


async def test_no_match_says_so_and_an_empty_search_goes_back_to_the_form(
    gw: Gateway, patron: Account, desk: Member
) -> None:
    for query in (patron.username[:-1], "x" * 5000, str(uuid.uuid4()), "\x00", "%"):
        resp = await gw.get("/staff/patrons", params={"q": query})
        assert resp.status == 200, query
        text = await resp.text()
        assert "/staff/patrons/" not in text.split("<main", 1)[1]
        assert html.escape(NL["staff.patrons.none"].split("{query}")[0]) in text
    for query in ("", "   "):
        resp = await gw.get("/staff/patrons", params={"q": query}, allow_redirects=False)
        assert (resp.status, resp.headers["Location"]) == (303, "/staff/")
    resp = await gw.get("/staff/patrons", allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (303, "/staff/")


# --- The patron's page ------------------------------------------------------------------------


@pytest.mark.timeout(120)
async def test_the_patron_page_shows_every_part_of_the_overview(
    gw: Gateway,
    services: AuthServices,
    pool: asyncpg.Pool,
    patron: Account,
    mail_catcher: MailCatcher,
) -> None:
    assert patron.email is not None
    await Memberships(pool).add(
        patron.id, Membership("default", "OBA-" + patron.pass_number, "youth", None)
    )
    await Memberships(pool).add(patron.id, Membership("default", "RL-" + patron.pass_number))
    await Memberships(pool).end("default", "RL-" + patron.pass_number)
    # A session that signed in at a connected library, one failed login, and a block.
    assert (await login(gw, patron.username, "not the password")).status == 401
    await settle(gw)
    assert (await login(gw, patron.username)).status == 303
    await signed_in_at(gw, "online-library")
    await block(services, patron)
    # A mail that cannot be delivered, one that is.
    bounced = f"gone{patron.pass_number}@{BOUNCING}"
    await services.outbox.send(
        services.composer.compose(
            "username_changed", "nl", bounced, username="x", old_username="y"
        ),
        account_id=patron.id,
    )
    member = await add_member(gw)
    await sign_in(gw, member)
    await done(gw, patron.id, "reset", reason="called about the password")
    await mail_for(mail_catcher, patron.email, "reset")
    await settle(gw)
    [failed] = await outbox_for(pool, bounced)
    assert failed["attempts"] >= 1

    resp = await gw.get(page_of(patron.id))
    assert resp.status == 200
    text = await resp.text()

    for shown in (
        patron.username,
        patron.email,
        patron.pass_number,
        patron.id,
        said("staff.patron.state.active"),
        # passes: the live ones with type, the ended one
        "OBA-" + patron.pass_number,
        "youth",
        "RL-" + patron.pass_number,
        said("staff.patron.passes.ended"),
        # the block
        said("staff.patron.block.blocked", failures=5),
        said("staff.patron.block.last_failure"),
        # sign-ins, with success and failure
        said("staff.patron.sign_in.succeeded"),
        said("staff.patron.sign_in.failed"),
        # the session and the library it signed in to
        "De Online Bibliotheek",
        # mails: kind, recipient, delivery, the mail server's answer
        said("staff.patron.mail.reset"),
        said("staff.patron.mail_state.sent"),
        bounced,
        said("staff.patron.mail.username_changed"),
        said("staff.patron.mail_state.retrying"),
        "5.1.1 No such mailbox here",
        # the link still usable
        said("staff.patron.link.reset"),
    ):
        assert shown in text, shown
    # Every section has a heading; every table its caption and header cells.
    for heading in ("account", "logging_in", "mails", "sessions", "passes", "changes"):
        assert f">{said('staff.patron.' + heading)}</h2>" in text, heading
    assert text.count("<table") == text.count("<caption>") == 6
    assert text.count('<th scope="col">') >= 6 * 3
    # The actions the state allows, each a form with the console's token and a reason.
    for action in ("reset", "unblock", "end_sessions", "disable", "email"):
        assert f'action="{page_of(patron.id)}/{action}"' in text, action
    for action in ("activation", "enable"):
        assert f'action="{page_of(patron.id)}/{action}"' not in text, action
    assert text.count('name="reason"') == 5
    assert text.count('name="reason" type="text" maxlength="200" required') == 5
    # Never a token, a hash or a mail body.
    link_tokens = await pool.fetch(
        "SELECT token_hash FROM account_tokens WHERE account_id = $1::uuid", patron.id
    )
    assert link_tokens
    for row in link_tokens:
        assert str(row["token_hash"]) not in text
    assert "$argon2" not in text and "reset-password?token=" not in text


async def test_each_showing_is_recorded_and_a_patron_with_nothing_shows_that(
    gw: Gateway, pool: asyncpg.Pool, patron: Account, desk: Member
) -> None:
    for _ in range(2):
        text = await (await gw.get(page_of(patron.id))).text()
    assert await views(pool, patron.id) == 2
    for nothing in (
        "staff.patron.block.none",
        "staff.patron.sign_ins.none",
        "staff.patron.sessions.none",
        "staff.patron.links.none",
    ):
        assert said(nothing) in text, nothing
    assert f'action="{page_of(patron.id)}/unblock"' not in text
    # The id in any spelling leads to the one page.
    resp = await gw.get(page_of(patron.id.upper()))
    assert resp.status == 200 and f'action="{page_of(patron.id)}/disable"' in await resp.text()


async def test_an_unknown_or_malformed_patron_id_is_404_never_500(
    gw: Gateway, pool: asyncpg.Pool, patron: Account, desk: Member
) -> None:
    before = await pool.fetchval("SELECT count(*) FROM audit_events")
    for bad in (
        str(uuid.uuid4()),
        "not-an-id",
        patron.id + "0",
        patron.id[:-1],
        "x" * 5000,
        "%27%3B%20DROP%20TABLE%20accounts%3B--",
        "%F0%9F%98%80",
        "%E2%80%8B" + patron.id,
    ):
        resp = await gw.get(f"/staff/patrons/{bad}", allow_redirects=False)
        assert resp.status == 404, bad
        if len(bad) < 100:
            assert said("staff.patron.missing.title") in await resp.text(), bad
        token = await page_token(gw, "/staff/")
        for action in EVERY_ACTION:
            resp = await gw.post(
                f"/staff/patrons/{bad}/{action}",
                data={"csrf_token": token, "reason": "checking", "new_email": "a@example.org"},
                allow_redirects=False,
            )
            assert resp.status == 404, (bad, action)
    # Paths the gateway refuses before any page sees them: 400, still never a 500.
    for bad in ("%00", "..%2F..%2Fmembers", "a%2Fb"):
        resp = await gw.get(f"/staff/patrons/{bad}", allow_redirects=False)
        assert resp.status in (400, 404), bad
    assert await pool.fetchval("SELECT count(*) FROM audit_events") == before


async def test_an_account_merged_away_is_shown_with_the_way_to_its_survivor_and_no_action(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, desk: Member
) -> None:
    survivor, absorbed = await add_patron(pool, hasher), await add_patron(pool, hasher)
    async with Accounts(pool).transaction() as conn:
        merged = await merges.merge(
            conn,
            survivor.id,
            absorbed.id,
            "default",
            absorbed.pass_number,
            proved=absorbed.password_hash,
        )
    assert isinstance(merged, merges.Merged)
    text = await (await gw.get("/staff/patrons", params={"q": absorbed.pass_number})).text()
    assert f'href="{page_of(survivor.id)}"' in text and f'href="{page_of(absorbed.id)}"' in text
    text = await (await gw.get(page_of(absorbed.id))).text()
    assert said("staff.patron.state.merged") in text and said("staff.patron.merged_hint") in text
    assert f'href="{page_of(survivor.id)}"' in text
    assert 'method="post" action="/staff/patrons/' not in text
    # Posted all the same: refused, nothing written.
    for action in EVERY_ACTION:
        resp = await act(gw, absorbed.id, action, **fields_for(action, "trying anyway"))
        assert resp.status == 409, action
        assert said("staff.patron.error.merged") in await resp.text()
    assert await rows(pool, absorbed.id) == []


async def test_an_action_url_opened_as_a_page_leads_to_the_patron(
    gw: Gateway, patron: Account, desk: Member
) -> None:
    for action in EVERY_ACTION:
        resp = await gw.get(f"{page_of(patron.id)}/{action}?lang=en", allow_redirects=False)
        assert (resp.status, resp.headers["Location"]) == (303, page_of(patron.id) + "?lang=en")
    resp = await gw.get(f"{page_of(patron.id)}/reset?lang=<x>", allow_redirects=False)
    assert resp.headers["Location"] == page_of(patron.id)
    resp = await gw.get("/staff/patrons/not-an-id/reset", allow_redirects=False)
    assert resp.status == 404


async def test_hostile_names_are_shown_escaped(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, desk: Member
) -> None:
    number = unique_pass_number()
    hostile = await Accounts(pool).add(
        pass_number=number,
        email=f'"{HOSTILE}"@example.org',
        username=HOSTILE,
        password_hash=await hasher.hash(PASSWORD),
    )
    pages = [
        await (await gw.get("/staff/patrons", params={"q": number})).text(),
        await (await gw.get(page_of(hostile.id))).text(),
        await (await gw.get("/staff/patrons", params={"q": HOSTILE + "x"})).text(),
    ]
    for text in pages:
        assert "<img" not in text
    assert escape(HOSTILE) in pages[0] and escape(HOSTILE) in pages[1]
    assert escape(f'"{HOSTILE}"@example.org') in pages[1]


# --- Each action through its form -------------------------------------------------------------


async def test_a_reset_link_is_mailed_in_the_chosen_language_with_the_reason_on_record(
    gw: Gateway, pool: asyncpg.Pool, patron: Account, desk: Member, mail_catcher: MailCatcher
) -> None:
    assert patron.email is not None
    text = await done(gw, patron.id, "reset", reason="patron on the phone", mail_lang="en")
    assert said("staff.patron.done.reset", email=patron.email) in text
    assert 'role="status"' in text
    await settle(gw)
    await mail_for(mail_catcher, patron.email, "reset", "en")
    details = the_row(
        await rows(pool, patron.id), "helpdesk_reset_sent", "patron on the phone", desk
    )
    assert details == {"to": patron.email}


async def test_lifting_the_block_through_the_page_lets_the_patron_in(
    gw: Gateway, services: AuthServices, pool: asyncpg.Pool, patron: Account, desk: Member
) -> None:
    await block(services, patron)
    assert (await attempt(gw, patron.username, PASSWORD))[0] == 429
    await sign_in(gw, desk)
    text = await (await gw.get(page_of(patron.id))).text()
    assert said("staff.patron.block.blocked", failures=5) in text
    text = await done(gw, patron.id, "unblock", reason="locked out, confirmed by phone")
    assert said("staff.patron.done.unblocked") in text
    assert said("staff.patron.block.none") in text
    details = the_row(
        await rows(pool, patron.id), "helpdesk_block_lifted", "locked out, confirmed by phone", desk
    )
    assert details == {"failures": 5, "blocked": True}
    assert await can_log_in(gw, patron.username)


async def test_ending_the_sessions_through_the_page_logs_the_patron_out(
    gw: Gateway, pool: asyncpg.Pool, patron: Account, desk: Member
) -> None:
    assert (await login(gw, patron.username)).status == 303
    cookie = jar_cookie(gw)
    assert cookie is not None and await account_on(gw, cookie) == patron.id
    await sign_in(gw, desk)
    text = await (await gw.get(page_of(patron.id))).text()
    assert said("staff.patron.end_sessions.what") in text
    text = await done(gw, patron.id, "end_sessions", reason="lost phone")
    assert said("staff.patron.done.sessions_ended") in text
    assert await account_on(gw, cookie) is None
    assert the_row(await rows(pool, patron.id), "helpdesk_sessions_ended", "lost phone", desk) == {
        "sessions": 1
    }


async def test_disabling_and_enabling_through_the_page(
    gw: Gateway, pool: asyncpg.Pool, patron: Account, desk: Member
) -> None:
    text = await (await gw.get(page_of(patron.id))).text()
    assert said("staff.patron.disable.what") in text
    text = await done(gw, patron.id, "disable", reason="reported stolen")
    assert said("staff.patron.done.disabled") in text
    assert said("staff.patron.state.disabled") in text
    # Disabled: enabling is offered, disabling and the reset are not...
    assert f'action="{page_of(patron.id)}/enable"' in text
    for action in ("disable", "reset"):
        assert f'action="{page_of(patron.id)}/{action}"' not in text, action
    assert not await can_log_in(gw, patron.username)
    # ...and refused if posted all the same.
    await sign_in(gw, desk)
    for action in ("disable", "reset"):
        resp = await act(gw, patron.id, action, reason="again")
        assert resp.status == 409, action
        assert said("staff.patron.error.disabled") in await resp.text()
    text = await done(gw, patron.id, "enable", reason="card found")
    assert said("staff.patron.done.enabled") in text
    found = await rows(pool, patron.id)
    assert [(r["action"], r["reason"], r["actor_id"]) for r in found] == [
        ("helpdesk_disabled", "reported stolen", desk.id),
        ("helpdesk_enabled", "card found", desk.id),
    ]
    assert await can_log_in(gw, patron.username)
    await sign_in(gw, desk)
    resp = await act(gw, patron.id, "enable", reason="again")
    assert resp.status == 409 and said("staff.patron.error.enabled") in await resp.text()


async def test_correcting_the_address_through_the_page_mails_both(
    gw: Gateway, pool: asyncpg.Pool, patron: Account, desk: Member, mail_catcher: MailCatcher
) -> None:
    assert patron.email is not None
    new = f"new{patron.pass_number}@example.org"
    text = await done(gw, patron.id, "email", new_email=new, reason="typo at the desk")
    assert said("staff.patron.done.email", email=new) in text
    await settle(gw)
    await mail_for(mail_catcher, patron.email, "email_changed")
    await mail_for(mail_catcher, new, "email_changed")
    details = the_row(
        await rows(pool, patron.id), "helpdesk_email_corrected", "typo at the desk", desk
    )
    assert details == {"old": patron.email, "new": new}
    # Refused next to the field: no address, and the same one again.
    for value, status, message in (
        ("not an address", 422, "staff.patron.error.email"),
        (new, 409, "staff.patron.error.unchanged"),
    ):
        resp = await act(gw, patron.id, "email", new_email=value, reason="again")
        assert resp.status == status, value
        page = await resp.text()
        assert f'<p class="error" id="email-new_email-error">{said(message)}</p>' in page
        assert 'aria-invalid="true" autofocus aria-describedby="email-new_email-error"' in page
        assert f'value="{html.escape(value)}"' in page
    assert len(await rows(pool, patron.id)) == 1


async def test_the_activation_mail_is_resent_through_the_page(
    gw: Gateway, pool: asyncpg.Pool, mail_catcher: MailCatcher
) -> None:
    member = await new_member(gw)
    assert member.email is not None
    desk = await add_member(gw)
    await sign_in(gw, desk)
    text = await (await gw.get(page_of(member.id))).text()
    assert said("staff.patron.state.not_activated") in text
    assert f'action="{page_of(member.id)}/activation"' in text
    assert f'action="{page_of(member.id)}/reset"' not in text
    text = await done(gw, member.id, "activation", reason="mail lost", mail_lang="nl")
    assert said("staff.patron.done.activation", email=member.email) in text
    await settle(gw)
    await mail_for(mail_catcher, member.email, "activate")
    the_row(await rows(pool, member.id), "helpdesk_activation_resent", "mail lost", desk)


async def test_an_admin_uses_the_patron_pages_too(
    gw: Gateway, pool: asyncpg.Pool, patron: Account
) -> None:
    admin = await add_member(gw, role="admin")
    await sign_in(gw, admin)
    assert (await gw.get("/staff/patrons", params={"q": patron.username})).status == 200
    await done(gw, patron.id, "end_sessions", reason="asked by the patron")
    the_row(await rows(pool, patron.id), "helpdesk_sessions_ended", "asked by the patron", admin)


# --- Refused: no reason, no token, nobody signed in ------------------------------------------


def fields_for(action: str, reason: str) -> dict[str, str]:
    fields = {"reason": reason}
    if action == "email":
        fields["new_email"] = "someone.else@example.org"
    return fields


async def with_everything_to_act_on(
    gw: Gateway, pool: asyncpg.Pool, patron: Account
) -> dict[str, Any]:
    """A patron logged in and blocked, so every action would change something."""
    assert (await login(gw, patron.username)).status == 303
    await block(gw.app[SERVICES], patron)
    return await state_of(pool, patron.id)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("reason", ["", "   ", "x" * 201, "two\nlines", "tab\there", "\u200b"])
async def test_an_action_without_a_proper_reason_changes_nothing(
    gw: Gateway, services: AuthServices, pool: asyncpg.Pool, patron: Account, reason: str
) -> None:
    before = await with_everything_to_act_on(gw, pool, patron)
    member = await add_member(gw)
    await sign_in(gw, member)
    for action in EVERY_ACTION:
        if action in ("activation", "enable"):
            continue  # not offered for an active account: no field to show the error at
        resp = await act(gw, patron.id, action, **fields_for(action, reason))
        assert resp.status == 422, action
        page = await resp.text()
        field = f"{action}-reason"
        assert (
            f'<p class="error" id="{field}-error">{said("staff.patron.error.reason")}</p>' in page
        )
        assert f'aria-invalid="true" autofocus aria-describedby="{field}-error"' in page
        assert page.count("autofocus") == 1
    # A form the page does not offer: the message is shown at the top instead.
    resp = await act(gw, patron.id, "enable", reason=reason)
    assert resp.status == 422
    assert f'<p class="error" role="alert">{said("staff.patron.error.reason")}</p>' in (
        await resp.text()
    )
    assert await state_of(pool, patron.id) == before
    assert await rows(pool, patron.id) == []


@pytest.mark.timeout(120)
async def test_every_action_form_refuses_a_missing_wrong_or_foreign_csrf_token(
    gw: Gateway, services: AuthServices, pool: asyncpg.Pool, patron: Account
) -> None:
    before = await with_everything_to_act_on(gw, pool, patron)
    colleague, member = await add_member(gw), await add_member(gw)
    await sign_in(gw, colleague)
    foreign = await page_token(gw, page_of(patron.id))
    await sign_in(gw, member)
    mine = await page_token(gw, page_of(patron.id))
    assert foreign != mine
    for action in EVERY_ACTION:
        for token in (None, "", "x" * 43, mine[:-1], mine + "A", foreign):
            data = fields_for(action, "a proper reason")
            if token is not None:
                data["csrf_token"] = token
            resp = await gw.post(f"{page_of(patron.id)}/{action}", data=data)
            assert resp.status == 403, (action, token)
        # The right token twice in one form is no way round it either.
        resp = await gw.post(
            f"{page_of(patron.id)}/{action}",
            data=[("csrf_token", mine), ("csrf_token", foreign), ("reason", "twice")],
        )
        assert resp.status in (400, 403), action
    assert await state_of(pool, patron.id) == before
    assert await rows(pool, patron.id) == []


async def test_anonymous_and_patron_browsers_never_reach_the_patron_pages(
    gw: Gateway, services: AuthServices, pool: asyncpg.Pool, patron: Account
) -> None:
    before = await with_everything_to_act_on(gw, pool, patron)
    assert jar_cookie(gw) is not None  # a patron's session, and nothing else
    for _ in ("patron", "anonymous"):
        for url in ("/staff/patrons?q=" + patron.username, page_of(patron.id)):
            resp = await gw.get(url, allow_redirects=False)
            assert resp.status == 303 and resp.headers["Location"] == "/staff/login", url
        for action in EVERY_ACTION:
            resp = await gw.post(
                f"{page_of(patron.id)}/{action}",
                data=fields_for(action, "a reason"),
                allow_redirects=False,
            )
            assert resp.status == 303 and resp.headers["Location"] == "/staff/login", action
        gw.session.cookie_jar.clear()
    assert await state_of(pool, patron.id) == before
    assert await views(pool, patron.id) == 0


async def test_a_helpdesk_member_cannot_reach_the_admin_pages(gw: Gateway, desk: Member) -> None:
    for url in ("/staff/members", "/staff/audit"):
        resp = await gw.get(url, allow_redirects=False)
        assert resp.status == 403, url
        assert said("staff.forbidden.title") in await resp.text()
    token = await page_token(gw, "/staff/")
    resp = await gw.post(
        "/staff/members/add",
        data={"csrf_token": token, "email": "x@example.org", "role": "admin", "reason": "me"},
        allow_redirects=False,
    )
    assert resp.status == 403
    # Their own navigation does not even name those pages.
    home = await (await gw.get("/staff/")).text()
    assert 'href="/staff/members"' not in home and 'href="/staff/audit"' not in home
