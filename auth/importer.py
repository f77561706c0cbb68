"""Reading an account import file, and deciding row by row what may be stored.

Libraries moving to the gateway hand over a CSV export of their old system: one patron a row,
``pass_number,email,password_hash[,username][,type][,valid_until]``: the pass of one
institution (the one the import is for), with the membership's type and last valid day. The
file can hold a hundred thousand rows and was written by software we do not know, so it is
read one physical line at a time (a line has a length limit, a field the csv module's), every
row is checked on its own, and a bad row is answered with its line number and a reason
instead of stopping the rest.

Everything here is pure: it reads from a text stream it is given and answers with data. The
command (``gateway/import_cli.py``) asks the database, hashes and prints.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Protocol

from auth.credentials.passwords import identify, is_weak, wrap_legacy
from auth.credentials.usernames import UsernameRejected, canonical, check_username
from auth.memberships import Institution, word_problem

__all__ = [
    "COLUMNS",
    "Candidate",
    "FileRefused",
    "Refusal",
    "Tally",
    "check_password_hash",
    "pass_number_problem",
    "read_import",
    "type_problem",
    "valid_until_from",
]

COLUMNS = ("pass_number", "email", "password_hash", "username", "type", "valid_until")
_REQUIRED = COLUMNS[:3]
MAX_PASS_NUMBER = 64
MAX_EMAIL = 254
MAX_HASH = 512
# A real row is a few hundred characters; a longer line is refused without reading it whole.
MAX_LINE = 16 * 1024

_ARGON2 = re.compile(
    r"\$argon2(?:id|i|d)\$(?:v=\d+\$)?m=(?P<m>\d{1,10}),t=(?P<t>\d{1,10}),p=(?P<p>\d{1,3})"
    r"\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+"
)
# The shape of each format, down to the checksum: a hash cut short in the export would parse
# for some libraries and then refuse every password.
_SHAPES = {
    **dict.fromkeys(("argon2id", "argon2i", "argon2d"), _ARGON2),
    "bcrypt": re.compile(r"\$2[aby]\$(?P<cost>\d\d)\$[./A-Za-z0-9]{53}"),
    "md5-crypt": re.compile(r"\$1\$[./0-9A-Za-z]{1,8}\$[./0-9A-Za-z]{22}"),
    "django-pbkdf2-sha256": re.compile(
        r"pbkdf2_sha256\$(?P<rounds>\d{1,10})\$[^$\s]+\$[A-Za-z0-9+/]{43}="
    ),
    "ldap-ssha": re.compile(r"\{SSHA\}[A-Za-z0-9+/]+={0,2}"),
    "django-sha1": re.compile(r"sha1\$[^$\s]+\$[0-9a-f]{40}"),
}
# Every login attempt on an account pays its hash's cost, chosen by the old system. Beyond
# these a hash would tie up a hashing thread for seconds (or gigabytes) per attempt.
_MAX_COST = {"cost": 16, "rounds": 10_000_000, "m": 262_144, "t": 16, "p": 16}
# The least argon2 work there is: enough to prove a weak hash parses, as it will be wrapped.
_PARSE_ONLY = {"time_cost": 1, "memory_cost": 8, "parallelism": 1}
# Bytes that were not UTF-8, as the surrogateescape error handler hands them over.
_NOT_UTF8 = re.compile("[\udc80-\udcff]")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class FileRefused(ValueError):
    """The file cannot be imported at all (no header, unknown columns); nothing was read."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Candidate:
    """A row that passed every check the file alone allows: what to store, if the database
    holds no account with this pass number and no clashing name."""

    line: int
    pass_number: str
    email: str
    username: str
    password_hash: str | None  # as in the file; None: no password until an invitation
    scheme: str | None
    type: str | None = None  # the membership's type, the institution's own word
    valid_until: date | None = None  # the membership's last valid day; None: open-ended

    @property
    def needs_wrapping(self) -> bool:
        """Whether the hash is weak and must be wrapped in argon2id before it is stored
        (``passwords.is_weak``: every legacy format but argon2 and bcrypt of cost 10 up)."""
        return self.password_hash is not None and is_weak(self.password_hash)


@dataclass(frozen=True, slots=True)
class Refusal:
    line: int
    reason: str


@dataclass
class Tally:
    """What an import did; ``without_password`` counts imported accounts with no hash, and
    ``present`` those of the refused rows whose pass number the institution has already (a
    row never overwrites an account: a password the patron changed since stays)."""

    imported: int = 0
    without_password: int = 0
    present: int = 0
    refused: int = 0

    def summary(self) -> str:
        return (
            f"imported {self.imported} (without password {self.without_password}),"
            f" refused {self.refused} (of them already present {self.present})"
        )

    @property
    def exit_code(self) -> int:
        return 1 if self.refused else 0


class TextSource(Protocol):
    def readline(self, size: int = -1, /) -> str: ...


