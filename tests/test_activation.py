"""New members: the operator's invitation (a real `library-gateway accounts invite` process
mailing a real SMTP server) and the activation page behind the link it sends."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import asyncpg
import pytest
from aiohttp import ClientResponse
from cryptography.fernet import MultiFernet
from yarl import URL

from auth.credentials.passwords import PasswordHasher
from auth.pages.activation import Invitations
from auth.services import SERVICES
from auth.store.accounts import Account, Accounts
from gateway.demo.mailcatcher import MailCatcher
from tests.helpers import (
    PASSWORD,
    Gateway,
    add_patron,
    can_log_in,
    csrf_in,
    followed,
    jar_cookie,
    link_in,
    mail_for,
    open_cookie,
    outbox_for,
    page_text,
    post_form,
    settle,
    token_of,
    unique_pass_number,
)

PUBLIC_URL = "https://login.library.example"


@pytest.fixture
def gw(mailing_gw: Gateway) -> Gateway:
    return mailing_gw


text_of = page_text


async def cli(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    """Run `library-gateway` as an operator would, without blocking the test's event loop."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        *args,
        env={**os.environ, **env},
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(120):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def invite_args(pass_number: str, email: str, tmp_path: Path) -> tuple[str, ...]:
    return (
        "accounts",
        "invite",
        "--pass-number",
        pass_number,
        "--email",
        email,
        "--data-dir",
        str(tmp_path / "var"),
    )


async def invite(gw: Gateway, catcher: MailCatcher) -> tuple[str, str]:
    """Invite a new member through the gateway's own services: (pass number, mailed link)."""
    number = unique_pass_number()
    email = f"nieuw{number}@example.org"
    services = gw.app[SERVICES]
    await Invitations(
        services.accounts,
        services.links,
        services.composer,
        services.public_url,
        services.activation_ttl,
    ).send(number, email)
    await settle(gw)
    return number, link_in(await mail_for(catcher, email, "activate"))


async def activate(gw: Gateway, link: str, username: str, password: str) -> ClientResponse:
    """Open the link, then send its form."""
    page = await gw.get(followed(link))
    assert page.status == 200
    return await post_form(
        gw,
        "/auth/activate",
        {
            "csrf_token": csrf_in(await page.text()),
            "token": token_of(link),
            "username": username,
            "password": password,
        },
    )


def proposed_username(page: str) -> str | None:
    found = re.search(r'<input id="username" name="username" type="text" value="([^"]*)"', page)
    return found.group(1) if found else None


async def account(pool: asyncpg.Pool, pass_number: str) -> Account:
    found = await Accounts(pool).by_login_name(pass_number)
    assert found is not None and found.pass_number == pass_number
    return found


# --- The invitation ----------------------------------------------------------------------------


@pytest.mark.slow
async def test_an_invitation_from_the_command_line_lets_the_member_choose_name_and_password(
    gw: Gateway,
    database_url: str,
    mail_catcher: MailCatcher,
    tmp_path: Path,
    cookie_keys: MultiFernet,
) -> None:
    """Defends against an invitation that never reaches the member, carries a link to the
    wrong host, or leaves them without both ways to log in."""
    number = unique_pass_number()
    email = f"nieuw{number}@example.org"
    status, out, err = await cli(
        *invite_args(number, email, tmp_path),
        env={
            "GATEWAY_DATABASE_URL": database_url,
            "GATEWAY_SMTP_URL": mail_catcher.url,
            "GATEWAY_PUBLIC_URL": PUBLIC_URL,
        },
        cwd=tmp_path,
    )
    assert status == 0, err
    # "sent" or "queued": the gateway's own worker, woken by the same commit, may win the mail.
    assert "invitation for account" in out
    link = link_in(await mail_for(mail_catcher, email, "activate"))
    assert link.startswith(f"{PUBLIC_URL}/auth/activate?token=")

    page = await gw.get(followed(link))
    assert page.status == 200
    assert proposed_username(await page.text()) == number
    chosen = f"Nieuwe.Lezer.{number}"
    resp = await post_form(
        gw,
        "/auth/activate",
        {
            "csrf_token": csrf_in(await page.text()),
            "token": token_of(link),
            "username": chosen,
            "password": PASSWORD,
        },
    )
    assert resp.status == 303
    target = URL(resp.headers["Location"])
    assert target.path == "/auth/login" and target.query.get("notice") == "activated"
    # Activation sends the member to the login page; it does not log them in by itself.
    cookie = jar_cookie(gw)
    assert cookie is None or "sid" not in open_cookie(cookie_keys, cookie)["session"]
    assert await can_log_in(gw, chosen)
    assert await can_log_in(gw, number)


