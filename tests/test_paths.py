"""The canonical path: what gets refused, how the rest is spelled, and that it is stable."""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.proxy.paths import MAX_PATH_LENGTH, BadPath, normalise

# No example database: it would write a .hypothesis directory into the working tree.
quick = settings(database=None, max_examples=400, deadline=None)


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ("/", "/"),
        ("/catalogue/search", "/catalogue/search"),
        ("/catalogue/", "/catalogue/"),
        ("//catalogue///search//", "/catalogue/search/"),
        ("//", "/"),
        ("/%41%62c", "/Abc"),
        ("/%7e%2D%5F%2E1", "/~-_.1"),
        ("/100%25", "/100%25"),
        ("/a%20b", "/a%20b"),
        ("/a b", "/a%20b"),
        ("/caf%c3%a9", "/caf%C3%A9"),
        ("/café", "/caf%C3%A9"),
        ("/%e6%9b%b8", "/%E6%9B%B8"),
        ("/a:b@c;d=e,f+g!h$i&j'k(l)m*n", "/a:b@c;d=e,f+g!h$i&j'k(l)m*n"),
        ("/a%3Bv=1", "/a;v=1"),
        ('/"<>^`{|}', "/%22%3C%3E%5E%60%7B%7C%7D"),
        ("/.well-known/jwks.json", "/.well-known/jwks.json"),
        ("/a/.hidden/...x/..b", "/a/.hidden/...x/..b"),
        ("/x;..", "/x;.."),
    ],
)
def test_paths_are_spelled_one_way(raw: str, path: str) -> None:
    assert normalise(raw) == (path, "")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/search?q=tolkien&page=2", ("/search", "q=tolkien&page=2")),
        ("/search?", ("/search", "")),
        ("/search?a?b", ("/search", "a?b")),
        ("/search?q=%2e%2e/../%2F", ("/search", "q=%2e%2e/../%2F")),
        ("/%41?%41", ("/A", "%41")),
    ],
)
def test_the_query_is_split_off_at_the_first_question_mark_and_kept_verbatim(
    raw: str, expected: tuple[str, str]
) -> None:
    assert normalise(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "/catalogue/../reservations",
        "/catalogue/./reservations",
        "/catalogue/..",
        "/..",
        "/.",
        "/catalogue/%2e%2e/reservations",
        "/catalogue/%2E%2e/x",
        "/catalogue/.%2e/x",
        "/catalogue/%2e/x",
        "/catalogue/..%2f..",
        "/catalogue/%2fetc",
        "/catalogue/%2Fetc",
        "/catalogue/..;/x",
        "/catalogue/.;jsessionid=1/x",
        "/catalogue/%2e%2e;x/y",
        "/catalogue/%2e%2e%3bx/y",
        "/catalogue\\..\\x",
        "/catalogue/%5c..%5cx",
        "/catalogue/.. /x",
        "/catalogue/.../x",
        "/catalogue/%c0%ae%c0%ae/x",
        "/catalogue/%e0%80%ae/x",
        "/catalogue/\uff0e\uff0e/x",
        "/catalogue/%ef%bc%8e%ef%bc%8e/x",
        "/catalogue/\u2025/x",
        "/catalogue/a\uff0fb",
        "/catalogue/a%ef%bc%bcb",
    ],
)
def test_every_spelling_of_a_climb_out_of_the_prefix_is_refused(raw: str) -> None:
    with pytest.raises(BadPath):
        normalise(raw)


@pytest.mark.parametrize(
    "raw",
    [
        "/catalogue/%00",
        "/catalogue/a%00.html",
        "/catalogue/%0d%0aSet-Cookie:%20x=1",
        "/catalogue/%7f",
        "/catalogue/%1b[31m",
        "/catalogue/\x01",
        "/catalogue/\t",
        "/catalogue?a\r\nInjected: 1",
        "/catalogue?a b",
    ],
)
def test_control_characters_are_refused(raw: str) -> None:
    with pytest.raises(BadPath, match="control character"):
        normalise(raw)


