"""Mail: every template composes in every language; the outbox survives an SMTP outage and a
mail that cannot be built, forgets bodies once sent, and never lets two senders send one mail
twice; without SMTP each mail becomes a file."""

from __future__ import annotations

import asyncio
import email
import io
import socket
from email.message import EmailMessage
from email.policy import default as default_policy
from importlib import resources
from pathlib import Path

import asyncpg
import markupsafe
import pytest
from aiohttp.test_utils import TestServer

from auth.credentials.passwords import PasswordHasher
from auth.mail import Composer, Mail, Outbox, OutboxWorker, SmtpTransport
from auth.pages import i18n
from auth.services import template_environment
from gateway.demo.mailcatcher import MailCatcher
from tests.helpers import (
    PASSWORD,
    Gateway,
    MakeGateway,
    add_patron,
    form_token,
    link_in,
    login,
    mail_for,
    mail_subject,
    outbox_for,
    plain_text,
    post_form,
    routes_for,
    settle,
    unique_pass_number,
)

SENDER = "no-reply@login.library.example"
LINK = "https://login.library.example/auth/reset-password?token=Zm9vYmFy-_0123456789abcdef"
EVIL = "<script>alert(1)</script>"
# Every mail kind, with every value any template may ask for; the names are hostile.
CONTEXT = {
    "username": EVIL,
    "old_username": EVIL,
    "usernames": [EVIL, "tweede.naam"],
    "pass_number": "1234567890",
    "minutes": 30,
    "days": 7,
    "reset": True,
    "browser": EVIL,
    "when": "3 mei 2026 om 14:05",
    "absorbed_username": EVIL,
    "passes": "kb:12345678, obs:RL-55012",
    "to_new_address": True,
    "email": EVIL,
    "role": "helpdesk",
    "passkeys": True,
}
LINKED = {"activate", "reset", "new_signin", "staff_activate"}
SHOWS_A_NAME = {
    "reset",
    "password_changed",
    "username_changed",
    "forgot_username",
    "new_signin",
    "account_merged",
    "email_changed",
    "staff_activate",
}


def _templates() -> list[tuple[str, str]]:
    """(kind, language) of every mail template shipped, read from the package itself."""
    found = []
    for entry in resources.files("auth").joinpath("templates/mail").iterdir():
        if entry.name.endswith(".txt"):
            kind, lang = entry.name.removesuffix(".txt").split(".")
            found.append((kind, lang))
    return sorted(found)


TEMPLATES = _templates()


