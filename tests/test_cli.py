"""The command line as an operator uses it: real processes, a real embedded PostgreSQL."""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from auth.credentials.passwords import PasswordHasher
from auth.store.accounts import Accounts
from gateway.config.settings import SETTINGS, Settings
from tests.helpers import (
    ROOT,
    MakeGateway,
    add_patron,
    cli,
    identity_seen,
    login,
    routes_for,
    unique_pass_number,
)


def test_console_script_and_module_are_the_same_program() -> None:
    result = cli("--help")
    assert result.returncode == 0
    for command in ("run", "demo", "routes", "accounts", "keys", "settings"):
        assert command in result.stdout
    for setting in SETTINGS:
        assert setting.env in result.stdout


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = {match for match in re.findall(r"^\| `(GATEWAY_[A-Z0-9_]+)` \|", readme, re.M)}
    assert table == {setting.env for setting in SETTINGS}


def test_the_shipped_routes_file_is_valid() -> None:
    result = cli("routes", "check", str(ROOT / "routes.yaml"))
    assert result.returncode == 0, result.stderr
    assert "3 routes OK" in result.stdout


def test_bad_settings_are_refused_with_the_variable_named() -> None:
    result = cli(
        "accounts",
        "add",
        "--pass-number",
        "1",
        "--email",
        "a@b.c",
        "--password-stdin",
        env={"GATEWAY_THEME_COLOUR": "red;}body{"},
        stdin="whatever-long-enough\n",
    )
    assert result.returncode == 1
    assert "GATEWAY_THEME_COLOUR='red;}body{': must be a hex colour" in result.stderr


# A password with a character a URL gives a meaning (`/`, `#`, `?`, `@`) that the operator did
# not percent-encode: the URL then splits inside the password, and a parser that quotes the
# piece it could not read (a port, a host, a query field) would print the password.
LEAKY_URLS = [
    ("GATEWAY_DATABASE_URL", "postgresql://gateway:hunter2/Qx7@127.0.0.1:5432/db", "hunter2"),
    ("GATEWAY_DATABASE_URL", "postgresql://gateway:hunter2#Qx7@127.0.0.1/db", "hunter2"),
    ("GATEWAY_DATABASE_URL", "postgresql://gateway:pw?hunter2Qx7@127.0.0.1/db", "hunter2"),
    ("GATEWAY_DATABASE_URL", "postgresql://gateway:hunter2@Qx7@[::1/db", "hunter2"),
    ("GATEWAY_DATABASE_URL", "postgres ql://gateway:hunter2@127.0.0.1/db", "hunter2"),
    ("GATEWAY_DATABASE_LISTEN_URL", "postgresql://gateway:hunter2/Qx7@127.0.0.1/db", "hunter2"),
    ("GATEWAY_SMTP_URL", "smtps://mailer:hunter2/Qx7@smtp.example.org:465", "hunter2"),
    ("GATEWAY_SMTP_URL", "smtps://mailer:hunter2#Qx7@smtp.example.org:465", "hunter2"),
    ("GATEWAY_SMTP_URL", "smtps://mailer:4711/hunter2Qx7@smtp.example.org:465", "4711"),
    ("GATEWAY_SMTP_URL", "smtps://mailer:hunter2@Qx7@smtp.example.org:465", "Qx7"),
]


