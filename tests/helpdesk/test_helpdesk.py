"""The helpdesk's service layer (`auth.helpdesk`) on a real gateway, PostgreSQL and SMTP: what
it finds, what it shows of a patron (and never: a token, a password hash, a mail's body), and
every action it takes, each with its reason in exactly one audit row, each refused without a
change when it must be."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest

from auth.audit import Actor, Event, Origin
from auth.credentials import emails
from auth.credentials.passwords import PasswordHasher
from auth.helpdesk import model
from auth.helpdesk.errors import (
    EmailRejected,
    NoSuchPatron,
    NotApplicable,
    NotStaff,
    ReasonRequired,
)
from auth.helpdesk.lookup import MAX_MATCHES
from auth.helpdesk.model import PatronOverview
from auth.helpdesk.service import HELPDESK, Helpdesk
from auth.memberships import Membership
from auth.services import AuthServices
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
    followed,
    jar_cookie,
    link_in,
    login,
    mail_for,
    outbox_for,
    plain_text,
    settle,
    token_of,
    unique_pass_number,
)
from tests.test_backchannel import Receiver, signed_in_at
from tests.test_recovery import ask_reset

STAFF = Actor("staff", str(uuid.uuid4()), "desk@library.example")
AT_THE_DESK = Origin("192.0.2.10", "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0", "req-desk")
FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0"

pytestmark = pytest.mark.usefixtures("fresh_recovery_mails")


# --- The gateway, its mail, and the libraries it is connected to: tests/helpdesk_support.py ---


@pytest.fixture
def desk(gw: Gateway) -> Helpdesk:
    return gw.app[HELPDESK]


# --- What the trail and the database hold ------------------------------------------------------


async def staff_rows(pool: asyncpg.Pool, account_id: str) -> list[asyncpg.Record]:
    """The rows staff wrote about the account, oldest first (the patron's own security
    events, which other code writes, are left out)."""
    return list(
        await pool.fetch(
            "SELECT * FROM audit_events WHERE account_id = $1::uuid AND actor_kind = 'staff'"
            " ORDER BY id",
            account_id,
        )
    )


async def fresh_rows(pool: asyncpg.Pool, account_id: str, before: int) -> list[asyncpg.Record]:
    return (await staff_rows(pool, account_id))[before:]


def the_row(rows: list[asyncpg.Record], action: str, reason: str) -> dict[str, Any]:
    """The one row an action wrote: its action, reason, actor and origin; its details."""
    assert [row["action"] for row in rows] == [action]
    [row] = rows
    assert row["reason"] == reason
    assert (row["actor_kind"], row["actor_id"], row["actor_name"]) == (
        "staff",
        STAFF.id,
        STAFF.name,
    )
    assert (row["remote"], row["user_agent"], row["request_id"]) == (
        AT_THE_DESK.remote,
        AT_THE_DESK.user_agent,
        AT_THE_DESK.request_id,
    )
    details: dict[str, Any] = orjson.loads(row["details"])
    return details


async def mail_settled(gw: Gateway, pool: asyncpg.Pool, recipient: str) -> list[asyncpg.Record]:
    """Send what is due, and the outbox rows for `recipient` once no sender holds them."""
    await settle(gw)
    return await outbox_for(pool, recipient)


# --- The rules, as pure functions ---------------------------------------------------------------


def test_the_state_of_an_account_is_one_word() -> None:
    state = model.account_state
    assert state(disabled=False, not_activated=False, merged_into=None) == "active"
    assert state(disabled=False, not_activated=True, merged_into=None) == "not_activated"
    assert state(disabled=True, not_activated=True, merged_into=None) == "disabled"
    assert state(disabled=True, not_activated=False, merged_into="x") == "merged"


def test_a_mail_is_sent_waiting_retrying_or_failed_for_good() -> None:
    state = model.mail_state
    assert state(sent=True, attempts=3, max_attempts=30) == "sent"
    assert state(sent=False, attempts=0, max_attempts=30) == "waiting"
    assert state(sent=False, attempts=1, max_attempts=30) == "retrying"
    assert state(sent=False, attempts=30, max_attempts=30) == "failed"


@pytest.mark.parametrize(
    "reason",
    [
        "",
        "   ",
        "\t\n",
        "x" * (model.REASON_MAX + 1),
        "two\nlines",
        "a\x00b",
        "zero\u200bwidth",
        None,
    ],
)
def test_a_reason_is_one_short_line_of_text(reason: object) -> None:
    with pytest.raises(ReasonRequired):
        model.check_reason(reason)


def test_a_reason_is_kept_as_given_without_surrounding_space() -> None:
    assert model.check_reason("  patron called, verified by pass  ") == (
        "patron called, verified by pass"
    )
    assert model.check_reason("é" * model.REASON_MAX) == "é" * model.REASON_MAX


@pytest.mark.parametrize(
    "address",
    [
        "",
        "no-at-sign.example.org",
        "@example.org",
        "jan@localhost",
        "jan@a@example.org",
        "jan @example.org",
        "jan@example.org\r\nBcc: everyone@example.org",
        "j" * 250 + "@example.org",
    ],
)
def test_an_address_login_mail_cannot_go_to_is_refused(address: str) -> None:
    with pytest.raises(emails.EmailRejected):
        emails.check_email(address)


def test_an_address_is_stored_without_surrounding_space() -> None:
    assert emails.check_email("  Jan.de.Vries@Example.org ") == "Jan.de.Vries@Example.org"


# --- Finding a patron -------------------------------------------------------------------------


async def test_a_patron_is_found_by_id_pass_number_username_or_address(
    desk: Helpdesk, pool: asyncpg.Pool, patron: Account
) -> None:
    other_library = "OBA-" + unique_pass_number()
    await Memberships(pool).add(patron.id, Membership("oba", other_library, "adult"))
    assert patron.email is not None
    for query, key in (
        (patron.id, "account_id"),
        (patron.id.upper(), "account_id"),
        ("{" + patron.id + "}", "account_id"),
        (patron.pass_number, "pass_number"),
        (other_library.lower(), "pass_number"),
        (patron.username.upper(), "username"),
        (f"  {patron.username}  ", "username"),
        (patron.email.upper(), "email"),
    ):
        [found] = await desk.find(query)
        assert found.account_id == patron.id, query
        assert key in found.matched_by, query
        assert (found.username, found.email, found.state) == (
            patron.username,
            patron.email,
            "active",
        )


async def test_only_exact_matches_are_found_and_nonsense_is_no_error(
    desk: Helpdesk, patron: Account
) -> None:
    assert patron.email is not None
    for query in (
        patron.username[:-1],
        patron.pass_number[1:],
        patron.email.split("@")[0],
        patron.id[:-1],
        patron.id.replace("-", "")[:31],
        "not-a-uuid-" + patron.id,
        "",
        "   ",
        "%",
        f"{patron.username}%",
        "' OR '1'='1",
        patron.username + "\x00",
        "x" * 10_000,
    ):
        assert await desk.find(query) == [], query


async def test_an_ended_pass_and_a_merged_account_still_lead_somewhere(
    desk: Helpdesk, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """An old card finds its account; a pass whose account was merged into another finds
    both: the survivor, which holds it now, first, and the record of the merged one."""
    holder = await add_patron(pool, hasher)
    old_card = "OLD-" + unique_pass_number()
    await Memberships(pool).add(holder.id, Membership("oba", old_card))
    await Memberships(pool).end("oba", old_card)
    [found] = await desk.find(old_card)
    assert found.account_id == holder.id and found.matched_by == ("pass_number",)

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
    found_both = await desk.find(absorbed.pass_number)
    assert {match.account_id: match.state for match in found_both} == {
        survivor.id: "active",
        absorbed.id: "merged",
    }
    assert found_both[-1].merged_into == survivor.id


async def test_matches_come_in_a_fixed_order_and_are_capped(
    desk: Helpdesk, pool: asyncpg.Pool
) -> None:
    """Many accounts on one address (a family, a school): by username, at most MAX_MATCHES.
    A name that is one account's username and another's pass number lists the pass first."""
    shared = f"family{unique_pass_number()}@example.org"
    accounts = Accounts(pool)
    made = [
        await accounts.add(
            pass_number=(number := unique_pass_number()),
            email=shared,
            username=f"z{MAX_MATCHES - i:03d}-{number}",
        )
        for i in range(MAX_MATCHES + 2)
    ]
    found = await desk.find(shared)
    assert len(found) == MAX_MATCHES
    assert [match.username for match in found] == sorted(a.username for a in made)[:MAX_MATCHES]
    assert await desk.find(shared.upper()) == found


async def test_a_pass_number_match_comes_before_a_username_match(
    desk: Helpdesk, pool: asyncpg.Pool
) -> None:
    """A username from before today's rules may equal another account's pass number: both
    are found, the pass's holder first."""
    accounts = Accounts(pool)
    number = unique_pass_number()
    holder = await accounts.add(pass_number=number, email=None, username="holder" + number)
    legacy = await accounts.add(pass_number=unique_pass_number(), email=None)
    await pool.execute(
        "UPDATE accounts SET username = $2, username_canonical = $2 WHERE id = $1::uuid",
        legacy.id,
        number,
    )
    found = await desk.find(number)
    assert [(match.account_id, match.matched_by) for match in found] == [
        (holder.id, ("pass_number",)),
        (legacy.id, ("username",)),
    ]