def closed_port() -> int:
    """A loopback port nobody listens on (bound, read, released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def ask_reset(gw: Gateway, identifier: str, **headers: str) -> int:
    csrf = await form_token(gw, "/auth/forgot-password")
    resp = await post_form(
        gw, "/auth/forgot-password", {"csrf_token": csrf, "identifier": identifier}, headers=headers
    )
    return resp.status


# --- Composing ---------------------------------------------------------------------------------


def test_every_kind_of_mail_exists_in_every_language() -> None:
    """Defends against a patron choosing a language in which some mail cannot be sent."""
    kinds = {kind for kind, _ in TEMPLATES}
    assert kinds == {
        "account_merged",
        "activate",
        "email_changed",
        "forgot_username",
        "new_signin",
        "password_changed",
        "reset",
        "staff_activate",
        "username_changed",
    }
    assert set(TEMPLATES) == {(kind, lang) for kind in kinds for lang in i18n.LANGUAGES}


@pytest.mark.parametrize("kind", ["activate", "staff_activate"])
@pytest.mark.parametrize(
    ("lang", "one", "many"), [("en", "1 day:", "7 days:"), ("nl", "1 dag:", "7 dagen:")]
)
def test_an_activation_link_of_one_day_says_one_day(
    kind: str, lang: str, one: str, many: str
) -> None:
    """An operator may make activation links live a day (GATEWAY_ACTIVATION_TOKEN_TTL): the
    mail then says "1 day", not "1 days"."""
    composer = Composer(template_environment(), "De Bibliotheek")
    for days, said in ((1, one), (7, many)):
        mail = composer.compose(
            kind, lang, "lezer@example.org", link=LINK, **{**CONTEXT, "days": days}
        )
        assert said in mail.text, days


@pytest.mark.parametrize(("kind", "lang"), TEMPLATES)
def test_every_template_composes_a_subject_a_text_and_an_html_that_agree(
    kind: str, lang: str
) -> None:
    """Defends against a mail without a subject, a link missing from one of its bodies, and
    a username that injects markup into the HTML body."""
    composer = Composer(template_environment(), "De Bibliotheek")
    link = LINK if kind in LINKED else None
    mail = composer.compose(kind, lang, "lezer@example.org", link=link, **CONTEXT)
    assert mail.recipient == "lezer@example.org"
    assert mail.subject and "\n" not in mail.subject
    assert mail.subject == mail_subject(kind, lang)
    assert mail.text.strip() and mail.html.strip()
    assert f'<html lang="{lang}">' in mail.html
    if link is not None:
        assert link in mail.text
        assert f'<a href="{link}">{link}</a>' in mail.html
    assert "<script>" not in mail.html
    if kind in SHOWS_A_NAME:
        # Plain text shows the name as typed; the HTML shows it, escaped.
        assert EVIL in mail.text
        assert str(markupsafe.escape(EVIL)) in mail.html


# --- Sending through SMTP, and an outage ------------------------------------------------------


async def test_a_mail_queued_during_an_smtp_outage_is_delivered_once_smtp_is_back(
    make_gateway: MakeGateway, backend: TestServer, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """Defends against losing a reset link, or failing the patron's request, while the mail
    server is down; and against a sent mail's link lingering in the database."""
    down = SmtpTransport(f"smtp://127.0.0.1:{closed_port()}")
    gw = await make_gateway(routes_for(backend.port), mail_transport=down)
    patron = await add_patron(pool, hasher)
    assert patron.email is not None
    assert await ask_reset(gw, patron.username) == 200
    await settle(gw)
    [row] = await outbox_for(pool, patron.email)
    assert row["attempts"] == 1 and row["sent_at"] is None
    assert row["last_error"]
    assert "/auth/reset-password?token=" in row["body_text"]
    queued_text = row["body_text"]
    await gw.close()  # that gateway (and its worker) stops; another instance takes over

    with MailCatcher(out=io.StringIO()) as catcher:
        worker = OutboxWorker(pool, SmtpTransport(catcher.url), SENDER)
        await pool.execute("UPDATE outbox SET next_attempt_at = now() WHERE id = $1", row["id"])
        assert await worker.send_due() >= 1
        mail = await mail_for(catcher, patron.email, "reset")
    assert mail["From"] == SENDER
    assert link_in(mail) in queued_text
    [sent] = await outbox_for(pool, patron.email)
    assert sent["sent_at"] is not None and sent["attempts"] == 2
    assert sent["last_error"] is None
    assert sent["body_text"] == "" and sent["body_html"] == ""
    assert sent["subject"] == mail["Subject"]


