"""Username rules: length, the characters a name may hold, one name per look, no borrowed pass
numbers."""

from __future__ import annotations

import re
import string
import unicodedata

import pytest

from auth.credentials.usernames import (
    ALLOWED_SIGNS,
    DEFAULT_PASS_NUMBER_PATTERN,
    UsernameRejected,
    canonical,
    character_problem,
    check_username,
    looks_like_pass_number,
    shown,
)

DIGITS = re.compile(DEFAULT_PASS_NUMBER_PATTERN)
OWN = "20481234"


def check(name: str, *, own: str = OWN, pattern: re.Pattern[str] = DIGITS) -> str:
    return check_username(name, own_pass_number=own, pass_number_pattern=pattern)


def refusal(name: str, *, own: str = OWN, pattern: re.Pattern[str] = DIGITS) -> UsernameRejected:
    with pytest.raises(UsernameRejected) as caught:
        check(name, own=own, pattern=pattern)
    assert caught.value.message  # a sentence for the patron, not just a code
    assert str(caught.value) == caught.value.message
    return caught.value


def rejected(name: str, *, own: str = OWN, pattern: re.Pattern[str] = DIGITS) -> str:
    return refusal(name, own=own, pattern=pattern).code


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


# --- Which characters: letters, marks after letters, digits, and . - _ @ -----------------------


@pytest.mark.parametrize(
    "name",
    [
        "J\u00fcrgen",  # Latin with diacritics
        "Zo\u00eb.\u00c5ngstr\u00f6m",
        "\u00c7a\u011fr\u0131",  # Turkish dotless i
        "\u041e\u043b\u044c\u0433\u0430",  # Cyrillic
        "\u0395\u03bb\u03ad\u03bd\u03b7",  # Greek
        "\u0645\u062d\u0645\u062f",  # Arabic
        "\u0639\u0644\u064a\u0664\u0662",  # Arabic with Arabic-Indic digits
        "\u05e9\u05b8\u05c1\u05dc\u05d5\u05b9\u05dd",  # Hebrew with points (marks)
        "\u674e\u5c0f\u9f8d",  # CJK
        "\u5c71\u7530\u3055\u304f\u3089",  # Kanji and hiragana
        "\uae40\ubbfc\uc900",  # Hangul
        "\u0915\u0943\u0937\u094d\u0923",  # Devanagari: vowel sign and virama (marks)
        "\u0e2a\u0e21\u0e28\u0e31\u0e01\u0e14\u0e34\u0e4c",  # Thai with vowel and tone marks
        "\u0b9a\u0bc6\u0ba8\u0bcd\u0ba4\u0bbf\u0bb2\u0bcd",  # Tamil
        "a\u0308\u0301bc",  # a mark after a mark
        "reader42",
        "42reader",
        "jan.de.vries",
        "jan-de-vries",
        "jan_de_vries",
        "jan@example.org",
        "a.b-c_d@e",
        "_jan_",
    ],
    ids=ascii,
)
def test_letters_of_any_script_marks_after_them_digits_and_four_signs_are_allowed(
    name: str,
) -> None:
    assert check(name) == unicodedata.normalize("NFKC", name)
    assert character_problem(name, own_pass_number=OWN) is None


@pytest.mark.parametrize(
    "char",
    [
        "<",
        ">",
        "&",
        '"',
        "'",
        "`",
        " ",
        "\t",
        "/",
        "\\",
        "%",
        ";",
        "=",
        "(",
        ")",
        ":",
        ",",
        "+",
        "#",
        "?",
        "!",
        "*",
        "$",
        "[",
        "]",
        "{",
        "}",
        "|",
        "~",
        "^",
        "\x00",
        "\x01",
        "\x1b",
        "\r",
        "\n",
        "\x7f",
        "\x85",  # next line (C1 control)
        "\u00a0",  # no-break space
        "\u200b",  # zero-width space
        "\u200d",  # zero-width joiner
        "\u202e",  # right-to-left override
        "\u2066",  # left-to-right isolate
        "\u2028",  # line separator
        "\u2019",  # right single quotation mark
        "\u00ab",  # guillemet
        "\u2014",  # em dash
        "\u00b7",  # middle dot
        "\u20ac",  # euro sign
        "\u00a7",  # section sign
        "\u2044",  # fraction slash
        "\U0001f600",  # emoji
    ],
    ids=ascii,
)
@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_markup_quoting_separators_controls_and_invisible_characters_are_refused(
    char: str, where: str
) -> None:
    name = {"start": f"{char}janco", "middle": f"jan{char}co", "end": f"janco{char}"}[where]
    refused = refusal(name)
    assert refused.code == "characters"
    assert refused.characters == shown(unicodedata.normalize("NFKC", char))
    assert f"(found: {refused.characters})" in refused.message


def test_of_printable_ascii_only_letters_digits_and_the_four_signs_pass() -> None:
    printable = [chr(code) for code in range(0x20, 0x7F)]
    passed = {c for c in printable if character_problem(f"ab{c}", own_pass_number=OWN) is None}
    assert passed == set(string.ascii_letters + string.digits + ALLOWED_SIGNS)
    assert ALLOWED_SIGNS == ".-_@"