# --- What the helpdesk sees ---------------------------------------------------------------------


@pytest.mark.timeout(120)
async def test_the_overview_shows_the_patrons_whole_state(
    gw: Gateway,
    desk: Helpdesk,
    services: AuthServices,
    pool: asyncpg.Pool,
    patron: Account,
    mail_catcher: MailCatcher,
) -> None:
    assert patron.email is not None
    await Memberships(pool).add(
        patron.id, Membership("oba", "OBA-" + patron.pass_number, "youth", None)
    )
    await Memberships(pool).add(patron.id, Membership("obs", "RL-" + patron.pass_number))
    await Memberships(pool).end("obs", "RL-" + patron.pass_number)
    # Logged in through the gateway, and signed in at a connected library in that session.
    assert (await login(gw, patron.username)).status == 303
    await signed_in_at(gw, "online-library")
    # Two sign-ins on record, as the login writes them.
    for action, remote in (("login_failed", "203.0.113.5"), ("login_succeeded", "203.0.113.6")):
        await services.audit.record(
            Event(
                action,
                Actor("patron", patron.id, patron.username),
                Origin(remote, FIREFOX, "req-login"),
                account_id=patron.id,
            )
        )
    await block(services, patron)
    # A reset link (mailed and sent), and a mail that cannot be delivered.
    await desk.send_reset(patron.id, actor=STAFF, origin=AT_THE_DESK, reason="called in")
    bounced = f"gone{patron.pass_number}@{BOUNCING}"
    await services.outbox.send(
        services.composer.compose(
            "username_changed", "nl", bounced, username="x", old_username="y"
        ),
        account_id=patron.id,
    )
    await mail_for(mail_catcher, patron.email, "reset")
    await mail_settled(gw, pool, patron.email)
    [failed_row] = await mail_settled(gw, pool, bounced)
    assert failed_row["attempts"] >= 1

    seen = await desk.overview(patron.id, actor=STAFF, origin=AT_THE_DESK)

    assert seen is not None
    assert (seen.account_id, seen.username, seen.email, seen.pass_number, seen.state) == (
        patron.id,
        patron.username,
        patron.email,
        patron.pass_number,
        "active",
    )
    assert seen.merged_into is None
    assert [(m.institution, m.pass_number, m.type) for m in seen.memberships] == [
        ("default", patron.pass_number, None),
        ("oba", "OBA-" + patron.pass_number, "youth"),
    ]
    assert [(p.institution, p.pass_number) for p in seen.ended_passes] == [
        ("obs", "RL-" + patron.pass_number)
    ]
    assert seen.block is not None
    assert seen.block.blocked and seen.block.failures == 5
    assert seen.block.blocked_until is not None
    assert seen.block.blocked_until > seen.block.last_failure_at
    mine = [s for s in seen.sign_ins if s.remote in ("203.0.113.5", "203.0.113.6")]
    assert [(s.succeeded, s.remote) for s in mine] == [
        (True, "203.0.113.6"),
        (False, "203.0.113.5"),
    ]
    assert mine[0].browser == ("Firefox 125", "Windows")
    [session] = seen.sessions
    assert [(lib.client_id, lib.name) for lib in session.libraries] == [
        ("online-library", "De Online Bibliotheek")
    ]
    assert session.last_seen_at >= session.started_at
    mails = {mail.recipient: mail for mail in seen.mails}
    sent, failed = mails[patron.email], mails[bounced]
    assert (sent.kind, sent.state, sent.last_error) == ("reset", "sent", None)
    assert sent.sent_at is not None and sent.next_attempt_at is None
    assert (failed.kind, failed.state) == ("username_changed", "retrying")
    assert failed.attempts >= 1 and failed.last_error is not None
    assert "550" in failed.last_error and failed.sent_at is None
    [link] = seen.links
    assert link.purpose == "reset"
    assert timedelta(minutes=29) < link.expires_at - link.created_at <= timedelta(minutes=30)


