"""Reading an import file: which rows may be stored, and the line and reason of every other."""

from __future__ import annotations

import io
import re
from collections.abc import Callable

import argon2
import bcrypt
import pytest
from passlib.hash import django_pbkdf2_sha256, django_salted_sha1, ldap_salted_sha1, md5_crypt

from auth.importer import (
    MAX_LINE,
    Candidate,
    FileRefused,
    Refusal,
    Tally,
    check_password_hash,
    read_import,
)

DIGITS = re.compile(r"^[0-9]+$")
HEADER = "pass_number,email,password_hash,username\n"
SECRET = "leesplank \u00e9\u00e9n"


def _bcrypt(prefix: bytes, cost: int = 4) -> str:
    return bcrypt.hashpw(SECRET.encode(), bcrypt.gensalt(rounds=cost, prefix=prefix)).decode()


def _argon2(kind: argon2.Type) -> str:
    return argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1, type=kind).hash(
        SECRET
    )


# Each supported format: a real hash of SECRET, its scheme, and whether it is wrapped.
FORMATS: dict[str, tuple[Callable[[], str], str, bool]] = {
    # bcrypt below OWASP's minimum cost of 10 is wrapped like the other weak formats.
    "bcrypt-2a": (lambda: _bcrypt(b"2a"), "bcrypt", True),
    "bcrypt-2b": (lambda: _bcrypt(b"2b"), "bcrypt", True),
    "bcrypt-2y": (lambda: "$2y$" + _bcrypt(b"2b")[4:], "bcrypt", True),
    "bcrypt-2a-cost-9": (lambda: _bcrypt(b"2a", 9), "bcrypt", True),
    "bcrypt-2b-cost-10": (lambda: _bcrypt(b"2b", 10), "bcrypt", False),
    "argon2id": (lambda: _argon2(argon2.Type.ID), "argon2id", False),
    "argon2i": (lambda: _argon2(argon2.Type.I), "argon2i", False),
    "md5-crypt": (lambda: md5_crypt.hash(SECRET), "md5-crypt", True),
    "pbkdf2": (
        lambda: django_pbkdf2_sha256.using(rounds=1000).hash(SECRET),
        "django-pbkdf2-sha256",
        True,
    ),
    "ssha": (lambda: ldap_salted_sha1.hash(SECRET), "ldap-ssha", True),
    "sha1": (lambda: django_salted_sha1.hash(SECRET), "django-sha1", True),
}


def read(text: str, pattern: re.Pattern[str] = DIGITS) -> list[Candidate | Refusal]:
    return list(read_import(io.StringIO(text, newline=""), pass_number_pattern=pattern))


def refusals(text: str) -> dict[int, str]:
    return {row.line: row.reason for row in read(text) if isinstance(row, Refusal)}


def candidates(text: str) -> dict[int, Candidate]:
    return {row.line: row for row in read(text) if isinstance(row, Candidate)}


# --- Password hashes --------------------------------------------------------------------------


@pytest.mark.parametrize("name", FORMATS)
def test_every_supported_format_is_accepted_and_the_weak_ones_are_marked_for_wrapping(
    name: str,
) -> None:
    make, scheme, wrapped = FORMATS[name]
    value = make()
    [row] = read(HEADER + f'1001,jan@example.org,"{value}",\n')
    assert isinstance(row, Candidate)
    assert (row.password_hash, row.scheme, row.needs_wrapping) == (value, scheme, wrapped)
    assert check_password_hash(value) == scheme


def _cut(value: str) -> str:
    return value[:-3]


