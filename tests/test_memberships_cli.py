"""Memberships on the command line as a library's desk uses them: `accounts import
--institution` with types and end dates, `accounts membership add|end`, in real processes on a
real database, seen at once by a running gateway."""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path

import asyncpg
import pytest

from auth.credentials.passwords import PasswordHasher
from auth.memberships import Membership
from auth.services import SERVICES
from auth.store import merges
from auth.store.accounts import Accounts
from auth.store.memberships import Memberships
from tests.helpers import (
    Gateway,
    add_patron,
    can_log_in,
    cli,
    fetch,
    identity_seen,
    login,
    unique_pass_number,
)

pytestmark = pytest.mark.slow

INSTITUTIONS = """\
institutions:
  - id: bib
    name: De Bibliotheek
    default: true
  - id: kb
    name: Koninklijke Bibliotheek
    pass_number_pattern: "^KB[0-9]{6}$"
    renew_url: https://www.kb.nl/lid-worden
    types: [adult, youth, student]
"""


async def command(database_url: str, cwd: Path, *args: str) -> tuple[int, str, str]:
    done = await asyncio.to_thread(cli, *args, env={"GATEWAY_DATABASE_URL": database_url}, cwd=cwd)
    return done.returncode, done.stdout, done.stderr


def write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


async def test_an_import_for_an_institution_takes_types_and_end_dates_and_refuses_by_line(
    tmp_path: Path, database_url: str, pool: asyncpg.Pool
) -> None:
    write(tmp_path / "institutions.yaml", INSTITUTIONS)
    write(
        tmp_path / "kb.csv",
        "pass_number,email,password_hash,username,type,valid_until",
        "KB100001,a@example.org,,kb-reader-a,adult,2027-01-31",  # 2
        "KB100002,b@example.org,,kb-reader-b,youth,",  # 3 no end date
        "KB100003,c@example.org,,kb-reader-c,,2027-02-30",  # 4 no such day
        "KB100004,d@example.org,,kb-reader-d,adult,31-01-2027",  # 5 not YYYY-MM-DD
        "100005,e@example.org,,kb-reader-e,adult,",  # 6 not a KB pass number
        "KB100006,f@example.org,,kb-reader-f,senior,",  # 7 a type kb does not have
    )
    args = ("accounts", "import", "--institution", "kb", "--institutions", "institutions.yaml")
    code, out, err = await command(database_url, tmp_path, *args, "kb.csv")
    assert code == 1
    assert (
        out.strip()
        == "kb.csv: imported 2 (without password 2), refused 4 (of them already present 0)"
    )
    assert sorted(err.splitlines()) == [
        "kb.csv:4: valid_until '2027-02-30' is not a date of the form YYYY-MM-DD",
        "kb.csv:5: valid_until '31-01-2027' is not a date of the form YYYY-MM-DD",
        "kb.csv:6: pass number '100005' is not a pass number of kb (its pattern is ^KB[0-9]{6}$)",
        "kb.csv:7: type 'senior' is not one of kb's: adult, youth, student",
    ]
    accounts, memberships = Accounts(pool), Memberships(pool)
    reader_a = await accounts.by_login_name("KB100001")
    reader_b = await accounts.by_login_name("kb-reader-b")
    assert reader_a is not None and reader_b is not None
    assert await memberships.of(reader_a.id) == (
        Membership("kb", "KB100001", "adult", date(2027, 1, 31)),
    )
    assert await memberships.of(reader_b.id) == (Membership("kb", "KB100002", "youth", None),)

    # Again: every pass is kb's already, so every row is refused with its line; nothing moves.
    write(
        tmp_path / "kb.csv",
        "pass_number,email,password_hash,username,type,valid_until",
        "KB100001,changed@example.org,,kb-reader-a,youth,2030-01-01",
        "KB100002,b@example.org,,,youth,",
    )
    code, out, err = await command(database_url, tmp_path, *args, "kb.csv")
    assert code == 1
    assert "imported 0 (without password 0), refused 2 (of them already present 2)" in out
    assert sorted(err.splitlines()) == [
        "kb.csv:2: pass number 'KB100001' of kb exists already; the account was left as it is",
        "kb.csv:3: pass number 'KB100002' of kb exists already; the account was left as it is",
    ]
    assert await memberships.of(reader_a.id) == (
        Membership("kb", "KB100001", "adult", date(2027, 1, 31)),
    )
    again = await accounts.by_id(reader_a.id)
    assert again is not None and again.email == "a@example.org"