async def test_looking_a_patron_up_is_recorded_once_and_a_stranger_is_no_one(
    desk: Helpdesk, pool: asyncpg.Pool, patron: Account
) -> None:
    assert await desk.overview(patron.id, actor=STAFF, origin=AT_THE_DESK) is not None
    [row] = await staff_rows(pool, patron.id)
    assert row["action"] == "helpdesk_viewed" and row["reason"] is None
    assert row["actor_id"] == STAFF.id and row["remote"] == AT_THE_DESK.remote

    before = await pool.fetchval("SELECT count(*) FROM audit_events")
    for nobody in (str(uuid.uuid4()), "not-an-id", "", patron.id + "0", "x" * 5000):
        assert await desk.overview(nobody, actor=STAFF, origin=AT_THE_DESK) is None
    with pytest.raises(NoSuchPatron):
        await desk.viewed("'; DROP TABLE audit_events; --", actor=STAFF, origin=AT_THE_DESK)
    assert await pool.fetchval("SELECT count(*) FROM audit_events") == before


async def test_only_staff_look_patrons_up_or_act(
    desk: Helpdesk, pool: asyncpg.Pool, patron: Account
) -> None:
    for actor in (
        Actor("patron", patron.id, patron.username),
        Actor("system"),
        Actor("operator", "root"),
        Actor("staff"),  # no id: nobody to hold to account
    ):
        with pytest.raises(NotStaff):
            await desk.overview(patron.id, actor=actor, origin=AT_THE_DESK)
        with pytest.raises(NotStaff):
            await desk.disable(patron.id, actor=actor, origin=AT_THE_DESK, reason="because")
    assert await staff_rows(pool, patron.id) == []
    assert (await state_of(pool, patron.id))["disabled"] is False


