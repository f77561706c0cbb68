"""Where a login may send the patron afterwards.

The login form carries a ``next`` value so that a patron lands back on the page that asked
them to log in. Anyone can put any ``next`` into a link, so an unchecked value turns the
library's own login page into a trusted-looking bounce to a phishing site (CWE-601).

``safe_next`` is the single gate: it keeps a value only when every reading of it — as sent,
after each round of percent-decoding, and after Unicode NFKC — is a plain path on this host,
and answers the fallback otherwise. Browsers are generous readers (they drop tab, CR and LF
anywhere in a URL, treat ``\\`` like ``/`` and resolve dot segments), so the rules are written
to be stricter than any browser rather than to imitate one. The function is pure: no request,
no settings, so the whole attack corpus runs against it with plain asserts.
"""

from __future__ import annotations

import unicodedata
from urllib.parse import unquote

from auth import urls

__all__ = ["MAX_NEXT_LENGTH", "safe_next"]

#: Longer values are refused outright; no page of ours needs more, and it bounds the work.
MAX_NEXT_LENGTH = 2048

# Percent-encoding nested deeper than this is only ever an attempt to outlast a checker.
_MAX_DECODE_ROUNDS = 4

# Pages that would send the patron straight back into the login (or out of it): a redirect
# loop at best, a forced logout at worst.
_LOOP_PATHS = (urls.LOGIN, urls.LOGOUT)

# Characters that look like a slash or backslash without being one. Some of them become a
# real slash under NFKC (caught there too); the others are listed because a human, or a
# lenient URL library, may still read them as separators.
_SLASH_LOOKALIKES = frozenset(
    "\u2044"  # FRACTION SLASH
    "\u2215"  # DIVISION SLASH
    "\u2216"  # SET MINUS
    "\u2571"  # BOX DRAWINGS LIGHT DIAGONAL UPPER RIGHT TO LOWER LEFT
    "\u2572"  # BOX DRAWINGS LIGHT DIAGONAL UPPER LEFT TO LOWER RIGHT
    "\u27cb"  # MATHEMATICAL RISING DIAGONAL
    "\u27cd"  # MATHEMATICAL FALLING DIAGONAL
    "\u29f5"  # REVERSE SOLIDUS OPERATOR
    "\u29f8"  # BIG SOLIDUS
    "\u29f9"  # BIG REVERSE SOLIDUS
    "\u3031"  # VERTICAL KANA REPEAT MARK (drawn as a long slash; old browsers read "//")
    "\u3035"  # VERTICAL KANA REPEAT MARK LOWER HALF
    "\ufe68"  # SMALL REVERSE SOLIDUS
    "\uff0f"  # FULLWIDTH SOLIDUS
    "\uff3c"  # FULLWIDTH REVERSE SOLIDUS
)


def safe_next(value: str | None, default: str = "/") -> str:
    """Return ``value`` when it is a safe local path (query string kept), else ``default``."""
    if not value or len(value) > MAX_NEXT_LENGTH:
        return default
    if not all(_raw_char_ok(char) for char in value):
        return default
    readings = _readings(value)
    if readings is None:
        return default
    for reading in readings:
        if not all(_decoded_char_ok(char) for char in reading):
            return default
        if not _is_local_path(_path_part(reading)):
            return default
    return value


def _readings(value: str) -> list[str] | None:
    """Every form of ``value`` a browser or a later hop might act on, or None if too deep."""
    layers = [value]
    for _ in range(_MAX_DECODE_ROUNDS):
        # Invalid UTF-8 decodes to U+FFFD, which is inert; valid bytes show their meaning.
        decoded = unquote(layers[-1], errors="replace")
        if decoded == layers[-1]:
            break
        layers.append(decoded)
    else:
        return None
    # NFKC turns FULLWIDTH SOLIDUS into "/" and the like; read those forms too.
    return layers + [unicodedata.normalize("NFKC", layer) for layer in layers]


def _path_part(reading: str) -> str:
    """The path of a reading: everything before the first ``?`` or ``#``."""
    for separator in "?#":
        reading = reading.split(separator, 1)[0]
    return reading


def _is_local_path(path: str) -> bool:
    """A path-absolute reference that stays on this host and does not lead back to login."""
    # Browsers read a backslash as a slash in http(s) URLs, so judge the slash form.
    path = path.replace("\\", "/")
    if not path.startswith("/"):
        return False
    if path == "/":
        return True
    segments = path[1:].split("/")
    # No empty segment ("//host", "/a//b") and no dot segment ("/.//host", "/x/../.."):
    # either can collapse into a network-path reference once something normalises it.
    # Only the very last segment may be empty, which is a trailing slash.
    for index, segment in enumerate(segments):
        if segment in (".", ".."):
            return False
        if segment == "" and index != len(segments) - 1:
            return False
    folded = path.casefold()
    return not any(folded == loop or folded.startswith(loop + "/") for loop in _LOOP_PATHS)


def _raw_char_ok(char: str) -> bool:
    """A character allowed in ``next`` exactly as it arrived."""
    if char.isascii():
        # Printable ASCII without space and backslash: browsers strip or rewrite the rest.
        return "!" <= char <= "~" and char != "\\"
    return _non_ascii_ok(char)


def _decoded_char_ok(char: str) -> bool:
    """A character allowed once percent-decoded: an encoded space is a real path character."""
    if char.isascii():
        return " " <= char <= "~"
    return _non_ascii_ok(char)


def _non_ascii_ok(char: str) -> bool:
    """Letters and marks of any script, but nothing invisible and nothing that acts as ASCII."""
    if char in _SLASH_LOOKALIKES:
        return False
    category = unicodedata.category(char)
    # C*: control, format (bidi overrides, zero-width), surrogate, private use, unassigned.
    # Z*: every space and line or paragraph separator.
    if category[0] in "CZ":
        return False
    # A character that NFKC turns into ASCII punctuation (FULLWIDTH COLON, SMALL AMPERSAND)
    # changes the URL's structure for anyone who normalises; letters and digits are harmless.
    folded = unicodedata.normalize("NFKC", char)
    return all(not c.isascii() or c.isalnum() for c in folded)