@pytest.mark.parametrize(("variable", "url", "fragment"), LEAKY_URLS)
async def test_a_secret_url_that_cannot_be_read_is_refused_without_showing_it(
    variable: str, url: str, fragment: str, database_url: str, tmp_path: Path
) -> None:
    """An operator's typo in a URL that holds a password stops the command with the variable
    named and the value hidden, before anything connects: not a traceback that quotes part of
    the password into a log collector, nor a mail sent to a "host" made of it."""
    env = {"GATEWAY_DATABASE_URL": database_url, variable: url}
    result = await asyncio.to_thread(
        cli,
        "accounts",
        "invite",
        "--pass-number",
        unique_pass_number(),
        "--email",
        "reader@example.org",
        "--data-dir",
        str(tmp_path),
        env=env,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert fragment not in result.stdout + result.stderr
    assert f"library-gateway: {variable}=(hidden): " in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("keys", "reason"),
    [
        ("not-a-fernet-key-hunter2", "each key must be 32 url-safe base64-encoded bytes"),
        (" , ", "no keys given"),
    ],
)
@pytest.mark.parametrize("command", [("keys", "list"), ("run", "--port", "0")])
async def test_cookie_keys_that_cannot_be_used_stop_a_command_with_one_line(
    keys: str, reason: str, command: tuple[str, ...], tmp_path: Path
) -> None:
    """A mistyped GATEWAY_COOKIE_KEYS stops every command with the variable named, the
    reason, and the value hidden: not a traceback."""
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "routes:\n  - name: library\n    prefix: /\n    backend: http://127.0.0.1:9\n"
    )
    if command[0] == "run":
        command = (*command, "--routes", str(routes))
    result = await asyncio.to_thread(
        cli, *command, "--data-dir", str(tmp_path), env={"GATEWAY_COOKIE_KEYS": keys}
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith(f"library-gateway: GATEWAY_COOKIE_KEYS=(hidden): {reason}")
    assert "hunter2" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("variable", "url"),
    [
        ("GATEWAY_DATABASE_URL", "postgresql://gateway:hunter2%2FQx7@pgbouncer:6432/library"),
        ("GATEWAY_DATABASE_URL", "postgres://gateway@[::1]:5432,db2.example.org:5433/library"),
        ("GATEWAY_DATABASE_URL", "postgresql://postgres:@/library?host=/run/postgresql"),
        ("GATEWAY_DATABASE_URL", "postgresql:///library?host=%2Frun%2Fpostgresql&port=5433"),
        ("GATEWAY_DATABASE_LISTEN_URL", "postgresql://gateway:p%40ss%23w%3Frd@postgres/library"),
        ("GATEWAY_SMTP_URL", "smtp://127.0.0.1:2525"),
        ("GATEWAY_SMTP_URL", "smtps://mailer%40example.org:hunter2%2FQx7@smtp.example.org"),
        ("GATEWAY_SMTP_URL", "smtps://mailer:p:ss@smtp.example.org:465/"),
    ],
)
def test_every_url_the_gateway_can_read_as_meant_is_accepted(variable: str, url: str) -> None:
    env = {variable: url}
    if variable == "GATEWAY_DATABASE_LISTEN_URL":
        env["GATEWAY_DATABASE_URL"] = url
    assert (
        getattr(Settings.from_env(env), variable.lower().removeprefix("gateway_")).reveal() == url
    )


CLI_PASSWORD = "a quiet reading room"


async def add_account(
    database_url: str, cwd: Path, *args: str, password: str = CLI_PASSWORD
) -> subprocess.CompletedProcess[str]:
    """`library-gateway accounts add ARGS… --password-stdin` against the test's database."""
    return await asyncio.to_thread(
        cli,
        "accounts",
        "add",
        *args,
        "--password-stdin",
        stdin=password + "\n",
        env={"GATEWAY_DATABASE_URL": database_url},
        cwd=cwd,
    )


@pytest.mark.slow
async def test_an_account_added_on_the_command_line_logs_in_by_username_and_by_pass_number(
    tmp_path: Path, database_url: str, make_gateway: MakeGateway, backend: TestServer
) -> None:
    number = unique_pass_number()
    username = f"jan.{number}"
    added = await add_account(
        database_url,
        tmp_path,
        "--pass-number",
        number,
        "--email",
        f"jan{number}@example.org",
        "--username",
        username,
    )
    assert added.returncode == 0, added.stderr
    assert f"created: username {username}, pass number {number}" in added.stdout

    gw = await make_gateway(routes_for(backend.port))
    for name in (username, number):
        assert (await login(gw, name, CLI_PASSWORD)).status == 303, name
        resp = await gw.get("/reservations/mine", headers={"Accept": "application/json"})
        assert resp.status == 200
        seen = identity_seen(await resp.json())
        assert (seen["x-library-username"], seen["x-library-pass-number"]) == (username, number)
        gw.session.cookie_jar.clear()