@pytest.mark.timeout(120)
async def test_nothing_shown_carries_a_token_a_password_hash_or_a_mail_body(
    gw: Gateway,
    desk: Helpdesk,
    services: AuthServices,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
    mail_catcher: MailCatcher,
) -> None:
    """Attack: every secret the patron's rows hold is made, and looked for in the overview's
    repr and its JSON: the reset token of a sent mail and of one still in the outbox (whose
    body is kept until sent), their hashes, the password hash, the session's cookie and its
    handle, the pending mail's body."""
    patron = await add_patron(pool, hasher)
    assert patron.email is not None and patron.password_hash is not None
    assert (await login(gw, patron.username)).status == 303
    cookie = jar_cookie(gw)
    assert cookie is not None
    await desk.send_reset(patron.id, actor=STAFF, origin=AT_THE_DESK, reason="asked by phone")
    sent_token = token_of(link_in(await mail_for(mail_catcher, patron.email, "reset")))
    await desk.correct_email(
        patron.id,
        f"typo{patron.pass_number}@{BOUNCING}",
        actor=STAFF,
        origin=AT_THE_DESK,
        reason="patron gave a new address",
    )
    bounced = f"typo{patron.pass_number}@{BOUNCING}"
    await desk.send_reset(patron.id, actor=STAFF, origin=AT_THE_DESK, reason="asked again")
    rows = await mail_settled(gw, pool, bounced)
    kept_body = next(row["body_text"] for row in rows if "token=" in row["body_text"])
    kept_token = token_of(link_in_text(kept_body))
    handles = [
        row["handle"]
        for row in await pool.fetch(
            "SELECT encode(sid_hash, 'hex') AS handle FROM sessions WHERE account_id = $1::uuid",
            patron.id,
        )
    ]

    seen = await desk.overview(patron.id, actor=STAFF, origin=AT_THE_DESK)

    assert seen is not None and seen.mails and seen.sessions
    shown = repr(seen) + orjson.dumps(seen.as_json()).decode() + str(seen)
    secrets_held = [
        sent_token,
        kept_token,
        hashlib.sha256(sent_token.encode()).hexdigest(),
        hashlib.sha256(kept_token.encode()).hexdigest(),
        patron.password_hash,
        patron.password_hash.rsplit("$", 1)[-1],
        cookie,
        *handles,
        kept_body,
        *(line for line in kept_body.splitlines() if "token=" in line),
    ]
    for secret in secrets_held:
        assert secret and secret not in shown
    assert "token" not in shown.lower()
    for subject_or_body in (row["subject"] for row in rows):
        assert subject_or_body not in shown