BAD_HASHES: dict[str, Callable[[], str]] = {
    "bcrypt cut short": lambda: _cut(_bcrypt(b"2b")),
    "bcrypt at cost 31": lambda: "$2b$31$" + _bcrypt(b"2b")[7:],
    "bcrypt at cost 3, below any bcrypt": lambda: "$2b$03$" + _bcrypt(b"2b")[7:],
    "argon2 without its hash": lambda: _argon2(argon2.Type.ID).rsplit("$", 1)[0],
    "argon2 wanting 4 GiB a login": lambda: re.sub(r"m=\d+", "m=4194304", _argon2(argon2.Type.ID)),
    "md5-crypt without checksum": lambda: "$1$saltsalt",
    "md5-crypt cut short": lambda: _cut(md5_crypt.hash(SECRET)),
    "pbkdf2 with letters for rounds": lambda: re.sub(
        r"\$\d+\$", "$many$", django_pbkdf2_sha256.hash(SECRET), count=1
    ),
    "pbkdf2 at a billion rounds": lambda: re.sub(
        r"\$\d+\$", "$1000000000$", django_pbkdf2_sha256.hash(SECRET), count=1
    ),
    "ssha too short for digest and salt": lambda: "{SSHA}" + "A" * 28,
    "ssha not base64": lambda: "{SSHA}!!!!" + ldap_salted_sha1.hash(SECRET)[10:],
    "sha1 with a short digest": lambda: _cut(django_salted_sha1.hash(SECRET)),
    "sha1 without salt": lambda: "sha1$$" + django_salted_sha1.hash(SECRET).rsplit("$")[-1],
    "sha256-crypt": lambda: "$5$rounds=5000$salt$" + "a" * 43,
    "bare md5 hex": lambda: "5f4dcc3b5aa765d61d8327deb882cf99",
    "plain text password": lambda: "hunter2hunter2",
    "our own wrapper": lambda: "$wrapped$md5-crypt$c2FsdA$argon2id$v=19$m=8,t=1,p=1$x$y",
    "a hash with a space": lambda: md5_crypt.hash(SECRET)[:10] + " " + md5_crypt.hash(SECRET)[11:],
    "overlong": lambda: _bcrypt(b"2b") + "A" * 600,
}


@pytest.mark.parametrize("name", BAD_HASHES)
def test_garbled_or_unsupported_hash_refuses_the_row_without_quoting_the_hash(name: str) -> None:
    value = BAD_HASHES[name]()
    reasons = refusals(HEADER + f'1001,jan@example.org,"{value}",\n')
    assert list(reasons) == [2]
    assert reasons[2].startswith("password_hash")
    assert value not in reasons[2]
    with pytest.raises(ValueError):
        check_password_hash(value)


def test_an_empty_hash_means_an_account_without_password() -> None:
    rows = candidates(HEADER + "1001,jan@example.org,,\n1002,piet@example.org,  ,piet\n")
    assert [(row.password_hash, row.scheme) for row in rows.values()] == [(None, None)] * 2


# --- The header -------------------------------------------------------------------------------


def test_columns_may_come_in_any_order_and_username_may_be_left_out() -> None:
    value = md5_crypt.hash(SECRET)
    [row] = read(f"email, password_hash ,pass_number\njan@example.org,{value},1001\n")
    assert row == Candidate(2, "1001", "jan@example.org", "1001", value, "md5-crypt")


@pytest.mark.parametrize(
    "text",
    [
        "\ufeffpass_number,email,password_hash\r\n1001,jan@example.org,\r\n",
        "\ufeffpass_number,email,password_hash\r\n1001,jan@example.org,\r\n".encode().decode(
            "utf-8-sig"
        ),
    ],
)
def test_a_byte_order_mark_does_not_hide_the_first_column(text: str) -> None:
    assert read(text) == [Candidate(2, "1001", "jan@example.org", "1001", None, None)]


@pytest.mark.parametrize(
    ("header", "words"),
    [
        ("pass_number,email,password_hash,username,phone", "unknown column 'phone'"),
        ("pass_number,email,password,username", "unknown column 'password'"),
        ("Pass_Number,email,password_hash", "unknown column 'Pass_Number'"),
        ("pass_number,email,username", "missing column password_hash"),
        ("pass_number,password_hash", "missing column email"),
        ("pass_number,email,password_hash,email", "column 'email' appears twice"),
        ("", "line 1 is blank; it must be the header"),
        ('"pass_number,email,password_hash', "not a CSV line"),
    ],
)
def test_a_wrong_header_refuses_the_whole_file_before_any_row(header: str, words: str) -> None:
    with pytest.raises(FileRefused) as refused:
        read_import(
            io.StringIO(header + "\n1001,jan@example.org,\n", newline=""),
            pass_number_pattern=DIGITS,
        )
    assert refused.value.line == 1
    assert words in refused.value.reason


def test_an_empty_file_is_refused() -> None:
    with pytest.raises(FileRefused, match="line 1: the file is empty"):
        read_import(io.StringIO(""), pass_number_pattern=DIGITS)


# --- Rows -------------------------------------------------------------------------------------