@pytest.mark.slow
@pytest.mark.parametrize(
    "case",
    [
        "pass-number-taken",
        "username-taken",
        "common-password",
        "username-is-a-pass-number-not-its-own",
        "username-with-markup",
    ],
)
async def test_accounts_add_refuses_what_breaks_a_rule_and_says_which(
    tmp_path: Path, database_url: str, pool: asyncpg.Pool, hasher: PasswordHasher, case: str
) -> None:
    existing = await add_patron(pool, hasher)
    number = unique_pass_number()
    email = f"new{number}@example.org"
    args, password, reason = {
        "pass-number-taken": (
            ["--pass-number", existing.pass_number],
            CLI_PASSWORD,
            f"an account with pass number {existing.pass_number} exists already",
        ),
        "username-taken": (
            ["--pass-number", number, "--username", existing.username],
            CLI_PASSWORD,
            f"the username {existing.username!r} is taken",
        ),
        "common-password": (
            ["--pass-number", number],
            "password",
            "This password is on the list of commonly used passwords; choose another.",
        ),
        "username-is-a-pass-number-not-its-own": (
            ["--pass-number", number, "--username", existing.pass_number],
            CLI_PASSWORD,
            "A username that looks like a pass number must be your own pass number.",
        ),
        "username-with-markup": (
            ["--pass-number", number, "--username", "<b>jan</b>"],
            CLI_PASSWORD,
            "A username can only contain letters, digits and . - _ @ (found: < > /).",
        ),
    }[case]

    refused = await add_account(database_url, tmp_path, *args, "--email", email, password=password)
    assert refused.returncode == 1
    assert f"library-gateway: {reason}\n" in refused.stderr
    assert refused.stdout == ""
    # Nothing was written: no new account, and the existing one is as it was.
    assert await pool.fetchval("SELECT count(*) FROM accounts WHERE email = $1", email) == 0
    assert await Accounts(pool).by_id(existing.id) == existing


@pytest.mark.slow
def test_accounts_add_uses_the_embedded_database_under_the_data_dir(tmp_path: Path) -> None:
    env = {"GATEWAY_DATABASE_URL": ""}
    result = cli(
        "accounts",
        "add",
        "--pass-number",
        "77701",
        "--email",
        "e@example.org",
        "--password-stdin",
        "--data-dir",
        str(tmp_path / "var"),
        stdin="embedded and quick\n",
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "var" / "postgres" / "PG_VERSION").exists()
    listed = cli("keys", "list", "--data-dir", str(tmp_path / "var"), env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "active" in listed.stdout
    # The last process that used the embedded server stopped it.
    assert not (tmp_path / "var" / "postgres" / "postmaster.pid").exists()


@pytest.mark.parametrize(
    "email",
    [
        "no-at-sign",
        "two@@example.org",
        "line\nbreak@example.org",
        "space in@example.org",
        "@example.org",
        "x@localhost",
    ],
)
def test_accounts_add_and_invite_refuse_what_is_not_an_address(email: str) -> None:
    """A line break in an address would become a header injection in every mail to it."""
    for command in (["accounts", "add", "--password-stdin"], ["accounts", "invite"]):
        result = cli(
            *command,
            "--pass-number",
            "88801",
            "--email",
            email,
            stdin="a quiet reading room\n",
            env={"GATEWAY_DATABASE_URL": "postgresql://x"},
        )
        assert result.returncode == 1
        assert "not an e-mail address" in result.stderr