def read_import(
    stream: TextSource,
    *,
    pass_number_pattern: re.Pattern[str],
    institution: Institution | None = None,
) -> Iterator[Candidate | Refusal]:
    """Check the header now (``FileRefused``), then yield one outcome per row, in file order.

    `institution` is the one the passes are of, when its configuration is known: a pass
    number against its `pass_number_pattern`, or a type it does not list, is refused.

    Open the file with ``newline=""`` (quoted fields may hold line breaks), encoding
    ``utf-8-sig`` and ``errors="surrogateescape"``: a BOM is dropped, and a row with bytes
    that are not UTF-8 is refused on its own instead of ending the import.
    """
    lines = _Lines(stream)
    reader = csv.reader(lines, strict=True)
    columns = _header(reader)
    return _rows(reader, lines, columns, pass_number_pattern, institution)


def check_password_hash(value: str) -> str:
    """The scheme of an importable hash, or ``ValueError`` saying what is wrong with it.

    The reason never quotes the value: a hash does not belong in a terminal or a log.
    """
    if len(value) > MAX_HASH:
        raise ValueError(f"password_hash longer than {MAX_HASH} characters")
    scheme = identify(value)
    shape = _SHAPES.get(scheme or "")
    if scheme is None or shape is None:
        raise ValueError(
            "password_hash is not in a supported format (bcrypt, argon2,"
            " md5-crypt $1$, pbkdf2_sha256, {SSHA}, sha1$salt$hex)"
        )
    match = shape.fullmatch(value)
    if match is None:
        raise ValueError(f"password_hash is a garbled {scheme} hash")
    for name, text in match.groupdict().items():
        if int(text) > _MAX_COST[name]:
            raise ValueError(
                f"password_hash: {scheme} cost {name}={int(text)} is above"
                f" {_MAX_COST[name]}, too slow to check at every login"
            )
    try:
        # A weak hash is wrapped before it is stored: prove now that it can be.
        wrap_legacy(value, **_PARSE_ONLY)
    except (ValueError, TypeError):
        raise ValueError(f"password_hash is a garbled {scheme} hash") from None
    return scheme


def valid_until_from(text: str) -> date | None:
    """A membership's last valid day as `YYYY-MM-DD` (empty: none), or ``ValueError`` with
    the reason. Only that form: `date.fromisoformat` would also take `20270131` or a week
    date, which an export never means."""
    if not text:
        return None
    if _ISO_DATE.fullmatch(text):
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    raise ValueError(f"valid_until {text!r} is not a date of the form YYYY-MM-DD")


class _LineTooLong(Exception):
    pass


class _Lines:
    """The stream's physical lines, counted, none longer than MAX_LINE.

    An iterator rather than a generator: it raises ``_LineTooLong`` through the csv reader
    and is asked for the next line afterwards, which a generator could not survive.
    """

    def __init__(self, stream: TextSource) -> None:
        self._stream = stream
        self.count = 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = self._stream.readline(MAX_LINE)
        if not line:
            raise StopIteration
        self.count += 1
        if len(line) == MAX_LINE:
            # Skip the rest of the line in bounded pieces (a CR LF may be cut in two).
            while len(line) == MAX_LINE and not line.endswith("\n"):
                line = self._stream.readline(MAX_LINE)
            raise _LineTooLong
        return line


def _header(reader: Iterator[list[str]]) -> tuple[str, ...]:
    expected = (
        "the columns are pass_number, email, password_hash and optionally username, type,"
        " valid_until"
    )
    try:
        cells = next(reader)
    except StopIteration:
        raise FileRefused(1, f"the file is empty; {expected}") from None
    except (csv.Error, _LineTooLong):
        raise FileRefused(1, f"the header is not a CSV line; {expected}") from None
    if not cells:
        raise FileRefused(1, f"line 1 is blank; it must be the header; {expected}")
    # A BOM the stream did not drop (a file opened as plain utf-8).
    cells[0] = cells[0].removeprefix("\ufeff")
    columns = tuple(cell.strip() for cell in cells)
    for name in columns:
        if name not in COLUMNS:
            raise FileRefused(1, f"unknown column {name!r}; {expected}")
        if columns.count(name) > 1:
            raise FileRefused(1, f"column {name!r} appears twice")
    missing = [name for name in _REQUIRED if name not in columns]
    if missing:
        raise FileRefused(1, f"missing column {', '.join(missing)}; {expected}")
    return columns


def _rows(
    reader: Iterator[list[str]],
    lines: _Lines,
    columns: tuple[str, ...],
    pattern: re.Pattern[str],
    institution: Institution | None,
) -> Iterator[Candidate | Refusal]:
    names = _NamesInFile()
    while True:
        start = lines.count + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            # An open quote runs on over the lines after it; say how far it took the reader.
            through = f", through line {lines.count}" if lines.count > start else ""
            yield Refusal(start, f"not a valid CSV row ({exc}{through})")
            continue
        except _LineTooLong:
            yield Refusal(start, f"line longer than {MAX_LINE} characters")
            continue
        if cells:  # a blank line is no row
            yield _check(cells, start, columns, names, pattern, institution)


