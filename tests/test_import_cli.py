"""`library-gateway accounts import` as an operator runs it: a real process, a real database,
and patrons who then log in through the real gateway with the passwords of their old system."""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import argon2
import asyncpg
import bcrypt
import pytest
from passlib.hash import django_pbkdf2_sha256, django_salted_sha1, ldap_salted_sha1, md5_crypt

from auth.credentials.passwords import PasswordHasher, identify
from auth.store import schema
from auth.store.accounts import Accounts
from auth.store.memberships import Memberships
from gateway import database
from tests.helpers import Gateway, add_patron, login

pytestmark = pytest.mark.slow

HEADER = "pass_number,email,password_hash,username"


def run_import(database_url: str, file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "accounts", "import", file.name, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=file.parent,
        env={**os.environ, "GATEWAY_DATABASE_URL": database_url},
    )


async def import_file(
    database_url: str, file: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run_import, database_url, file, *args)


def write(path: Path, *lines: str, bom: bool = False) -> Path:
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + "\r\n".join(lines).encode() + b"\r\n")
    return path


async def snapshot(pool: asyncpg.Pool) -> list[tuple[Any, ...]]:
    rows = await pool.fetch("SELECT * FROM accounts ORDER BY pass_number_canonical")
    return [tuple(row.values()) for row in rows]


async def stored_hash(pool: asyncpg.Pool, pass_number: str) -> str | None:
    value: str | None = await pool.fetchval(
        "SELECT password_hash FROM accounts WHERE pass_number = $1", pass_number
    )
    return value


def _bcrypt(password: str, prefix: bytes = b"2b", cost: int = 4) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=cost, prefix=prefix)).decode()


def _argon2(password: str, kind: argon2.Type) -> str:
    # Not the gateway's parameters, so even this one is rehashed at the first login.
    return argon2.PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1, type=kind).hash(
        password
    )


# name: (make a hash of a password, is it weak, the part of it that gives the password away)
FORMATS: dict[str, tuple[Callable[[str], str], bool]] = {
    # bcrypt below OWASP's minimum cost of 10 is as weak as the rest; from 10 up it is kept.
    "bcrypt-2a": (lambda pw: _bcrypt(pw, b"2a"), True),
    "bcrypt-2b": (lambda pw: _bcrypt(pw), True),
    "bcrypt-2y": (lambda pw: "$2y$" + _bcrypt(pw)[4:], True),
    "bcrypt-2a-cost-9": (lambda pw: _bcrypt(pw, b"2a", cost=9), True),
    "bcrypt-2b-cost-10": (lambda pw: _bcrypt(pw, cost=10), False),
    "argon2id": (lambda pw: _argon2(pw, argon2.Type.ID), False),
    "argon2i": (lambda pw: _argon2(pw, argon2.Type.I), False),
    "md5-crypt": (md5_crypt.hash, True),
    "pbkdf2": (django_pbkdf2_sha256.using(rounds=1000).hash, True),
    "ssha": (ldap_salted_sha1.hash, True),
    "sha1": (django_salted_sha1.hash, True),
}


def secrets_in(legacy: str) -> set[str]:
    """The pieces of a weak legacy hash that must not rest in the database: the hash itself,
    its digest field, and for {SSHA} the digest inside the base64 body, in every spelling."""
    found = {legacy, legacy.rsplit("$", 1)[-1]}
    if legacy.startswith("$2"):
        found.add(legacy[-31:])  # bcrypt's checksum, after its 22-character salt
    if legacy.startswith("{SSHA}"):
        body = legacy[len("{SSHA}") :]
        digest = base64.b64decode(body)[:20]
        found |= {
            body,
            digest.hex(),
            base64.b64encode(digest).decode().rstrip("="),
            base64.urlsafe_b64encode(digest).decode().rstrip("="),
        }
    return found