@pytest.mark.slow
async def test_inviting_an_active_pass_number_fails_and_changes_nothing(
    database_url: str,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
    tmp_path: Path,
    mail_catcher: MailCatcher,
) -> None:
    """Defends against an invitation resetting an existing member's account (its password,
    or the address its mail goes to)."""
    patron = await add_patron(pool, hasher)
    other_address = f"kaper{unique_pass_number()}@example.org"
    status, _, err = await cli(
        *invite_args(patron.pass_number, other_address, tmp_path),
        env={"GATEWAY_DATABASE_URL": database_url, "GATEWAY_SMTP_URL": mail_catcher.url},
        cwd=tmp_path,
    )
    assert status == 1
    assert patron.pass_number in err and "active" in err
    assert await outbox_for(pool, other_address) == []
    assert await account(pool, patron.pass_number) == patron


@pytest.mark.usefixtures("fresh_recovery_mails")
async def test_links_mailed_to_an_address_an_invitation_corrected_stop_working(
    gw: Gateway, pool: asyncpg.Pool, mail_catcher: MailCatcher
) -> None:
    """Defends against whoever received the invitation at a mistyped address (or asked for a
    reset link there) activating the member's account after the library invited the member
    again at the right address: the new member would find their pass taken over."""
    number = unique_pass_number()
    wrong, right = f"typo{number}@example.org", f"nieuw{number}@example.org"
    services = gw.app[SERVICES]
    invitations = Invitations(
        services.accounts,
        services.links,
        services.composer,
        services.public_url,
        services.activation_ttl,
    )
    await invitations.send(number, wrong)
    await settle(gw)
    stale_activation = link_in(await mail_for(mail_catcher, wrong, "activate"))
    page = await gw.get("/auth/forgot-password")
    asked = await post_form(
        gw,
        "/auth/forgot-password",
        {"csrf_token": csrf_in(await page.text()), "identifier": number},
    )
    assert asked.status == 200
    await settle(gw)
    stale_reset = link_in(await mail_for(mail_catcher, wrong, "reset"))

    await invitations.send(number, right)
    await settle(gw)
    fresh = link_in(await mail_for(mail_catcher, right, "activate"))

    for stale, path, field in (
        (stale_activation, "/auth/activate", "password"),
        (stale_reset, "/auth/reset-password", "new_password"),
    ):
        shown = await gw.get(followed(stale))
        assert shown.status == 410
        page = await gw.get("/auth/login")
        taken = await post_form(
            gw,
            path,
            {
                "csrf_token": csrf_in(await page.text()),
                "token": token_of(stale),
                field: "the wrong recipient's password",
            },
        )
        assert taken.status == 410
    assert (await account(pool, number)).password_hash is None
    assert (await activate(gw, fresh, "", PASSWORD)).status == 303
    assert await can_log_in(gw, number)
    assert not await can_log_in(gw, number, "the wrong recipient's password")


# --- The activation page -----------------------------------------------------------------------


async def test_activating_with_an_empty_username_keeps_the_pass_number(
    gw: Gateway, pool: asyncpg.Pool, mail_catcher: MailCatcher
) -> None:
    """Defends against a member who takes the proposal ending up with no working username."""
    number, link = await invite(gw, mail_catcher)
    page = await gw.get(followed(link))
    assert proposed_username(await page.text()) == number
    assert (await activate(gw, link, "", PASSWORD)).status == 303
    assert (await account(pool, number)).username == number
    assert await can_log_in(gw, number)