def _check(
    cells: list[str],
    line: int,
    columns: tuple[str, ...],
    names: _NamesInFile,
    pattern: re.Pattern[str],
    institution: Institution | None = None,
) -> Candidate | Refusal:
    if len(cells) != len(columns):
        return Refusal(line, f"{len(cells)} fields, the header has {len(columns)}")
    if any(_NOT_UTF8.search(cell) for cell in cells):
        return Refusal(line, "not UTF-8 text")
    values = {name: cell.strip() for name, cell in zip(columns, cells, strict=True)}
    pass_number, email = values["pass_number"], values["email"]
    given_name, given_hash = values.get("username", ""), values["password_hash"]
    reasons: list[str] = []

    number_problem = pass_number_problem(pass_number, institution)
    if number_problem:
        reasons.append(number_problem)
    email_problem = _email_problem(email)
    if email_problem:
        reasons.append(email_problem)
    username: str | None = pass_number
    if given_name:
        try:
            username = check_username(
                given_name, own_pass_number=pass_number, pass_number_pattern=pattern
            )
        except UsernameRejected as exc:
            username = None
            rule = exc.message.rstrip(".")
            reasons.append(f"username {given_name!r}: {rule[:1].lower()}{rule[1:]}")
    scheme = None
    if given_hash:
        try:
            scheme = check_password_hash(given_hash)
        except ValueError as exc:
            reasons.append(str(exc))
    kind = values.get("type") or None
    kind_problem = type_problem(kind, institution) if kind is not None else None
    if kind_problem:
        reasons.append(kind_problem)
    valid_until = None
    try:
        valid_until = valid_until_from(values.get("valid_until", ""))
    except ValueError as exc:
        reasons.append(str(exc))
    # Every well-formed name claims its place, even on a row refused for something else:
    # the file means one account per pass number, and the later row is the one in doubt.
    if not number_problem:
        reasons.extend(names.claim("pass number", pass_number, line))
    if given_name and username is not None:
        reasons.extend(names.claim("username", username, line))

    if reasons or username is None:  # (a refused username always left a reason)
        return Refusal(line, "; ".join(reasons))
    return Candidate(
        line, pass_number, email, username, given_hash or None, scheme, kind, valid_until
    )


class _NamesInFile:
    """Every pass number and username met so far, canonical, with the line that has it.

    This is the one thing that grows with the file (a few dozen bytes a row): a duplicate can
    be anywhere. Usernames and pass numbers share one namespace, as they do at login.
    """

    def __init__(self) -> None:
        # Line numbers, negative for a username: half the memory of (line, role) pairs.
        self._seen: dict[str, int] = {}

    def claim(self, role: str, name: str, line: int) -> list[str]:
        key = canonical(name)
        first = self._seen.setdefault(key, line if role == "pass number" else -line)
        if abs(first) == line:  # free, or this row's own pass number as its username
            return []
        first_role = "pass number" if first > 0 else "username"
        return [f"{role} {name!r} is the {first_role} on line {abs(first)} already"]


def pass_number_problem(pass_number: str, institution: Institution | None = None) -> str | None:
    """Why `pass_number` cannot be a pass (of `institution`, when its configuration is
    known: its `pass_number_pattern`), or None."""
    if not pass_number:
        return "no pass number"
    if len(pass_number) > MAX_PASS_NUMBER:
        return f"pass number longer than {MAX_PASS_NUMBER} characters"
    if not _visible(pass_number):
        return f"pass number {pass_number!r} contains spaces or control characters"
    pattern = institution.pass_number_pattern if institution is not None else None
    if institution is not None and pattern is not None and not pattern.fullmatch(pass_number):
        return (
            f"pass number {pass_number!r} is not a pass number of {institution.id}"
            f" (its pattern is {pattern.pattern})"
        )
    return None


def type_problem(kind: str, institution: Institution | None = None) -> str | None:
    """Why `kind` cannot be a membership's type (of `institution`, when it lists its
    types), or None."""
    problem = word_problem(kind, "type")
    if problem is None and institution is not None and kind not in (institution.types or (kind,)):
        known = ", ".join(institution.types)
        return f"type {kind!r} is not one of {institution.id}'s: {known}"
    return problem


def _email_problem(email: str) -> str | None:
    if not email:
        return "no e-mail address"
    if len(email) > MAX_EMAIL:
        return f"e-mail address longer than {MAX_EMAIL} characters"
    local, at, domain = email.partition("@")
    if not at or not local or not domain or "@" in domain:
        return f"e-mail address {email!r} is not of the form name@domain"
    if not _visible(email):
        return f"e-mail address {email!r} contains spaces or control characters"
    return None


def _visible(text: str) -> bool:
    # isprintable() is False for controls, format characters and unassigned code points, and
    # True for U+0020 only among the spaces.
    return text.isprintable() and not any(char.isspace() for char in text)