def link_in_text(text: str) -> str:
    [link] = [word for word in text.split() if word.startswith("http")]
    return link


async def test_the_overview_serialises_to_plain_json(
    desk: Helpdesk, services: AuthServices, patron: Account
) -> None:
    await block(services, patron)
    seen = await desk.overview(patron.id, actor=STAFF, origin=AT_THE_DESK)
    assert seen is not None
    data = orjson.loads(orjson.dumps(seen.as_json()))
    assert data["account_id"] == patron.id and data["state"] == "active"
    assert data["block"]["failures"] == 5
    assert datetime.fromisoformat(data["block"]["blocked_until"]) > datetime.now(UTC)
    assert data["memberships"][0]["pass_number"] == patron.pass_number
    assert set(data) == {field.name for field in dataclasses.fields(PatronOverview)}


# --- Acting: each action, its mail, its row ----------------------------------------------------


async def test_a_reset_sent_by_the_helpdesk_is_the_mail_of_forgot_password_and_works(
    gw: Gateway, desk: Helpdesk, pool: asyncpg.Pool, patron: Account, mail_catcher: MailCatcher
) -> None:
    assert patron.email is not None
    assert (await ask_reset(gw, patron.username)).status == 200
    await settle(gw)
    asked = await mail_for(mail_catcher, patron.email, "reset")

    to = await desk.send_reset(
        patron.id, actor=STAFF, origin=AT_THE_DESK, reason="locked out, called"
    )

    assert to == patron.email
    await settle(gw)
    sent = await mail_catcher.wait_for(
        lambda m: m["To"] == patron.email and m is not asked and m["Subject"] == asked["Subject"]
    )
    link = link_in(sent)
    assert link != link_in(asked)
    assert plain_text(sent).replace(link, "LINK") == plain_text(asked).replace(
        link_in(asked), "LINK"
    )
    page = await gw.get(followed(link))
    assert page.status == 200 and patron.username in await page.text()
    details = the_row(
        await staff_rows(pool, patron.id), "helpdesk_reset_sent", "locked out, called"
    )
    assert details == {"to": patron.email}


async def test_a_reset_is_not_sent_to_a_disabled_account_or_one_without_an_address(
    gw: Gateway, desk: Helpdesk, pool: asyncpg.Pool, patron: Account
) -> None:
    await Accounts(pool).set_disabled(patron.id, True)
    before = await state_of(pool, patron.id)
    with pytest.raises(NotApplicable) as refused:
        await desk.send_reset(patron.id, actor=STAFF, origin=AT_THE_DESK, reason="please")
    assert refused.value.code == "disabled"

    no_address = await Accounts(pool).add(pass_number=unique_pass_number(), email=None)
    with pytest.raises(NotApplicable) as refused:
        await desk.send_reset(no_address.id, actor=STAFF, origin=AT_THE_DESK, reason="please")
    assert refused.value.code == "no_email"
    assert await state_of(pool, patron.id) == before
    assert await staff_rows(pool, patron.id) == await staff_rows(pool, no_address.id) == []


async def test_the_activation_mail_is_resent_to_a_member_who_has_not_activated(
    gw: Gateway, desk: Helpdesk, pool: asyncpg.Pool, mail_catcher: MailCatcher
) -> None:
    member = await new_member(gw)
    assert member.email is not None
    first = await mail_for(mail_catcher, member.email, "activate")

    await desk.resend_activation(
        member.id, actor=STAFF, origin=AT_THE_DESK, reason="first mail lost"
    )

    await settle(gw)
    again = await mail_catcher.wait_for(
        lambda m: m["To"] == member.email and m is not first and m["Subject"] == first["Subject"]
    )
    assert plain_text(again).replace(link_in(again), "") == plain_text(first).replace(
        link_in(first), ""
    )
    assert (await gw.get(followed(link_in(again)))).status == 200
    details = the_row(
        await staff_rows(pool, member.id), "helpdesk_activation_resent", "first mail lost"
    )
    assert details == {"to": member.email}
    kinds = [row["kind"] for row in await outbox_for(pool, member.email)]
    assert kinds == ["activate", "activate"]