def test_full_width_and_small_forms_of_refused_signs_are_refused_after_nfkc() -> None:
    # Full-width ASCII (U+FF01-FF5E) becomes ASCII under NFKC: only its letters, digits and
    # the four signs may pass, whatever the form typed.
    for code in range(0xFF01, 0xFF5F):
        plain = chr(code - 0xFEE0)
        allowed = plain.isalnum() or plain in ALLOWED_SIGNS
        assert (character_problem(f"ab{chr(code)}", own_pass_number=OWN) is None) == allowed
    for small in ("\ufe64", "\ufe65", "\ufe60", "\ufe5d"):  # small < > & (
        assert rejected(f"jan{small}co") == "characters"


def test_the_reason_names_every_character_found_once_in_order() -> None:
    refused = refusal("o'brien & o'hara")
    assert refused.characters == "' U+0020 &"
    assert refused.message == (
        "A username can only contain letters, digits and . - _ @ (found: ' U+0020 &)."
    )


def test_shown_writes_what_cannot_be_seen_as_code_points() -> None:
    assert shown("<&'") == "< & '"
    assert shown(" \t\u200b\u202e\u3164") == "U+0020 U+0009 U+200B U+202E U+3164"


@pytest.mark.parametrize(
    "name",
    [
        "ann\u3164x",  # Hangul filler (a letter by category)
        "ann\u115fx",  # Hangul choseong filler
        "ann\uffa0x",  # half-width Hangul filler
        "ann\u034fx",  # combining grapheme joiner (a mark)
        "ann\ufe0fx",  # variation selector
        "ann\U000e0100x",  # variation selector supplement
        "ann\u180bx",  # Mongolian free variation selector
        "ann\u17b4x",  # Khmer inherent vowel
    ],
    ids=ascii,
)
def test_letters_and_marks_drawn_as_nothing_are_refused(name: str) -> None:
    assert rejected(name) == "characters"


@pytest.mark.parametrize(
    "name",
    [
        "\u0301abc",  # first
        "\u0e34abc",  # a Thai vowel sign with no consonant
        "ab.\u0301c",  # on a sign
        "ab1\u0301c",  # on a digit
        "abc-\u094d",  # a virama on a sign
    ],
    ids=ascii,
)
def test_a_combining_mark_must_follow_a_letter(name: str) -> None:
    assert rejected(name) == "combining_mark"


@pytest.mark.parametrize("name", ["...", "---", "___", "@@@", "._-@", "-.-.-"])
def test_a_name_of_signs_alone_is_refused(name: str) -> None:
    assert rejected(name) == "no_letter_or_digit"


@pytest.mark.parametrize("name", ["..a", "_1_", "1.2.3", "@x@"])
def test_one_letter_or_digit_among_the_signs_is_enough(name: str) -> None:
    assert check(name) == name


def test_ones_own_pass_number_is_always_allowed_whatever_signs_the_library_put_in_it() -> None:
    own = "KB/2048-1234"
    assert check(own, own=own) == own
    assert check("kb/2048-1234", own=own) == "kb/2048-1234"
    assert character_problem(own, own_pass_number=own) is None
    # Only one's own: the same signs in another name are refused.
    assert rejected("KB/2048-1235", own=own) == "characters"
    # And never with characters nobody can see.
    assert rejected("12\u200b34", own="12\u200b34") == "characters"
    assert rejected("12 34", own="12 34") == "characters"


def test_character_problem_tells_names_from_before_the_rule_from_good_ones() -> None:
    legacy = {
        "o'brien": "'",
        "jan&co": "&",
        "<script>x</script>": "< > /",
        "jan de vries": "U+0020",
        "50%off": "%",
    }
    for name, characters in legacy.items():
        problem = character_problem(name, own_pass_number=OWN)
        assert problem is not None and problem.code == "characters"
        assert problem.characters == characters
    no_letter = character_problem("...", own_pass_number=OWN)
    assert no_letter is not None and no_letter.code == "no_letter_or_digit"
    assert no_letter.characters == ""
    for name in ("jan.de.vries", "J\u00fcrgen", OWN, "\uff4a\uff41\uff4e"):
        assert character_problem(name, own_pass_number=OWN) is None
    # Only the characters: length and pass numbers are check_username's other rules.
    assert character_problem("ab", own_pass_number=OWN) is None
    assert character_problem("99999999", own_pass_number=OWN) is None


# --- One name per look ------------------------------------------------------------------------


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


def test_every_pass_number_the_account_holds_is_its_own() -> None:
    """A patron who linked another library's pass holds several pass numbers: each one may
    be the username (also one with signs the library put in it), and no other."""
    held = (OWN, "77001234", "KB-7700/12")
    for number in held:
        assert check_username(number, own_pass_number=held, pass_number_pattern=DIGITS) == number
        assert character_problem(number, own_pass_number=held) is None
    with pytest.raises(UsernameRejected) as caught:
        check_username("99999999", own_pass_number=held, pass_number_pattern=DIGITS)
    assert caught.value.code == "pass_number"
    assert rejected("77001234") == "pass_number"  # not the account's that holds only OWN


def test_pass_number_pattern_is_configurable_and_case_blind() -> None:
    pattern = re.compile(r"^L[0-9]{6}$")
    assert check("l999999", own="X1", pattern=DIGITS) == "l999999"
    assert rejected("l999999", own="L123456", pattern=pattern) == "pass_number"
    assert check("l123456", own="L123456", pattern=pattern) == "l123456"
    assert check("12345", own="L123456", pattern=pattern) == "12345"