async def test_every_legacy_format_imports_and_logs_in_twice_ending_as_plain_argon2id(
    tmp_path: Path, database_url: str, pool: asyncpg.Pool, gw: Gateway
) -> None:
    rows, patrons = [HEADER], {}
    for index, (name, (make, weak)) in enumerate(FORMATS.items()):
        number, password = f"3100{index}", f"oude wachtwoord {name} \u00e9\u00e9n"
        legacy = make(password)
        # Half log in by username, half by pass number (no username column value).
        username = f"patron-{name}" if index % 2 else ""
        rows.append(f'{number},{name}@example.org,"{legacy}",{username}')
        patrons[number] = (username or number, password, legacy, weak)
    result = await import_file(database_url, write(tmp_path / "legacy.csv", *rows))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.strip() == (
        f"legacy.csv: imported {len(FORMATS)} (without password 0), refused 0"
        " (of them already present 0)"
    )

    for number, (login_name, password, legacy, weak) in patrons.items():
        imported = await stored_hash(pool, number)
        assert imported is not None
        if weak:
            assert imported.startswith("$wrapped$")
            for secret in secrets_in(legacy):
                assert secret not in imported
        else:
            assert imported == legacy
        assert (await login(gw, login_name, password + "x")).status == 401
        assert await stored_hash(pool, number) == imported

        assert (await login(gw, login_name, password)).status == 303
        upgraded = await stored_hash(pool, number)
        assert upgraded is not None and upgraded != imported
        assert upgraded.startswith("$argon2id$") and identify(upgraded) == "argon2id"
        assert "wrapped" not in upgraded
        gw.session.cookie_jar.clear()
        assert (await login(gw, login_name, password)).status == 303
        assert await stored_hash(pool, number) == upgraded
        gw.session.cookie_jar.clear()


