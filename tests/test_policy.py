"""Password policy: long enough, not absurdly long, not common, not the patron's own name."""

from __future__ import annotations

import gzip
from importlib import resources

import pytest

from auth.credentials.password_policy import (
    COMMON_PASSWORDS_FILE,
    PasswordPolicy,
    PasswordRejected,
    is_common,
)

POLICY = PasswordPolicy()
USERNAME = "Marja.Virtanen"
PASS_NUMBER = "20481234"


def refusal(password: str, policy: PasswordPolicy = POLICY) -> str:
    with pytest.raises(PasswordRejected) as caught:
        policy.check(password, username=USERNAME, pass_number=PASS_NUMBER)
    assert str(caught.value) == caught.value.message
    return caught.value.code


def accepts(password: str, policy: PasswordPolicy = POLICY) -> bool:
    policy.check(password, username=USERNAME, pass_number=PASS_NUMBER)
    return True


def _shipped_lines() -> list[str]:
    packed = resources.files("auth").joinpath(COMMON_PASSWORDS_FILE).read_bytes()
    return gzip.decompress(packed).decode("utf-8").splitlines()


def test_shipped_list_is_large_and_names_its_source_and_licence() -> None:
    lines = _shipped_lines()
    header = [line for line in lines if line.startswith("# ")]
    entries = [line for line in lines if line and not line.startswith("# ")]
    assert len(entries) >= 10_000
    assert any("Source:" in line for line in header)
    assert any("Licence: MIT" in line for line in header)
    # The licence text travels with the list.
    licence = resources.files("auth").joinpath("data/common-passwords.LICENSE.txt")
    assert "Permission is hereby granted" in licence.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "password", ["password", "123456789", "PASSWORD", "PassWord", "qwertyuiop", "iloveyou"]
)
def test_common_passwords_are_refused_in_any_case(password: str) -> None:
    assert is_common(password)
    assert refusal(password) == "common"


def test_full_width_spelling_of_a_common_password_is_refused() -> None:
    assert refusal("\uff50\uff41\uff53\uff53\uff57\uff4f\uff52\uff44") == "common"


def test_every_shipped_entry_is_recognised() -> None:
    entries = [line for line in _shipped_lines() if line and not line.startswith("# ")]
    # Spot-check across the whole file, including the entry that starts with "#".
    for entry in [*entries[:50], *entries[::997], entries[-1], "#name?"]:
        assert is_common(entry), entry


@pytest.mark.parametrize(
    "password",
    [
        "plum orchard under november rain",
        "Kirjasto-Kortti-Kaksi-7",
        "\u6771\u4eac\u306e\u56f3\u66f8\u9928\u3067\u672c\u3092\u8aad\u3080",
        "correct horse battery staple \U0001f4da",
        "alllowercaseletters",
    ],
)
def test_long_uncommon_passwords_need_no_special_characters(password: str) -> None:
    assert not is_common(password)
    assert accepts(password)


def test_length_bounds_are_inclusive() -> None:
    assert accepts("v" + "q" * 6 + "z")  # 8
    assert refusal("vqqqqqz") == "too_short"  # 7
    assert accepts("x" * 256)
    assert refusal("x" * 257) == "too_long"
    assert refusal("") == "too_short"


def test_length_counts_code_points_after_nfkc() -> None:
    # Eight characters on screen: each "é" typed as "e" + combining accent.
    assert refusal("e\u0301" * 7) == "too_short"
    assert accepts("\u00e9\u00e0\u00fc\u00f6\u00df\u00e7\u00f1\u00f8")
    # One ligature code point becomes three letters.
    assert refusal("\ufb03" * 86) == "too_long"  # 258 after NFKC
    assert accepts("\U0001f4da" * 8)  # astral characters count once


def test_huge_input_is_refused_as_too_long() -> None:
    assert refusal("a" * 10_000_000) == "too_long"


def test_username_or_pass_number_as_password_is_refused() -> None:
    assert refusal(USERNAME) == "matches_identity"
    assert refusal(USERNAME.upper()) == "matches_identity"
    assert refusal("\uff2d\uff41\uff52\uff4a\uff41.Virtanen") == "matches_identity"
    assert refusal(PASS_NUMBER) == "matches_identity"
    assert refusal("\uff12\uff10\uff14\uff18\uff11\uff12\uff13\uff14") == "matches_identity"
    # Containing the name is fine; only the name itself is refused.
    assert accepts(USERNAME + " reads novels")


def test_limits_are_configurable() -> None:
    strict = PasswordPolicy(min_length=12, max_length=64)
    assert refusal("elevenchars", strict) == "too_short"
    assert refusal("x" * 65, strict) == "too_long"
    assert accepts("twelve chars", strict)