async def test_an_import_names_an_institution_its_file_does_not_have(
    tmp_path: Path, database_url: str
) -> None:
    write(tmp_path / "institutions.yaml", INSTITUTIONS)
    file = write(tmp_path / "x.csv", "pass_number,email,password_hash", "1,a@example.org,")
    code, out, err = await command(
        database_url,
        tmp_path,
        *("accounts", "import", "--institution", "oba", "--institutions", "institutions.yaml"),
        file.name,
    )
    assert code == 2 and out == ""
    assert "no institution 'oba' in institutions.yaml (it has bib, kb)" in err


async def test_the_same_number_at_two_institutions_is_two_passes(
    tmp_path: Path, database_url: str, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """Two libraries may both have handed out a number: each institution's is its own."""
    number = unique_pass_number()
    patron = await add_patron(pool, hasher, pass_number=number)
    file = write(
        tmp_path / "oba.csv",
        "pass_number,email,password_hash,username",
        f"{number},oba@example.org,,oba-{number}",
    )
    code, _, err = await command(
        database_url, tmp_path, "accounts", "import", "--institution", "oba", file.name
    )
    assert code == 0, err
    other = await Accounts(pool).by_login_name(f"oba-{number}")
    assert other is not None and other.id != patron.id
    assert await Memberships(pool).holder("oba", number) == other.id
    assert await Memberships(pool).holder("default", number) == patron.id


async def test_a_membership_added_and_ended_is_seen_at_once_by_a_running_gateway(
    tmp_path: Path, database_url: str, gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    patron = await add_patron(pool, hasher)
    assert (await login(gw, patron.username)).status == 303
    cookie = next(m.value for m in gw.session.cookie_jar if m.key == "library_session")

    async def memberships_seen() -> str:
        resp = await fetch(gw, "/reservations/mine", cookie)
        assert resp.status == 200
        return identity_seen(await resp.json())["x-library-memberships"]

    assert await memberships_seen() == "default::"  # cached from here on
    registry = gw.app[SERVICES].registry
    heard = registry.notified
    code, out, err = await command(
        database_url,
        tmp_path,
        *("accounts", "membership", "add", "--account", patron.pass_number),
        *("--institution", "kb", "--pass-number", "KB200001", "--type", "adult"),
        "--valid-until",
        "2027-01-31",
    )
    assert code == 0, err
    assert out.strip() == (
        f"kb pass KB200001 (type adult, valid until 2027-01-31) added to account {patron.id}"
        f" (username {patron.username})"
    )
    await registry.wait_notified(heard + 1)
    assert await memberships_seen() == "default::,kb:adult:2027-01-31"
    # The new pass logs in to the same account.
    assert await can_log_in(gw, "KB200001")

    heard = registry.notified
    code, out, err = await command(
        database_url,
        tmp_path,
        *("accounts", "membership", "end", "--institution", "kb", "--pass-number", "kb200001"),
    )
    assert code == 0, err
    assert out.strip() == (
        f"kb pass kb200001 of account {patron.id} (username {patron.username}) ended"
    )
    await registry.wait_notified(heard + 1)
    assert await memberships_seen() == "default::"
    assert not await can_log_in(gw, "KB200001")
    assert await can_log_in(gw, patron.username)


async def test_a_membership_add_to_a_merged_away_account_is_refused(
    tmp_path: Path, database_url: str, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """An account merged into another keeps a row (and a `merged:` name) but never logs in
    again: a pass added to it would never log in either, so the command names the account
    it was merged into instead."""
    survivor, absorbed = await add_patron(pool, hasher), await add_patron(pool, hasher)
    async with pool.acquire() as conn, conn.transaction():
        merged = await merges.merge(
            conn,
            survivor.id,
            absorbed.id,
            "default",
            absorbed.pass_number,
            proved=absorbed.password_hash,
        )
    assert isinstance(merged, merges.Merged)
    retired = await pool.fetchval("SELECT username FROM accounts WHERE id = $1::uuid", absorbed.id)
    code, out, err = await command(
        database_url,
        tmp_path,
        *("accounts", "membership", "add", "--account", retired),
        *("--institution", "kb", "--pass-number", "KB300077"),
    )
    assert (code, out) == (1, "")
    assert err == (
        f"library-gateway: account {retired!r} was merged into {survivor.username!r};"
        " add the pass there\n"
    )
    assert await Memberships(pool).of(absorbed.id) == ()


async def test_a_membership_add_is_refused_with_the_reason(
    tmp_path: Path, database_url: str, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    write(tmp_path / "institutions.yaml", INSTITUTIONS)
    patron = await add_patron(pool, hasher)
    other = await add_patron(pool, hasher)
    await Memberships(pool).add(other.id, Membership("kb", "KB300001"))
    await Memberships(pool).add(other.id, Membership("kb", "KB300002"))
    await Memberships(pool).end("kb", "KB300002")
    base = ("accounts", "membership", "add", "--account", patron.username, "--institution")
    with_file = ("--institutions", "institutions.yaml")
    cases = {
        (*base, "kb", "--pass-number", "KB300001"): (
            "kb pass KB300001 is taken: it belongs to another account"
        ),
        (*base, "kb", "--pass-number", "KB300002"): (
            "kb pass KB300002 is taken: an ended membership had it, and a pass is never given twice"
        ),
        (*base, "default", "--pass-number", patron.pass_number): (
            f"default pass {patron.pass_number} is this account's already"
        ),
        (*base, "kb", "--pass-number", other.username): (
            f"pass number {other.username!r} is the username of another account"
        ),
        (*base, "kb", "--pass-number", "KB3", *with_file): (
            "pass number 'KB3' is not a pass number of kb (its pattern is ^KB[0-9]{6}$)"
        ),
        (*base, "kb", "--pass-number", "KB300009", "--type", "senior", *with_file): (
            "type 'senior' is not one of kb's: adult, youth, student"
        ),
        (*base, "kb", "--pass-number", "KB300009", "--valid-until", "2027-13-01"): (
            "valid_until '2027-13-01' is not a date of the form YYYY-MM-DD"
        ),
        (*base, "k:b", "--pass-number", "KB300009"): (
            "institution 'k:b' must be 1-32 lowercase letters, digits, '-' or '_', starting"
            " with a letter or digit"
        ),
        # An id no institutions.yaml can hold, so no rule, link form or claim would know it.
        (*base, "KB", "--pass-number", "KB300009"): (
            "institution 'KB' must be 1-32 lowercase letters, digits, '-' or '_', starting"
            " with a letter or digit"
        ),
        (*base, "kb", "--pass-number", "KB300009", "--type", "Adult"): (
            "type 'Adult' must be 1-32 lowercase letters, digits, '-' or '_', starting"
            " with a letter or digit"
        ),
        (*base, "oba", "--pass-number", "KB300009", *with_file): (
            "no institution 'oba' in institutions.yaml (it has bib, kb)"
        ),
        (*base[:3], "--account", "nobody", "--institution", "kb", "--pass-number", "KB9"): (
            "no account with username or pass number 'nobody'"
        ),
        ("accounts", "membership", "end", "--institution", "kb", "--pass-number", "KB300002"): (
            "no live membership with kb pass KB300002"
        ),
    }
    for args, reason in cases.items():
        code, out, err = await command(database_url, tmp_path, *args)
        assert (code, out, err) == (1, "", f"library-gateway: {reason}\n"), args
    assert await Memberships(pool).of(patron.id) == (Membership("default", patron.pass_number),)