async def test_no_activation_mail_for_an_account_that_is_active(
    gw: Gateway, desk: Helpdesk, pool: asyncpg.Pool, patron: Account
) -> None:
    before = await state_of(pool, patron.id)
    with pytest.raises(NotApplicable) as refused:
        await desk.resend_activation(patron.id, actor=STAFF, origin=AT_THE_DESK, reason="asked")
    assert refused.value.code == "activated"
    assert await state_of(pool, patron.id) == before
    assert await staff_rows(pool, patron.id) == []


async def test_lifting_the_block_lets_the_patron_log_in_at_once(
    gw: Gateway, desk: Helpdesk, services: AuthServices, pool: asyncpg.Pool, patron: Account
) -> None:
    await block(services, patron)
    status, retry_after = await attempt(gw, patron.username, PASSWORD)
    assert status == 429 and retry_after is not None

    assert await desk.lift_block(
        patron.id, actor=STAFF, origin=AT_THE_DESK, reason="patron on the phone"
    )

    assert await can_log_in(gw, patron.username)
    details = the_row(
        await staff_rows(pool, patron.id), "helpdesk_block_lifted", "patron on the phone"
    )
    assert details == {"failures": 5, "blocked": True}
    # The address the failures came from is still counted: it is shared by a reading room.
    assert await pool.fetchval(
        "SELECT failures FROM login_throttle WHERE key = 'addr:198.51.100.9'"
    )
    seen = await desk.overview(patron.id, actor=STAFF, origin=AT_THE_DESK)
    assert seen is not None and seen.block is None


@pytest.mark.timeout(120)
async def test_ending_the_sessions_logs_the_patron_out_everywhere_and_tells_the_libraries(
    gw: Gateway,
    desk: Helpdesk,
    pool: asyncpg.Pool,
    patron: Account,
    receiver: Receiver,
) -> None:
    cookies = []
    for _ in range(2):
        gw.session.cookie_jar.clear()
        assert (await login(gw, patron.username)).status == 303
        await signed_in_at(gw, "online-library")
        cookies.append(jar_cookie(gw))
    for cookie in cookies:
        assert await account_on(gw, cookie) == patron.id

    ended = await desk.end_sessions(patron.id, actor=STAFF, origin=AT_THE_DESK, reason="lost phone")

    assert ended == 2
    for cookie in cookies:
        assert await account_on(gw, cookie) is None
    arrivals = await receiver.wait_for(2)
    assert {arrival.client_id for arrival in arrivals} == {"online-library"}
    assert {receiver.claims(a)["sub"] for a in arrivals} == {patron.id}
    assert the_row(await staff_rows(pool, patron.id), "helpdesk_sessions_ended", "lost phone") == {
        "sessions": 2
    }
    assert await can_log_in(gw, patron.username)  # the account itself is untouched


@pytest.mark.timeout(120)
async def test_disabling_ends_the_sessions_and_links_and_enabling_lets_the_patron_back(
    gw: Gateway, desk: Helpdesk, pool: asyncpg.Pool, patron: Account, mail_catcher: MailCatcher
) -> None:
    assert patron.email is not None
    assert (await login(gw, patron.username)).status == 303
    cookie = jar_cookie(gw)
    assert await account_on(gw, cookie) == patron.id
    await desk.send_reset(patron.id, actor=STAFF, origin=AT_THE_DESK, reason="asked")
    link = link_in(await mail_for(mail_catcher, patron.email, "reset"))

    assert await desk.disable(patron.id, actor=STAFF, origin=AT_THE_DESK, reason="stolen pass") == 1

    assert await account_on(gw, cookie) is None
    assert not await can_log_in(gw, patron.username)
    assert (await gw.get(followed(link))).status == 410
    with pytest.raises(NotApplicable) as refused:
        await desk.disable(patron.id, actor=STAFF, origin=AT_THE_DESK, reason="again")
    assert refused.value.code == "disabled"
    seen = await desk.overview(patron.id, actor=STAFF, origin=AT_THE_DESK)
    assert (
        seen is not None and seen.state == "disabled" and seen.sessions == () and seen.links == ()
    )

    await desk.enable(patron.id, actor=STAFF, origin=AT_THE_DESK, reason="pass found")

    assert await can_log_in(gw, patron.username)
    assert (await gw.get(followed(link))).status == 410  # a link from before stays dead
    with pytest.raises(NotApplicable) as refused:
        await desk.enable(patron.id, actor=STAFF, origin=AT_THE_DESK, reason="again")
    assert refused.value.code == "enabled"
    actions = [
        (row["action"], row["reason"], orjson.loads(row["details"]))
        for row in await staff_rows(pool, patron.id)
        if row["action"] != "helpdesk_viewed"
    ]
    assert actions == [
        ("helpdesk_reset_sent", "asked", {"to": patron.email}),
        ("helpdesk_disabled", "stolen pass", {"sessions": 1}),
        ("helpdesk_enabled", "pass found", {}),
    ]


