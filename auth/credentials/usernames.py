"""What a username may be, and when two usernames are the same.

Patrons log in with their username or their library pass number, so a username must never
be mistaken for somebody else's pass number, and two names that look alike must not belong to
two accounts. Names are therefore compared in one canonical form (NFKC, case folded), stored
in their NFKC display form, and refused when they contain characters a reader cannot see or
trust: controls, format characters (zero-width joiners, bidi overrides), any kind of space,
and unassigned, private-use or surrogate code points.

Everything here is pure; the account repository enforces uniqueness on ``canonical``.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "DEFAULT_PASS_NUMBER_PATTERN",
    "MAX_LENGTH",
    "MIN_LENGTH",
    "UsernameRejected",
    "canonical",
    "check_username",
    "looks_like_pass_number",
]

DEFAULT_PASS_NUMBER_PATTERN = r"^[0-9]+$"  # noqa: S105 (a pattern, not a secret)
MIN_LENGTH = 3
MAX_LENGTH = 64

# NFKC can expand one code point into at most 18 (U+FDFA); anything longer than this before
# normalising cannot come back within MAX_LENGTH, so it is refused without the work.
_MAX_RAW_LENGTH = MAX_LENGTH * 18

# Unicode general categories a username may not contain (see the module docstring).
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})


class UsernameRejected(ValueError):
    """A username against the rules; ``code`` says which rule, the message says it to a human."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


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


def check_username(name: str, *, own_pass_number: str, pass_number_pattern: re.Pattern[str]) -> str:
    """The NFKC display form of ``name`` to store, or ``UsernameRejected``."""
    if len(name) > _MAX_RAW_LENGTH:
        raise _too_long()
    display = unicodedata.normalize("NFKC", name)
    if len(display) < MIN_LENGTH:
        raise UsernameRejected("length", f"A username needs at least {MIN_LENGTH} characters.")
    if len(display) > MAX_LENGTH:
        raise _too_long()
    # Both forms are checked: NFKC maps some invisible characters onto visible ones, and a
    # name that needed that should not pass as though it had been typed plainly.
    for char in name + display:
        if unicodedata.category(char) in _FORBIDDEN_CATEGORIES or char.isspace():
            raise UsernameRejected(
                "characters",
                "A username cannot contain spaces, invisible or unassigned characters.",
            )
    if looks_like_pass_number(display, pass_number_pattern) and canonical(display) != canonical(
        own_pass_number
    ):
        raise UsernameRejected(
            "pass_number",
            "A username that looks like a pass number must be your own pass number.",
        )
    return display


def _too_long() -> UsernameRejected:
    return UsernameRejected("length", f"A username can have at most {MAX_LENGTH} characters.")


def _ascii_digits(text: str) -> str:
    """``text`` with every decimal digit of any script replaced by its ASCII digit."""
    return "".join(
        str(unicodedata.decimal(char)) if unicodedata.category(char) == "Nd" else char
        for char in text
    )