@pytest.mark.parametrize(
    "raw",
    ["/%zz", "/%4", "/a%", "/%%41", "/%u002e%u002e", "/%ff", "/%ed%a0%80", "/%c3", "/a\udcff"],
)
def test_malformed_escapes_and_utf8_are_refused(raw: str) -> None:
    with pytest.raises(BadPath, match=r"malformed percent-escape|not valid UTF-8"):
        normalise(raw)


@pytest.mark.parametrize(
    "raw", ["http://catalogue.example/", "https://x/a", "*", "", "catalogue", "?q=1"]
)
def test_only_origin_form_targets_are_accepted(raw: str) -> None:
    with pytest.raises(BadPath, match="must be a path starting with '/'"):
        normalise(raw)


@pytest.mark.parametrize("raw", ["/a#b", "/#", "/a?q=1#frag", "/a%23b#"])
def test_a_fragment_is_refused(raw: str) -> None:
    with pytest.raises(BadPath, match="fragment"):
        normalise(raw)


def test_an_encoded_hash_is_ordinary_data() -> None:
    assert normalise("/a%23b") == ("/a%23b", "")


def test_the_longest_accepted_path_is_8_kib() -> None:
    longest = "/" + "a" * (MAX_PATH_LENGTH - 1)
    assert normalise(longest) == (longest, "")
    with pytest.raises(BadPath, match="longer than 8192"):
        normalise(longest + "a")


def test_the_limit_also_holds_after_re_encoding() -> None:
    # 3,000 raw characters become 18,000 once percent-encoded.
    with pytest.raises(BadPath, match="longer than 8192"):
        normalise("/" + "é" * 3000)


def test_a_long_query_does_not_count_against_the_path() -> None:
    assert normalise("/a?" + "q" * MAX_PATH_LENGTH) == ("/a", "q" * MAX_PATH_LENGTH)


def test_refusal_reasons_never_echo_the_request() -> None:
    attempts = ["/<script>%zz", "/<script>/../x", "http://<script>/", "/<script>%00", "/<b>#x"]
    for raw in attempts:
        with pytest.raises(BadPath) as refused:
            normalise(raw)
        assert "<" not in str(refused.value)


# --- properties ---------------------------------------------------------------------------

# Characters that matter to the parser, weighted so that tricky combinations come up often.
_pieces = [*"/./%2eEfF5cC0a;?# \\\x00é\uff0e", "%2e", "%2F", "%c0%ae", "%5c"]
_tricky = st.lists(st.sampled_from(_pieces), max_size=20).map("".join)
_any_target = st.one_of(_tricky.map(lambda s: "/" + s), st.text(max_size=40))

_DOT_SEGMENT = re.compile(r"(?:^|/)[. ]*\.[. ]*(?:;[^/]*)?(?:/|$)")
_CANONICAL = re.compile(r"/|(?:/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-F]{2})+)+/?")


@quick
@given(_any_target)
def test_normalising_twice_changes_nothing(raw: str) -> None:
    try:
        path, _ = normalise(raw)
    except BadPath:
        return
    assert normalise(path) == (path, "")


@quick
@given(_any_target)
def test_an_accepted_path_has_no_dot_segment_encoded_slash_or_backslash(raw: str) -> None:
    try:
        path, _ = normalise(raw)
    except BadPath:
        return
    assert _CANONICAL.fullmatch(path), path
    assert not _DOT_SEGMENT.search(unquote_to_bytes(path).decode("utf-8")), path
    assert "%2F" not in path
    assert "%5C" not in path


_segment = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="/\\%?#;", min_codepoint=0x20),
    min_size=1,
    max_size=8,
).filter(lambda s: s.strip(". ") != "" and s.isprintable())


@quick
@given(st.lists(_segment, min_size=1, max_size=5), st.data())
def test_every_spelling_of_a_path_gives_the_same_result(
    segments: list[str], data: st.DataObject
) -> None:
    plain = "/" + "/".join(segments)
    spelled = ""
    for char in plain:
        if char != "/" and data.draw(st.booleans()):
            escape = "".join(f"%{b:02x}" for b in char.encode("utf-8"))
            spelled += escape.upper() if data.draw(st.booleans()) else escape
        else:
            spelled += char
    try:
        expected = normalise(plain)
    except BadPath:
        with pytest.raises(BadPath):
            normalise(spelled)
        return
    assert normalise(spelled) == expected