async def test_two_staff_disabling_at_once_disable_once(
    desk: Helpdesk, pool: asyncpg.Pool, patron: Account
) -> None:
    """Attack on the row lock: both see an enabled account only if they do not wait for
    each other; exactly one disables it, and the trail has exactly one row."""
    outcomes = await asyncio.gather(
        *(
            desk.disable(patron.id, actor=STAFF, origin=AT_THE_DESK, reason=f"desk {n}")
            for n in range(4)
        ),
        return_exceptions=True,
    )
    assert sum(isinstance(o, NotApplicable) for o in outcomes) == 3
    assert sum(o == 0 for o in outcomes if not isinstance(o, BaseException)) == 1
    assert [row["action"] for row in await staff_rows(pool, patron.id)] == ["helpdesk_disabled"]


@pytest.mark.timeout(120)
async def test_correcting_the_address_tells_both_and_the_next_reset_goes_to_the_new_one(
    gw: Gateway, desk: Helpdesk, pool: asyncpg.Pool, patron: Account, mail_catcher: MailCatcher
) -> None:
    old = patron.email
    assert old is not None
    await desk.send_reset(patron.id, actor=STAFF, origin=AT_THE_DESK, reason="asked")
    old_link = link_in(await mail_for(mail_catcher, old, "reset"))
    new = f"New.Address{patron.pass_number}@Example.org"

    await desk.correct_email(
        patron.id, f"  {new} ", actor=STAFF, origin=AT_THE_DESK, reason="typo at sign-up"
    )

    await settle(gw)
    to_old = plain_text(await mail_for(mail_catcher, old, "email_changed"))
    to_new = plain_text(await mail_for(mail_catcher, new, "email_changed"))
    assert patron.username in to_old and patron.username in to_new
    assert new not in to_old  # whoever reads the old mailbox does not learn the new address
    assert to_old != to_new
    assert (await gw.get(followed(old_link))).status == 410  # it went to the old address
    assert (await Accounts(pool).by_id(patron.id)) == dataclasses.replace(patron, email=new)

    await desk.send_reset(patron.id, actor=STAFF, origin=AT_THE_DESK, reason="asked again")
    new_link = link_in(await mail_for(mail_catcher, new, "reset"))
    assert (await gw.get(followed(new_link))).status == 200
    gw.session.cookie_jar.clear()
    assert (await ask_reset(gw, new.lower())).status == 200  # "forgot password" knows it too
    await settle(gw)
    assert {row["kind"] for row in await outbox_for(pool, old)} == {"reset", "email_changed"}
    assert [row["kind"] for row in await outbox_for(pool, new)] == [
        "email_changed",
        "reset",
        "reset",
    ]
    rows = [row for row in await staff_rows(pool, patron.id) if row["action"] != "helpdesk_viewed"]
    corrected = the_row(rows[1:2], "helpdesk_email_corrected", "typo at sign-up")
    assert corrected == {"old": old, "new": new}


async def test_an_address_is_refused_when_it_is_no_address_or_the_same(
    desk: Helpdesk, pool: asyncpg.Pool, patron: Account
) -> None:
    assert patron.email is not None
    before = await state_of(pool, patron.id)
    for address in ("nobody", "a@b@example.org", "jan@example.org\nBcc: x@example.org", ""):
        with pytest.raises(EmailRejected):
            await desk.correct_email(
                patron.id, address, actor=STAFF, origin=AT_THE_DESK, reason="asked"
            )
    with pytest.raises(NotApplicable) as refused:
        await desk.correct_email(
            patron.id, patron.email, actor=STAFF, origin=AT_THE_DESK, reason="asked"
        )
    assert refused.value.code == "unchanged"
    assert await state_of(pool, patron.id) == before
    assert await staff_rows(pool, patron.id) == []


