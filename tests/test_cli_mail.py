"""A command that mails (`accounts invite`, `staff add`, `staff reset`) sends the mail it
queued itself and nothing else: the rest of the outbox is the running gateway's, to be sent
through the gateway's own mail settings. An operator's shell without GATEWAY_SMTP_URL (its
mail goes to files under DATA_DIR/outbox/) or with another mail server must never take a
patron's queued reset link there.

Real processes for the commands, a real PostgreSQL, real SMTP servers (the demo's catcher):
one for the gateway, one for the operator's shell.
"""

from __future__ import annotations

import asyncio
import email
import io
import re
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from auth.mail import Mail, Outbox, SmtpTransport
from gateway.demo.mailcatcher import MailCatcher
from tests.helpers import MakeGateway, cli, mail_subject, outbox_for, routes_for, unique_pass_number
from tests.staff_support import unique_email

pytestmark = pytest.mark.timeout(120)


async def queue_someone_elses_mail(pool: asyncpg.Pool) -> str:
    """A reset mail of another patron, due and unsent, as a gateway's request leaves it."""
    recipient = f"other{unique_pass_number()}@example.org"
    await Outbox(pool).send(
        Mail(recipient, "Reset your password", "Your link: https://x.example/r?t=1\n", "<p>x</p>")
    )
    return recipient


async def run_cli(database_url: str, data_dir: Path, *args: str, smtp_url: str = "") -> str:
    """`library-gateway ARGS… --data-dir DATA_DIR` from an operator's shell; its output."""
    done = await asyncio.to_thread(
        cli,
        *args,
        "--data-dir",
        str(data_dir),
        env={
            "GATEWAY_DATABASE_URL": database_url,
            "GATEWAY_SMTP_URL": smtp_url,
            "GATEWAY_PUBLIC_URL": "https://login.library.example.org",
        },
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def mail_files(data_dir: Path) -> list[EmailMessage]:
    folder = data_dir / "outbox"
    files = sorted(folder.glob("*.eml")) if folder.exists() else []
    return [email.message_from_bytes(f.read_bytes(), policy=default) for f in files]


async def delivered_by_the_gateway(
    make_gateway: MakeGateway, backend: TestServer, catcher: MailCatcher, recipient: str
) -> EmailMessage:
    """Start a gateway whose mail goes to `catcher`; the mail for `recipient` it delivers."""
    await make_gateway(routes_for(backend.port), mail_transport=SmtpTransport(catcher.url))
    return await catcher.wait_for(lambda m: m["To"] == recipient)


async def test_an_invitation_from_a_shell_without_smtp_leaves_other_patrons_mail_alone(
    database_url: str,
    pool: asyncpg.Pool,
    tmp_path: Path,
    make_gateway: MakeGateway,
    backend: TestServer,
    mail_catcher: MailCatcher,
) -> None:
    other = await queue_someone_elses_mail(pool)
    invitee = f"new{unique_pass_number()}@example.org"
    out = await run_cli(
        database_url,
        tmp_path,
        "accounts",
        "invite",
        "--pass-number",
        unique_pass_number(),
        "--email",
        invitee,
    )
    # The invitation went where this shell's settings send mail, and the command says so.
    assert [m["To"] for m in mail_files(tmp_path)] == [invitee]
    assert re.search(r"activation mail written to .*outbox", out), out
    # The other patron's mail is untouched, still waiting for the gateway.
    [row] = await outbox_for(pool, other)
    assert row["sent_at"] is None and row["attempts"] == 0
    # ... which sends it through its own mail server.
    mail = await delivered_by_the_gateway(make_gateway, backend, mail_catcher, other)
    assert mail["Subject"] == "Reset your password"
    assert [m["To"] for m in mail_files(tmp_path)] == [invitee]


@pytest.mark.parametrize("command", ["add", "reset"])
async def test_a_staff_command_sends_its_own_mail_through_its_server_and_no_other(
    command: str,
    database_url: str,
    pool: asyncpg.Pool,
    tmp_path: Path,
    make_gateway: MakeGateway,
    backend: TestServer,
    mail_catcher: MailCatcher,
) -> None:
    member = unique_email()
    with MailCatcher(out=io.StringIO()) as shells_server:
        if command == "reset":  # somebody to reset, added (and mailed) first
            add = ["staff", "add", "--email", member, "--role", "helpdesk"]
            await run_cli(database_url, tmp_path, *add, smtp_url=shells_server.url)
        seen = len(shells_server.messages)
        other = await queue_someone_elses_mail(pool)
        args = ["staff", command, "--email", member]
        args += ["--role", "helpdesk"] if command == "add" else []
        out = await run_cli(database_url, tmp_path, *args, smtp_url=shells_server.url)
        host, port = shells_server.host, shells_server.port
        assert f"activation mail sent to the mail server at {host}:{port}" in out, out
        new = shells_server.messages[seen:]
        assert [m["To"] for m in new] == [member]
        assert new[0]["Subject"] == mail_subject("staff_activate")
        [row] = await outbox_for(pool, other)
        assert row["sent_at"] is None and row["attempts"] == 0
    mail = await delivered_by_the_gateway(make_gateway, backend, mail_catcher, other)
    assert mail["Subject"] == "Reset your password"
    assert not mail_files(tmp_path)
