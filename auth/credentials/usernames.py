"""What a username may be, and when two usernames are the same.

Patrons log in with their username or their library pass number, so a username must never
be mistaken for somebody else's pass number, and two names that look alike must not belong to
two accounts. Names are therefore compared in one canonical form (NFKC, case folded) and
stored in their NFKC display form.

A username travels to every backend in ``X-Library-Username``, into JWTs, mails and pages, so
it holds nothing that means anything there: after NFKC every character is a letter of any
script, a combining mark after a letter (Devanagari, Thai, Hebrew points), a decimal digit,
or one of ``. - _ @``. No markup or quoting characters, spaces, slashes, controls, or
characters drawn as nothing; a backend that forgets to escape the header cannot be turned
against a patron. At least one letter or digit is needed (``...`` is no name). Names that
mix scripts to look like another (Latin ``a``, Cyrillic ``\\u0430``) are out of scope here.

Names stored before this rule keep working for login (nothing here is asked at login);
``character_problem`` tells the account page to ask the patron for a new one.

Everything here is pure; the account repository enforces uniqueness on ``canonical``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection

__all__ = [
    "ALLOWED_SIGNS",
    "DEFAULT_PASS_NUMBER_PATTERN",
    "MAX_LENGTH",
    "MIN_LENGTH",
    "UsernameRejected",
    "canonical",
    "character_problem",
    "check_username",
    "looks_like_pass_number",
    "shown",
]

DEFAULT_PASS_NUMBER_PATTERN = r"^[0-9]+$"  # noqa: S105 (a pattern, not a secret)
MIN_LENGTH = 3
MAX_LENGTH = 64

# NFKC can expand one code point into at most 18 (U+FDFA); anything longer than this before
# normalising cannot come back within MAX_LENGTH, so it is refused without the work.
_MAX_RAW_LENGTH = MAX_LENGTH * 18

# The only characters besides letters, marks and digits. None of them means anything in HTML,
# a quoted header or cookie value, or a URL path segment; e-mail-like names work.
ALLOWED_SIGNS = ".-_@"

# Unicode general categories a username may never contain, not even as one's own pass number:
# controls, format characters (zero-width joiners, bidi overrides), surrogates, private-use
# and unassigned code points, and every kind of space.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})

_LETTERS = ("Lu", "Ll", "Lt", "Lm", "Lo")

# Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt): characters drawn as
# nothing. Most are format or unassigned and fail the categories anyway; the Hangul fillers
# (letters), variation selectors, the grapheme joiner and the Mongolian selectors (marks)
# would otherwise pass as part of a name.
_IGNORABLE = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)


class UsernameRejected(ValueError):
    """A username against the rules; ``code`` says which rule, the message says it to a human.

    ``characters`` holds the characters a ``characters`` refusal found, as ``shown`` writes
    them (empty for the other rules)."""

    def __init__(self, code: str, message: str, characters: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.characters = characters


def canonical(name: str) -> str:
    """The form two usernames are compared in: NFKC, case folded, NFKC again.

    Case folding can produce text that is no longer NFKC (e.g. after U+0345), so the result is
    normalised once more; that makes ``canonical`` idempotent. Nothing is stripped.
    """
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())


def looks_like_pass_number(name: str, pattern: re.Pattern[str]) -> bool:
    """True when ``name``, after NFKC, could be read as a pass number.

    Full-width digits become ASCII under NFKC. Digits of other scripts (Arabic-Indic,
    Devanagari, …) do not, so they are also tried as their ASCII values, and letters in both
    cases: a name should not be a pass number in any reading.
    """
    normalised = unicodedata.normalize("NFKC", name)
    readings = {normalised, normalised.casefold(), normalised.upper(), _ascii_digits(normalised)}
    return any(pattern.fullmatch(reading) for reading in readings)


def check_username(
    name: str, *, own_pass_number: str | Collection[str], pass_number_pattern: re.Pattern[str]
) -> str:
    """The NFKC display form of ``name`` to store, or ``UsernameRejected``.

    ``own_pass_number``: the account's pass number, or every pass number it holds (a patron
    who linked another library's pass has several, each their own)."""
    if len(name) > _MAX_RAW_LENGTH:
        raise _too_long()
    display = unicodedata.normalize("NFKC", name)
    if len(display) < MIN_LENGTH:
        raise UsernameRejected("length", f"A username needs at least {MIN_LENGTH} characters.")
    if len(display) > MAX_LENGTH:
        raise _too_long()
    problem = character_problem(name, own_pass_number=own_pass_number)
    if problem is not None:
        raise problem
    if looks_like_pass_number(display, pass_number_pattern) and not _is_own(
        display, own_pass_number
    ):
        raise UsernameRejected(
            "pass_number",
            "A username that looks like a pass number must be your own pass number.",
        )
    return display


