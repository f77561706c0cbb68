"""Username rules: length, visible characters, one name per look, no borrowed pass numbers."""

from __future__ import annotations

import re

import pytest

from auth.credentials.usernames import (
    DEFAULT_PASS_NUMBER_PATTERN,
    UsernameRejected,
    canonical,
    check_username,
    looks_like_pass_number,
)

DIGITS = re.compile(DEFAULT_PASS_NUMBER_PATTERN)
OWN = "20481234"


def check(name: str, *, own: str = OWN, pattern: re.Pattern[str] = DIGITS) -> str:
    return check_username(name, own_pass_number=own, pass_number_pattern=pattern)


def rejected(name: str, *, own: str = OWN, pattern: re.Pattern[str] = DIGITS) -> str:
    with pytest.raises(UsernameRejected) as caught:
        check(name, own=own, pattern=pattern)
    assert caught.value.message  # a sentence for the patron, not just a code
    assert str(caught.value) == caught.value.message
    return caught.value.code


@pytest.mark.parametrize(
    "name", ["ann", "reader_42", "Anna-Lena.M", "J\u00fcrgen", "\u674e\u5c0f\u9f8d"]
)
def test_ordinary_names_are_kept_as_typed(name: str) -> None:
    assert check(name) == name


def test_length_is_three_to_sixty_four_characters() -> None:
    assert check("abc") == "abc"
    assert check("a" * 64) == "a" * 64
    assert rejected("ab") == "length"
    assert rejected("") == "length"
    assert rejected("a" * 65) == "length"
    assert rejected("a" * 100_000) == "length"


def test_length_is_counted_after_nfkc() -> None:
    # U+FB03 (the "ffi" ligature) is one code point typed, three after NFKC.
    assert check("\ufb03") == "ffi"
    assert rejected("\ufb03" * 22) == "length"  # 66 after NFKC
    # "e" + combining acute composes into one character.
    assert rejected("e\u0301e") == "length"


def test_display_form_is_nfkc() -> None:
    assert check("\uff4a\uff41\uff4e") == "jan"  # full-width letters
    assert check("\u2460\u2461\u2462x") == "123x"  # circled digits


@pytest.mark.parametrize(
    "name",
    [
        "ann smith",  # space
        "ann\tsmith",  # tab
        "ann\u00a0smith",  # no-break space
        "ann\u3000smith",  # ideographic space
        "ann\u2028smith",  # line separator
        "ann\nsmith",  # control
        "ann\x00smith",  # NUL
        "ann\u200bsmith",  # zero-width space
        "ann\u200dsmith",  # zero-width joiner
        "ann\ufeffsmith",  # byte-order mark
        "\u202eann",  # right-to-left override
        "ann\u2066x\u2069",  # bidi isolates
        "ann\ue000",  # private use
        "ann\U000f0000",  # supplementary private use
        "ann\ud800",  # lone surrogate
        "ann\U000e0001",  # language tag (format)
        "ann\u0378",  # unassigned
        " ann",  # leading space is not stripped silently
        "ann ",
    ],
    ids=ascii,
)
def test_invisible_and_unassigned_characters_are_refused(name: str) -> None:
    assert rejected(name) == "characters"


def test_canonical_folds_case_and_compatibility_forms() -> None:
    assert canonical("Jan") == canonical("JAN") == canonical("\uff2a\uff41\uff4e") == "jan"
    assert canonical("stra\u00dfe") == canonical("STRASSE") == "strasse"
    assert canonical("\u212aarl") == canonical("karl")  # KELVIN SIGN
    assert canonical("\u2126mega") == canonical("\u03c9mega")  # OHM SIGN
    assert canonical("\u017fam") == canonical("sam")  # LONG S


def test_canonical_strips_nothing() -> None:
    assert canonical(" jan ") == " jan "
    assert canonical("jan\u200b") != canonical("jan")


@pytest.mark.parametrize("name", ["Jan", "stra\u00dfe", "\u1e9e", "\u0345", "\ufb03", "\u212aarl"])
def test_canonical_is_idempotent(name: str) -> None:
    assert canonical(canonical(name)) == canonical(name)


def test_kelvin_sign_name_is_stored_as_its_nfkc_letter() -> None:
    assert check("\u212aarl") == "Karl"


@pytest.mark.parametrize(
    "name",
    [
        "12345678",
        "\uff11\uff12\uff13\uff14\uff15",  # full-width digits
        "\u0661\u0662\u0663\u0664",  # Arabic-Indic digits
        "\u0967\u0968\u0969",  # Devanagari digits
    ],
    ids=ascii,
)
def test_names_that_read_as_a_pass_number_are_detected(name: str) -> None:
    assert looks_like_pass_number(name, DIGITS)


@pytest.mark.parametrize("name", ["reader42", "42reader", "1234 5", "\u00bd12"], ids=ascii)
def test_names_with_letters_do_not_read_as_a_pass_number(name: str) -> None:
    assert not looks_like_pass_number(name, DIGITS)


def test_someone_elses_pass_number_is_refused() -> None:
    assert rejected("99999999") == "pass_number"
    assert rejected("\uff19\uff19\uff19") == "pass_number"
    # Written in another script's digits, the owner's own number is still not theirs to
    # take as spelled: it is not their pass number as the library knows it.
    assert rejected("\u0662\u0660\u0664\u0668\u0661\u0662\u0663\u0664") == "pass_number"


def test_own_pass_number_is_allowed_also_in_full_width() -> None:
    assert check(OWN) == OWN
    assert check("\uff12\uff10\uff14\uff18\uff11\uff12\uff13\uff14") == OWN


def test_pass_number_pattern_is_configurable_and_case_blind() -> None:
    pattern = re.compile(r"^L[0-9]{6}$")
    assert check("l999999", own="X1", pattern=DIGITS) == "l999999"
    assert rejected("l999999", own="L123456", pattern=pattern) == "pass_number"
    assert check("l123456", own="L123456", pattern=pattern) == "l123456"
    assert check("12345", own="L123456", pattern=pattern) == "12345"
