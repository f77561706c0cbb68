"""One canonical form of the request path, used both to pick a route and to call the backend.

A proxy that matches on one spelling of a path and forwards another is the classic way past
its access rules: the router sees `/public/..%2fadmin`, the backend serves `/admin`. So the
gateway decodes the path once, refuses everything that different servers read differently
(dot segments in any spelling, encoded slashes, backslashes, control characters, malformed
escapes or UTF-8), and re-encodes what is left with one fixed set of safe characters. The
router and the backend then see the very same string, and feeding that string back in gives
it back unchanged.

We refuse rather than resolve `..`: browsers resolve dot segments before sending, so only
scanners and attacks send them, and resolving them would make the gateway guess which
server's rules to follow.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import unquote_to_bytes

MAX_PATH_LENGTH = 8192
"""Longest path accepted, raw or normalised, in characters (the query is not counted)."""

# RFC 3986 pchar without '%': unreserved, sub-delims, ':' and '@'. Everything else is
# percent-encoded on the way out, so the output alphabet is this set, '/' and '%XX'.
_PCHAR = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@"
_PCHAR_CLASS = "[" + re.escape(_PCHAR) + "]"

# The common case: '/'-separated non-empty segments of safe characters. Such a path is its
# own normal form unless a segment is all dots before any ';params'.
_PLAIN = re.compile(f"(?:/{_PCHAR_CLASS}+)*/?")
_PLAIN_DOT_SEGMENT = re.compile(r"/\.+(?:[/;]|$)")

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ENCODED_SLASH = re.compile(r"%2[fF]")
_FORBIDDEN_BYTES = re.compile(rb"[\x00-\x1f\x7f\\]")
_QUERY_FORBIDDEN = re.compile(r"[\x00-\x20\x7f]")
# A segment of dots and spaces: '.' and '..', and what Windows servers trim down to them
# ('.. ', '...'). No real resource is named like that.
_DOT_LIKE = re.compile(rb"[. ]*\.[. ]*")

# Byte -> its spelling in the output: itself when safe, else '%XX' with uppercase hex.
_ENCODE = tuple(chr(b) if chr(b) in _PCHAR else f"%{b:02X}" for b in range(256))


class BadPath(ValueError):
    """A request target the gateway will not interpret; the message is a fixed, safe reason."""


def normalise(raw_target: str) -> tuple[str, str]:
    """Split a raw request-target into the canonical path and the verbatim query.

    `raw_target` is the target exactly as received (aiohttp's `request.raw_path`). The path
    comes back percent-encoded in canonical form, the query without its '?' ('' when absent).
    Raises BadPath with the reason when the target is refused.
    """
    if not raw_target.startswith("/"):
        raise BadPath("the request target must be a path starting with '/'")
    if "#" in raw_target:
        raise BadPath("the request target must not contain a fragment ('#')")
    path, _, query = raw_target.partition("?")
    if len(path) > MAX_PATH_LENGTH:
        raise BadPath(f"the path is longer than {MAX_PATH_LENGTH} characters")
    if query and _QUERY_FORBIDDEN.search(query):
        raise BadPath("the query contains a space or a control character")
    if _PLAIN.fullmatch(path) and ("/." not in path or not _PLAIN_DOT_SEGMENT.search(path)):
        return path, query
    return _normalise_slowly(path), query


def _normalise_slowly(path: str) -> str:
    if _BAD_ESCAPE.search(path):
        raise BadPath("the path contains a malformed percent-escape")
    if _ENCODED_SLASH.search(path):
        raise BadPath("the path contains an encoded slash (%2F)")
    try:
        # Characters outside ASCII arrive when a client sends raw UTF-8; aiohttp hands
        # undecodable bytes over as surrogate escapes, which the UTF-8 check below refuses.
        decoded = unquote_to_bytes(path.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:
        raise BadPath("the path is not valid UTF-8") from None
    if _FORBIDDEN_BYTES.search(decoded):
        raise BadPath("the path contains a control character or a backslash")
    try:
        decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise BadPath("the path is not valid UTF-8") from None

    # Encoded slashes were refused above, so splitting after decoding splits on real slashes.
    segments = [segment for segment in decoded.split(b"/") if segment]
    for segment in segments:
        _check_segment(segment)
    if not segments:
        return "/"
    encoded = "/" + "/".join("".join(map(_ENCODE.__getitem__, s)) for s in segments)
    if decoded.endswith(b"/"):
        encoded += "/"
    if len(encoded) > MAX_PATH_LENGTH:
        raise BadPath(f"the path is longer than {MAX_PATH_LENGTH} characters")
    return encoded


def _check_segment(segment: bytes) -> None:
    # Servlet containers drop ';params' before resolving, so '..;x' climbs like '..'.
    name = segment.split(b";", 1)[0]
    if _DOT_LIKE.fullmatch(name):
        raise BadPath("the path contains a '.' or '..' segment")
    if not name.isascii():
        # Servers that apply Unicode compatibility mapping (NFKC) turn the fullwidth full stop
        # U+FF0E into '.' and the fullwidth solidus U+FF0F into '/'; refuse what would become
        # a dot segment or a separator there.
        folded = unicodedata.normalize("NFKC", name.decode("utf-8"))
        if "/" in folded or "\\" in folded:
            raise BadPath("the path contains a character that some servers read as a slash")
        if _DOT_LIKE.fullmatch(folded.split(";", 1)[0].encode("utf-8")):
            raise BadPath("the path contains a '.' or '..' segment")