async def test_a_change_is_answered_normally_while_smtp_is_down(
    make_gateway: MakeGateway, backend: TestServer, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """Defends against an SMTP outage turning a patron's password change into an error."""
    gw = await make_gateway(
        routes_for(backend.port), mail_transport=SmtpTransport(f"smtp://127.0.0.1:{closed_port()}")
    )
    patron = await add_patron(pool, hasher)
    assert patron.email is not None
    assert (await login(gw, patron.username)).status == 303
    csrf = await form_token(gw, "/auth/account")
    resp = await post_form(
        gw,
        "/auth/account/password",
        {
            "csrf_token": csrf,
            "current_password": PASSWORD,
            "new_password": "a lantern in the stacks",
        },
    )
    assert resp.status == 303
    await settle(gw)
    [row] = await outbox_for(pool, patron.email)
    assert row["sent_at"] is None and row["attempts"] == 1 and row["last_error"]
    assert row["subject"] == mail_subject("password_changed")


async def test_the_mail_speaks_the_language_of_the_page_it_was_asked_from(
    make_gateway: MakeGateway,
    backend: TestServer,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
    mail_catcher: MailCatcher,
) -> None:
    """Defends against an English-speaking patron getting a mail they cannot read."""
    gw = await make_gateway(
        routes_for(backend.port), mail_transport=SmtpTransport(mail_catcher.url)
    )
    patron = await add_patron(pool, hasher)
    assert patron.email is not None
    assert await ask_reset(gw, patron.username, **{"Accept-Language": "en"}) == 200
    await settle(gw)
    mail = await mail_for(mail_catcher, patron.email, "reset", "en")
    assert "/auth/reset-password?token=" in plain_text(mail)
    html = mail.get_body(preferencelist=("html",))
    assert html is not None and '<html lang="en">' in str(html.get_content())


async def test_two_senders_sharing_one_outbox_send_each_mail_once(
    pool: asyncpg.Pool, mail_catcher: MailCatcher
) -> None:
    """Defends against duplicate mails when several gateway instances run their workers."""
    batch = f"gedeeld{unique_pass_number()}"
    recipients = [f"{batch}.{n}@example.org" for n in range(7)]
    outbox = Outbox(pool)
    for recipient in recipients:
        await outbox.send(Mail(recipient, f"Bericht {recipient}", "tekst\n", "<p>tekst</p>"))
    workers = [OutboxWorker(pool, SmtpTransport(mail_catcher.url), SENDER) for _ in range(2)]

    async def drain(worker: OutboxWorker) -> None:
        while await worker.send_due(batch=2):
            pass

    await asyncio.gather(*(drain(worker) for worker in workers))
    delivered = [m["To"] for m in mail_catcher.messages if m["To"].startswith(batch)]
    assert sorted(delivered) == sorted(recipients)
    assert sum(worker.sent_total for worker in workers) >= len(recipients)
    rows = await pool.fetch("SELECT sent_at FROM outbox WHERE recipient LIKE $1", batch + ".%")
    assert len(rows) == len(recipients) and all(row["sent_at"] for row in rows)


async def test_a_mail_that_cannot_be_built_does_not_hold_up_the_others(
    pool: asyncpg.Pool, mail_catcher: MailCatcher
) -> None:
    """Defends against one malformed address (a line break typed into `accounts invite
    --email`, say) stopping every mail queued after it, re-sending those before it, or
    smuggling in a header."""
    batch = f"gif{unique_pass_number()}"
    good = [f"{batch}.1@example.org", f"{batch}.3@example.org"]
    bad = f"{batch}.2@example.org\r\nBcc: spy@example.org"
    outbox = Outbox(pool)
    for recipient in (good[0], bad, good[1]):
        await outbox.send(Mail(recipient, "Bericht", "tekst\n", "<p>tekst</p>"))
    worker = OutboxWorker(pool, SmtpTransport(mail_catcher.url), SENDER)
    while await worker.send_due(batch=10):
        pass  # the bad mail is put off for later, so this ends
    delivered = [m for m in mail_catcher.messages if m["To"].startswith(batch)]
    assert sorted(m["To"] for m in delivered) == good
    assert not any("spy@" in m.as_string() for m in delivered)
    [row] = await outbox_for(pool, bad)
    assert row["sent_at"] is None and row["attempts"] == 1 and row["last_error"]


# --- Without SMTP -----------------------------------------------------------------------------


async def test_without_smtp_each_mail_is_written_to_the_data_dirs_outbox_folder(
    make_gateway: MakeGateway,
    backend: TestServer,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
    tmp_path: Path,
) -> None:
    """Defends against mail vanishing on a gateway that has no mail server configured."""
    gw = await make_gateway(routes_for(backend.port), data_dir=tmp_path)
    patron = await add_patron(pool, hasher)
    assert patron.email is not None
    assert await ask_reset(gw, patron.username) == 200
    await settle(gw)
    [row] = await outbox_for(pool, patron.email)
    assert row["sent_at"] is not None and row["body_text"] == ""

    files = sorted((tmp_path / "outbox").glob("*.eml"))
    mails = [email.message_from_bytes(f.read_bytes(), policy=default_policy) for f in files]
    [mail] = [m for m in mails if m["To"] == patron.email]
    assert isinstance(mail, EmailMessage)
    assert mail["Subject"] == mail_subject("reset")
    assert mail["Auto-Submitted"] == "auto-generated"
    link = link_in(mail)
    assert "/auth/reset-password?token=" in link
    html = mail.get_body(preferencelist=("html",))
    assert html is not None and link in str(html.get_content())