BAD_ROWS = {
    "1001,jan@example.org": "2 fields, the header has 4",
    "1001,jan@example.org,,jan,extra": "5 fields, the header has 4",
    ",jan@example.org,,": "no pass number",
    "10 01,jan@example.org,,": "pass number '10 01' contains spaces or control characters",
    "1001\x00,jan@example.org,,": "contains spaces or control characters",
    f"{'9' * 65},jan@example.org,,": "pass number longer than 64 characters",
    "1001,,,": "no e-mail address",
    "1001,jan.example.org,,": "is not of the form name@domain",
    "1001,jan@@example.org,,": "is not of the form name@domain",
    "1001,@example.org,,": "is not of the form name@domain",
    "1001,jan@,,": "is not of the form name@domain",
    "1001,jan @example.org,,": "contains spaces or control characters",
    f"1001,{'j' * 250}@e.org,,": "e-mail address longer than 254 characters",
    "1001,jan@example.org,,jo": "username 'jo': a username needs at least 3 characters",
    "1001,jan@example.org,,j\u200ban": (
        "username 'j\\u200ban': a username can only contain letters, digits and . - _ @"
        " (found: U+200B)"
    ),
    "1001,jan@example.org,,jan&co": (
        "username 'jan&co': a username can only contain letters, digits and . - _ @ (found: &)"
    ),
    "1001,jan@example.org,,\"<b onclick='x'>\"": "(found: < U+0020 = ' >)",
    "1001,jan@example.org,,...": "username '...': a username needs at least one letter or digit",
    "1001,jan@example.org,,\uff11\uff12\uff13\uff14\uff15": (
        "username '\uff11\uff12\uff13\uff14\uff15': a username that looks like a pass number"
    ),
    "1001,jan@example.org,,77777": "a username that looks like a pass number must be",
}


@pytest.mark.parametrize("row", BAD_ROWS)
def test_each_bad_row_is_refused_with_its_line_and_reason(row: str) -> None:
    text = HEADER + "2001,good@example.org,,\n" + row + "\n2002,good@example.org,,\n"
    reasons = refusals(text)
    assert list(reasons) == [3]
    assert BAD_ROWS[row] in reasons[3]
    assert sorted(candidates(text)) == [2, 4]


def test_a_row_gets_every_reason_at_once() -> None:
    reasons = refusals(HEADER + "1001,nope,$1$garbled,jo\n")
    assert reasons[2].split("; ") == [
        "e-mail address 'nope' is not of the form name@domain",
        "username 'jo': a username needs at least 3 characters",
        "password_hash is a garbled md5-crypt hash",
    ]


def test_fields_lose_surrounding_spaces_and_a_username_its_width_variants() -> None:
    [row] = read(HEADER + " 1001 , jan@example.org ,, \uff2a\uff41\uff4e \n")
    assert row == Candidate(2, "1001", "jan@example.org", "Jan", None, None)


def test_a_full_width_username_equal_to_the_own_pass_number_is_allowed() -> None:
    [row] = read(HEADER + "12345,jan@example.org,,\uff11\uff12\uff13\uff14\uff15\n")
    assert isinstance(row, Candidate) and row.username == "12345"


def test_the_pass_number_pattern_is_the_configured_one() -> None:
    text = HEADER + "1001,jan@example.org,,L12345\n"
    assert list(candidates(text)) == [2]
    [row] = read(text, re.compile(r"^L[0-9]+$"))
    assert isinstance(row, Refusal)
    assert "looks like a pass number" in row.reason


def test_a_membership_type_is_a_word_rules_can_name_even_without_the_institutions_file() -> None:
    """A `require:` rule names types of 1-32 of a-z 0-9 - _ only: a pass imported with any
    other type would keep its holder out of every service that asks for one, silently."""
    text = (
        "pass_number,email,password_hash,type\n"
        "1,a@example.org,,student\n"
        "2,b@example.org,,Student\n"
        "3,c@example.org,,volwassene+\n"
        "4,d@example.org,,\n"
    )
    rule = "must be 1-32 lowercase letters, digits, '-' or '_', starting with a letter or digit"
    assert refusals(text) == {
        3: f"type 'Student' {rule}",
        4: f"type 'volwassene+' {rule}",
    }
    assert [row.type for row in candidates(text).values()] == ["student", None]