@pytest.mark.parametrize(
    ("case", "status", "error"),
    [
        ("too_short", 422, "error.username.length"),
        ("zero_width_space", 422, "error.username.characters"),
        ("markup", 422, "error.username.characters"),
        ("quote", 422, "error.username.characters"),
        ("somebody_elses_pass_number", 422, "error.username.pass_number"),
        ("taken", 409, "error.username_taken"),
        ("weak_password", 422, "error.password.common"),
    ],
)
async def test_a_refused_activation_shows_the_reason_and_leaves_the_link_working(
    gw: Gateway,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
    mail_catcher: MailCatcher,
    case: str,
    status: int,
    error: str,
) -> None:
    """Defends against a typo using up the link (and the member having to ask the library
    again), and against activation slipping past the username and password rules."""
    other = await add_patron(pool, hasher)
    number, link = await invite(gw, mail_catcher)
    username, password = {
        "too_short": ("ab", PASSWORD),
        "zero_width_space": ("nieuw\u200blid", PASSWORD),
        "markup": ("<b>nieuw</b>", PASSWORD),
        "quote": ('nieuw"lid', PASSWORD),
        "somebody_elses_pass_number": (other.pass_number, PASSWORD),
        "taken": (other.username.upper(), PASSWORD),
        "weak_password": ("", "password1"),
    }[case]
    refused = await activate(gw, link, username, password)
    assert refused.status == status
    assert text_of(error) in await refused.text()
    refused_account = await account(pool, number)
    assert refused_account.password_hash is None
    assert refused_account.username == number
    assert await can_log_in(gw, other.username)

    assert (await activate(gw, link, f"Lid.{number}", PASSWORD)).status == 303
    assert await can_log_in(gw, f"Lid.{number}")


async def test_a_disabled_account_cannot_be_activated_even_with_a_new_link(
    gw: Gateway, pool: asyncpg.Pool, mail_catcher: MailCatcher
) -> None:
    """Disabling voids the links mailed before; an invitation sent again afterwards mails a new
    one, which must not let anybody choose a password for the disabled account either."""
    number, _ = await invite(gw, mail_catcher)
    await Accounts(pool).set_disabled((await account(pool, number)).id, True)
    services = gw.app[SERVICES]
    email = f"opnieuw{number}@example.org"
    await Invitations(
        services.accounts,
        services.links,
        services.composer,
        services.public_url,
        services.activation_ttl,
    ).send(number, email)
    await settle(gw)
    link = link_in(await mail_for(mail_catcher, email, "activate"))
    assert (await gw.get(followed(link))).status == 410
    page = await gw.get("/auth/login")
    refused = await post_form(
        gw,
        "/auth/activate",
        {
            "csrf_token": csrf_in(await page.text()),
            "token": token_of(link),
            "username": "",
            "password": PASSWORD,
        },
    )
    assert refused.status == 410
    assert (await account(pool, number)).password_hash is None


async def test_an_activation_link_works_once(
    gw: Gateway, pool: asyncpg.Pool, mail_catcher: MailCatcher
) -> None:
    """Defends against somebody who finds the link later taking over the activated account."""
    number, link = await invite(gw, mail_catcher)
    assert (await activate(gw, link, "", PASSWORD)).status == 303
    shown = await gw.get(followed(link))
    assert shown.status == 410
    assert text_of("activate.invalid.title") in await shown.text()
    page = await gw.get("/auth/login")
    replay = await post_form(
        gw,
        "/auth/activate",
        {
            "csrf_token": csrf_in(await page.text()),
            "token": token_of(link),
            "username": "Overnemer",
            "password": "a password of my own",
        },
    )
    assert replay.status == 410
    assert (await account(pool, number)).username == number
    assert await can_log_in(gw, number)
    assert not await can_log_in(gw, number, "a password of my own")
