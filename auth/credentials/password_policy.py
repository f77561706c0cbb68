"""Which new passwords we accept, after NIST SP 800-63B section 5.1.1.

The guideline's point is that composition rules ("one digit, one symbol") make passwords
harder to remember without making them harder to guess, while length and a check against
passwords known to be common do help. So a password is refused only when it is too short,
too long, on the shipped list of common passwords, or the patron's own username or pass
number; anything else, spaces and emoji included, is fine.

Length is counted in code points after NFKC, the form most input methods converge on. The
upper bound is checked before anything else so that a megabyte of "password" costs nothing.
"""

from __future__ import annotations

import functools
import gzip
import unicodedata
from dataclasses import dataclass
from importlib import resources

from auth.credentials.usernames import canonical

__all__ = ["COMMON_PASSWORDS_FILE", "PasswordPolicy", "PasswordRejected", "is_common"]

#: The shipped blocklist, inside the ``auth`` package; ``auth/data/README.md`` tells its origin.
COMMON_PASSWORDS_FILE = "data/common-passwords.txt.gz"
_HEADER_PREFIX = "# "

# NFKC composes at most a few code points into one (three Hangul jamo into a syllable, a
# Greek vowel with three marks into one letter); a raw string more than this many times the
# limit is refused before it is normalised.
_MAX_COMPOSITION = 4


class PasswordRejected(ValueError):
    """A new password against the policy; ``code`` names the rule, the message explains it."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class PasswordPolicy:
    """Length bounds in code points; the common-password list is the same for everyone."""

    min_length: int = 8
    max_length: int = 256

    def check(self, password: str, *, username: str, pass_number: str) -> None:
        """Return quietly for an acceptable password, raise ``PasswordRejected`` otherwise."""
        if len(password) > self.max_length * _MAX_COMPOSITION:
            raise self._too_long()
        normalised = unicodedata.normalize("NFKC", password)
        if len(normalised) > self.max_length:
            raise self._too_long()
        if len(normalised) < self.min_length:
            raise PasswordRejected(
                "too_short", f"Choose a password of at least {self.min_length} characters."
            )
        folded = canonical(normalised)
        if any(identity and folded == canonical(identity) for identity in (username, pass_number)):
            raise PasswordRejected(
                "matches_identity", "Your password cannot be your username or pass number."
            )
        if is_common(normalised):
            raise PasswordRejected(
                "common",
                "This password is on the list of commonly used passwords; choose another.",
            )

    def _too_long(self) -> PasswordRejected:
        return PasswordRejected(
            "too_long", f"Choose a password of at most {self.max_length} characters."
        )


def is_common(password: str) -> bool:
    """True when ``password`` is on the shipped list of common passwords, ignoring case."""
    return canonical(password) in _common_passwords()


@functools.cache
def _common_passwords() -> frozenset[str]:
    """The blocklist, read once on first use (about 50,000 entries, a few megabytes)."""
    packed = resources.files("auth").joinpath(COMMON_PASSWORDS_FILE).read_bytes()
    lines = gzip.decompress(packed).decode("utf-8").splitlines()
    start = 0
    while start < len(lines) and lines[start].startswith(_HEADER_PREFIX):
        start += 1
    # The file is already folded; folding again keeps the comparison right for any list.
    return frozenset(canonical(line) for line in lines[start:] if line)