async def test_a_second_run_refuses_every_row_by_line_and_keeps_a_password_changed_since(
    tmp_path: Path, database_url: str, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    file = write(
        tmp_path / "again.csv",
        HEADER,
        f"32001,a@example.org,{md5_crypt.hash('first password')},reader-a",
        f"32002,b@example.org,{_bcrypt('second password')},",
        "32003,c@example.org,,reader-c",
    )
    first = await import_file(database_url, file)
    assert first.returncode == 0, first.stderr
    assert "imported 3 (without password 1), refused 0 (of them already present 0)" in first.stdout
    account = await Accounts(pool).by_login_name("reader-a")
    assert account is not None
    changed = await hasher.hash("a password chosen after the import")
    assert await Accounts(pool).set_password_hash(account.id, changed)
    before = await snapshot(pool)

    second = await import_file(database_url, file)
    assert second.returncode == 1, second.stderr
    assert "imported 0 (without password 0), refused 3 (of them already present 3)" in second.stdout
    assert sorted(second.stderr.splitlines()) == [
        f"again.csv:{line}: pass number '{number}' of the default institution exists already;"
        " the account was left as it is"
        for line, number in ((2, "32001"), (3, "32002"), (4, "32003"))
    ]
    assert await snapshot(pool) == before
    assert await stored_hash(pool, "32001") == changed


async def test_bad_rows_are_named_by_line_while_the_good_rows_land(
    tmp_path: Path, database_url: str, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    await add_patron(pool, hasher, pass_number="ABC-77", username="taken-name")
    await add_patron(pool, hasher, pass_number="ABC-78", username="other-name")
    garbled = md5_crypt.hash("x")[:-4]
    file = write(
        tmp_path / "mixed.csv",
        HEADER,
        "33001,good@example.org,,",  # 2 good
        "33002,not-an-address,,",  # 3
        f'33003,g@example.org,"{garbled}",',  # 4
        "33004,g@example.org,,\uff19\uff19\uff19\uff19\uff19",  # 5 full-width digits
        "33005,g@example.org,,abc-77",  # 6 another's pass number
        "33006,g@example.org,,Other-Name",  # 7 another's username
        "taken-name,g@example.org,,",  # 8 pass number = username
        "33001,g@example.org,,",  # 9 duplicate of line 2
        "33009,g@example.org,{},second".format(_bcrypt("pw")),  # 10 good
        "33010,g@example.org",  # 11
        "33011,g@example.org,,jan&co",  # 12 a character usernames may not hold
    )
    result = await import_file(database_url, file)
    assert result.returncode == 1
    assert result.stdout.strip() == (
        "mixed.csv: imported 2 (without password 1), refused 9 (of them already present 0)"
    )
    lines = sorted(result.stderr.splitlines(), key=lambda line: int(line.split(":")[1]))
    assert lines == [
        "mixed.csv:3: e-mail address 'not-an-address' is not of the form name@domain",
        "mixed.csv:4: password_hash is a garbled md5-crypt hash",
        "mixed.csv:5: username '\uff19\uff19\uff19\uff19\uff19': a username that looks like"
        " a pass number must be your own pass number",
        "mixed.csv:6: username 'abc-77' is the username or pass number of another account",
        "mixed.csv:7: username 'Other-Name' is the username or pass number of another account",
        "mixed.csv:8: pass number 'taken-name' is the username of another account",
        "mixed.csv:9: pass number '33001' is the pass number on line 2 already",
        "mixed.csv:11: 2 fields, the header has 4",
        "mixed.csv:12: username 'jan&co': a username can only contain letters, digits and"
        " . - _ @ (found: &)",
    ]
    assert garbled not in result.stderr
    landed = await pool.fetch(
        "SELECT pass_number, username, password_hash FROM accounts"
        " WHERE pass_number LIKE '330%' ORDER BY pass_number"
    )
    assert [(row["pass_number"], row["username"]) for row in landed] == [
        ("33001", "33001"),
        ("33009", "second"),
    ]
    assert landed[0]["password_hash"] is None


async def test_an_account_without_password_cannot_log_in(
    tmp_path: Path, database_url: str, pool: asyncpg.Pool, gw: Gateway
) -> None:
    result = await import_file(
        database_url, write(tmp_path / "bare.csv", HEADER, "34001,bare@example.org,,bare-reader")
    )
    assert "imported 1 (without password 1)" in result.stdout
    for attempt in ("", "anything at all", "bare-reader", "34001"):
        assert (await login(gw, "bare-reader", attempt)).status == 401


async def test_a_byte_order_mark_and_any_column_order_are_read(
    tmp_path: Path, database_url: str, pool: asyncpg.Pool
) -> None:
    file = write(
        tmp_path / "excel.csv",
        "username,password_hash,email,pass_number",
        "bom-reader,,bom@example.org,35001",
        bom=True,
    )
    result = await import_file(database_url, file)
    assert result.returncode == 0, result.stderr
    account = await Accounts(pool).by_login_name("bom-reader")
    assert account is not None
    assert (account.pass_number, account.email) == ("35001", "bom@example.org")


async def test_dry_run_reports_what_would_happen_and_writes_nothing(
    tmp_path: Path, database_url: str, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    await add_patron(pool, hasher, pass_number="36001")
    file = write(
        tmp_path / "dry.csv",
        HEADER,
        "36001,a@example.org,,",
        f"36002,b@example.org,{md5_crypt.hash('pw')},",
        "36003,c@example.org,,",
        "36004,nope,,",
    )
    before = await snapshot(pool)
    dry = await import_file(database_url, file, "--dry-run")
    assert dry.returncode == 1
    assert dry.stdout.splitlines() == [
        "dry run: nothing was written; an import would have",
        "dry.csv: imported 2 (without password 1), refused 2 (of them already present 1)",
    ]
    assert sorted(dry.stderr.splitlines()) == [
        "dry.csv:2: pass number '36001' of the default institution exists already; the account"
        " was left as it is",
        "dry.csv:5: e-mail address 'nope' is not of the form name@domain",
    ]
    assert await snapshot(pool) == before
    real = await import_file(database_url, file)
    assert real.stdout.strip() == (
        "dry.csv: imported 2 (without password 1), refused 2 (of them already present 1)"
    )


async def test_a_refusal_names_the_default_institution_the_gateway_settled(
    tmp_path: Path, postgres_server: str, hasher: PasswordHasher
) -> None:
    """Without `--institution` the rows are the default institution's; once a gateway has
    said which one that is (`kb` here), a refusal names it, as the README shows."""
    url = await database.ensure_database(
        postgres_server, f"t_import_default_{secrets.token_hex(3)}"
    )
    pool = await database.create_pool(url, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            await schema.migrate(conn)
        await Memberships(pool).settle_default("kb")
        await add_patron(pool, hasher, pass_number="37001")
        file = write(tmp_path / "kb.csv", HEADER, "37001,a@example.org,,", "37002,b@example.org,,")
        result = await import_file(url, file)
    finally:
        await pool.close()
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == [
        "kb.csv:2: pass number '37001' of kb exists already; the account was left as it is"
    ]
    assert result.stdout.strip() == (
        "kb.csv: imported 1 (without password 1), refused 1 (of them already present 1)"
    )


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (
            "pass_number,email,password_hash,phone",
            "bad-header.csv:1: unknown column 'phone'; the columns are pass_number, email,"
            " password_hash and optionally username, type, valid_until",
        ),
        ("pass_number,password_hash", "bad-header.csv:1: missing column email;"),
    ],
)
async def test_a_file_with_a_wrong_header_is_refused_whole(
    tmp_path: Path, database_url: str, pool: asyncpg.Pool, header: str, message: str
) -> None:
    before = await snapshot(pool)
    result = await import_file(
        database_url, write(tmp_path / "bad-header.csv", header, "37001,a@example.org,,")
    )
    assert result.returncode == 2
    assert result.stderr.startswith(message)
    assert result.stdout == ""
    assert await snapshot(pool) == before


async def test_a_missing_file_is_named(tmp_path: Path, database_url: str) -> None:
    result = await import_file(database_url, tmp_path / "nowhere.csv")
    assert result.returncode == 2
    assert "cannot read" in result.stderr and "nowhere.csv" in result.stderr