def test_bytes_that_are_not_utf8_refuse_their_row_only() -> None:
    raw = (HEADER + "1001,j\xe9n@example.org,,\n1002,jan@example.org,,\n").encode("latin-1")
    stream = io.TextIOWrapper(
        io.BytesIO(raw), encoding="utf-8-sig", errors="surrogateescape", newline=""
    )
    rows = list(read_import(stream, pass_number_pattern=DIGITS))
    assert rows == [
        Refusal(2, "not UTF-8 text"),
        Candidate(3, "1002", "jan@example.org", "1002", None, None),
    ]


# --- Duplicates within the file ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("second", "reason"),
    [
        ("1001,other@example.org,,", "pass number '1001' is the pass number on line 2 already"),
        ("1003,other@example.org,,JAN", "username 'JAN' is the username on line 2 already"),
        (
            "1003,other@example.org,,\uff4a\uff41\uff4e",
            "username 'jan' is the username on line 2 already",
        ),
        ("jan,other@example.org,,", "pass number 'jan' is the username on line 2 already"),
        ("1003,other@example.org,,P-77", "username 'P-77' is the pass number on line 3 already"),
    ],
)
def test_the_second_of_two_rows_sharing_a_name_is_refused_naming_the_first(
    second: str, reason: str
) -> None:
    text = HEADER + "1001,jan@example.org,,jan\np-77,p@example.org,,\n" + second + "\n"
    assert refusals(text) == {4: reason}
    assert sorted(candidates(text)) == [2, 3]


def test_a_username_equal_to_its_own_pass_number_is_no_duplicate() -> None:
    assert list(candidates(HEADER + "ABC-1,jan@example.org,,abc-1\n")) == [2]


# --- Lines and streaming ----------------------------------------------------------------------


def test_line_numbers_are_the_files_across_quoted_line_breaks_and_blank_lines() -> None:
    text = (
        HEADER
        + '1001,"jan@example.org\r\n",,\r\n\r\n'
        + '1002,"two\nlines@example.org",,\n'
        + "1003,x,,\n"
    )
    assert refusals(text) == {
        5: "e-mail address 'two\\nlines@example.org' contains spaces or control characters",
        7: "e-mail address 'x' is not of the form name@domain",
    }
    assert list(candidates(text)) == [2]


def test_an_overlong_line_is_refused_and_reading_goes_on() -> None:
    text = HEADER + f"1001,{'j' * (3 * MAX_LINE)}@example.org,,\n1002,jan@example.org,,\n"
    assert read(text) == [
        Refusal(2, f"line longer than {MAX_LINE} characters"),
        Candidate(3, "1002", "jan@example.org", "1002", None, None),
    ]


def test_broken_quoting_is_refused_with_the_lines_it_swallowed() -> None:
    text = HEADER + '1001,"jan"@example.org,,\n"1002,jan@example.org,,\n1003,x@y.z,,\n'
    assert refusals(text) == {
        2: "not a valid CSV row (',' expected after '\"')",
        3: "not a valid CSV row (unexpected end of data, through line 4)",
    }


class _CountingSource:
    """A file of `rows` rows made up as it is read, counting the lines handed out."""

    def __init__(self, rows: int) -> None:
        self.served = 0
        self._rows = rows

    def readline(self, size: int = -1, /) -> str:
        if self.served > self._rows:
            return ""
        self.served += 1
        return HEADER if self.served == 1 else f"{self.served},p{self.served}@example.org,,\n"


def test_rows_are_read_as_they_are_asked_for_not_all_at_once() -> None:
    source = _CountingSource(100_000)
    rows = read_import(source, pass_number_pattern=DIGITS)
    assert source.served == 1  # the header, checked before the first row is asked for
    first = next(rows)
    assert isinstance(first, Candidate) and first.line == 2
    assert source.served == 2
    assert sum(1 for _ in rows) == 99_999


def test_the_summary_counts_and_the_exit_status() -> None:
    tally = Tally(imported=5, without_password=2)
    assert (
        tally.summary() == "imported 5 (without password 2), refused 0 (of them already present 0)"
    )
    assert tally.exit_code == 0
    tally.refused, tally.present = 3, 2
    assert (
        tally.summary() == "imported 5 (without password 2), refused 3 (of them already present 2)"
    )
    assert tally.exit_code == 1