def character_problem(
    name: str, *, own_pass_number: str | Collection[str]
) -> UsernameRejected | None:
    """What is wrong with the characters of ``name``, or None: the rule a new username must
    pass, and the test that tells the account page to ask for a new one.

    After NFKC: every character a letter (L*), a decimal digit (Nd), one of ``ALLOWED_SIGNS``,
    or a combining mark (M*) right after a letter or another mark; nothing drawn as nothing;
    at least one letter or digit. The name as typed may hold no invisible character either:
    NFKC maps some onto visible ones, and a name that needed that should not pass as though
    it had been typed plainly. The account's own pass number is the library's, not the
    patron's, and already reaches backends as it is in ``X-Library-Pass-Number``: a patron can
    always go back to it, so it only has to be free of invisible characters.
    """
    display = unicodedata.normalize("NFKC", name)
    own = _is_own(display, own_pass_number)
    found = dict.fromkeys(
        char for char in display if (_invisible(char) if own else not _allowed(char))
    )
    if not found:
        found = dict.fromkeys(char for char in name if _invisible(char))
    if found:
        characters = shown("".join(found))
        return UsernameRejected(
            "characters",
            f"A username can only contain letters, digits and . - _ @ (found: {characters}).",
            characters,
        )
    if own:
        return None
    previous = ""  # the category of the character before
    for char in display:
        category = unicodedata.category(char)
        if category[0] == "M" and previous[:1] not in ("L", "M"):
            return UsernameRejected(
                "combining_mark", "An accent or other combining mark must follow a letter."
            )
        previous = category
    if not any(unicodedata.category(char) in ("Nd", *_LETTERS) for char in display):
        return UsernameRejected(
            "no_letter_or_digit", "A username needs at least one letter or digit."
        )
    return None


def shown(characters: str) -> str:
    """``characters`` for a patron or an operator to read, separated by spaces: each as it
    is, or as ``U+XXXX`` when it would not be seen (spaces, controls, invisible characters)."""
    return " ".join(
        char
        if char.isprintable() and not char.isspace() and not _ignorable(char)
        else f"U+{ord(char):04X}"
        for char in characters
    )


def _is_own(name: str, own_pass_number: str | Collection[str]) -> bool:
    """Whether ``name`` is (one of) the account's own pass number(s)."""
    owned = (own_pass_number,) if isinstance(own_pass_number, str) else own_pass_number
    key = canonical(name)
    return any(key == canonical(number) for number in owned)


def _allowed(char: str) -> bool:
    if _ignorable(char):
        return False
    category = unicodedata.category(char)
    return category[0] in "LM" or category == "Nd" or char in ALLOWED_SIGNS


def _invisible(char: str) -> bool:
    return unicodedata.category(char) in _INVISIBLE_CATEGORIES or char.isspace() or _ignorable(char)


def _ignorable(char: str) -> bool:
    code = ord(char)
    return any(first <= code <= last for first, last in _IGNORABLE)


def _too_long() -> UsernameRejected:
    return UsernameRejected("length", f"A username can have at most {MAX_LENGTH} characters.")


def _ascii_digits(text: str) -> str:
    """``text`` with every decimal digit of any script replaced by its ASCII digit."""
    return "".join(
        str(unicodedata.decimal(char)) if unicodedata.category(char) == "Nd" else char
        for char in text
    )
