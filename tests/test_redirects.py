"""Where a login may send the patron: only back to a page of this host."""

from __future__ import annotations

import codecs
import itertools
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import pytest

from auth.pages.redirects import MAX_NEXT_LENGTH, safe_next

CORPUS = Path(__file__).parent / "data" / "open_redirects.txt"
BASE = "https://login.library.example/auth/login"


def _attacks() -> list[str]:
    """The corpus lines, decoded as the file's header describes."""
    attacks = []
    for line in CORPUS.read_text(encoding="ascii").splitlines():
        if not line or line.startswith("# "):
            continue
        attacks.append(codecs.decode(line, "unicode_escape"))
    return attacks


ATTACKS = _attacks()


def test_corpus_is_substantial_and_decoded() -> None:
    assert len(ATTACKS) >= 150
    # The escapes really became characters: a raw tab and a raw backslash are in there.
    assert "/\t/evil.com" in ATTACKS
    assert "/\\evil.com" in ATTACKS


@pytest.mark.parametrize("attack", ATTACKS, ids=ascii)
def test_every_known_attack_falls_back_to_root(attack: str) -> None:
    assert safe_next(attack) == "/"


@pytest.mark.parametrize(
    "value",
    [
        "/",
        "/catalogue/search?q=a&b=c",
        "/reservations/",
        "/digital/book%20one",
        "/catalogue/search?q=M\u00fcller",
        "/catalogue/%E6%9D%B1%E4%BA%AC",
        "/catalogue/\u6771\u4eac",
        "/@evil.com",
        "/javascript:alert(1)",
        "/catalogue/a%2Fb",
        "/catalogue#holdings",
        "/catalogue/search?next=//evil.com",
        "/auth/account",
        "/auth/loginhelp",
        "/reservations/opening-hours?day=mon&lang=en",
    ],
)
def test_local_paths_are_kept_with_their_query(value: str) -> None:
    assert safe_next(value) == value


@pytest.mark.parametrize("value", [None, ""])
def test_missing_value_gives_the_default(value: str | None) -> None:
    assert safe_next(value) == "/"
    assert safe_next(value, default="/catalogue/") == "/catalogue/"


def test_refused_value_gives_the_callers_default() -> None:
    assert safe_next("//evil.com", default="/reservations/") == "/reservations/"


def test_length_limit_is_exact() -> None:
    longest = "/" + "a" * (MAX_NEXT_LENGTH - 1)
    assert safe_next(longest) == longest
    assert safe_next(longest + "a") == "/"


def test_percent_encoding_nested_too_deep_is_refused() -> None:
    # Harmless at every level ("/aA" in the end), but no page of ours is encoded five times.
    assert safe_next("/a%" + "25" * 4 + "41") == "/"
    assert safe_next("/a%" + "25" * 2 + "41") == "/a%252541"


def _browser_readings(value: str) -> list[str]:
    """How lenient clients may read a Location value: stripped, slashed and decoded."""
    stripped = "".join(c for c in value if c not in "\t\n\r").replace("\\", "/")
    return [value, stripped, unquote(stripped), unquote(unquote(stripped))]


# Small building blocks of the known attacks; every sequence of up to four of them is tried.
_PIECES = ["/", "\\", "%2f", "%5c", ".", "%2e", "\t", " ", "@", ":", "evil.com", "%09", "\uff0f"]


def test_no_combination_of_attack_pieces_leaves_the_host() -> None:
    accepted = 0
    for size in range(1, 5):
        for pieces in itertools.product(_PIECES, repeat=size):
            value = "/" + "".join(pieces)
            result = safe_next(value)
            if result == "/":
                continue
            accepted += 1
            assert result == value
            for reading in _browser_readings(result):
                target = urlsplit(urljoin(BASE, reading))
                assert target.netloc == "login.library.example", (value, reading)
                assert not target.path.startswith("//"), (value, reading)
    # The check above must have had something to check.
    assert accepted > 100