async def test_a_family_address_another_patron_has_is_accepted(
    desk: Helpdesk, pool: asyncpg.Pool, hasher: PasswordHasher, patron: Account
) -> None:
    """A family shares one address (forgot-username mails each of its accounts)."""
    other = await add_patron(pool, hasher)
    assert other.email is not None
    await desk.correct_email(
        patron.id, other.email.upper(), actor=STAFF, origin=AT_THE_DESK, reason="family address"
    )
    both = await pool.fetch(
        "SELECT id::text FROM accounts WHERE email_canonical = $1 ORDER BY id",
        other.email.lower(),
    )
    assert sorted(row["id"] for row in both) == sorted([patron.id, other.id])


# --- Refusals that change nothing ------------------------------------------------------------


def every_action(
    desk: Helpdesk, account_id: str, reason: Any
) -> dict[str, Callable[[], Awaitable[object]]]:
    """Each action, by name, ready to be called with `reason`."""
    given = {"actor": STAFF, "origin": AT_THE_DESK, "reason": reason}
    return {
        "send_reset": functools.partial(desk.send_reset, account_id, **given),
        "resend_activation": functools.partial(desk.resend_activation, account_id, **given),
        "lift_block": functools.partial(desk.lift_block, account_id, **given),
        "end_sessions": functools.partial(desk.end_sessions, account_id, **given),
        "disable": functools.partial(desk.disable, account_id, **given),
        "enable": functools.partial(desk.enable, account_id, **given),
        "correct_email": functools.partial(
            desk.correct_email, account_id, "fixed@example.org", **given
        ),
    }


@pytest.mark.parametrize("reason", ["", "   ", "\n", None, "no\nnewlines", "y" * 201])
async def test_an_action_without_a_proper_reason_changes_nothing(
    gw: Gateway,
    desk: Helpdesk,
    services: AuthServices,
    pool: asyncpg.Pool,
    patron: Account,
    reason: Any,
) -> None:
    assert (await login(gw, patron.username)).status == 303
    cookie = jar_cookie(gw)
    await block(services, patron)
    before = await state_of(pool, patron.id)
    for name, action in every_action(desk, patron.id, reason).items():
        with pytest.raises(ReasonRequired):
            await action()
        assert await state_of(pool, patron.id) == before, name
    assert await account_on(gw, cookie) == patron.id
    assert await staff_rows(pool, patron.id) == []


async def test_no_action_reaches_an_account_merged_away_or_one_that_does_not_exist(
    gw: Gateway, desk: Helpdesk, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """Attack: enabling the record of a merged account would bring back a second login for
    passes that now belong to the survivor."""
    survivor, absorbed = await add_patron(pool, hasher), await add_patron(pool, hasher)
    async with Accounts(pool).transaction() as conn:
        assert isinstance(
            await merges.merge(
                conn,
                survivor.id,
                absorbed.id,
                "default",
                absorbed.pass_number,
                proved=absorbed.password_hash,
            ),
            merges.Merged,
        )
    before = await state_of(pool, absorbed.id)
    for name, action in every_action(desk, absorbed.id, "asked").items():
        with pytest.raises(NotApplicable) as refused:
            await action()
        assert refused.value.code == "merged", name
    assert await state_of(pool, absorbed.id) == before
    assert await staff_rows(pool, absorbed.id) == []
    for nobody in (str(uuid.uuid4()), "no-such-id"):
        for action in every_action(desk, nobody, "asked").values():
            with pytest.raises(NoSuchPatron):
                await action()


# --- Mail about a patron is theirs in the outbox --------------------------------------------------


async def test_mail_the_patron_asked_for_is_listed_with_its_kind(
    gw: Gateway, desk: Helpdesk, pool: asyncpg.Pool, patron: Account, mail_catcher: MailCatcher
) -> None:
    assert patron.email is not None
    assert (await ask_reset(gw, patron.email)).status == 200
    await settle(gw)
    await mail_for(mail_catcher, patron.email, "reset")
    seen = await desk.overview(patron.id, actor=STAFF, origin=AT_THE_DESK)
    assert seen is not None
    assert [(mail.kind, mail.recipient) for mail in seen.mails] == [("reset", patron.email)]
    assert [link.purpose for link in seen.links] == ["reset"]
