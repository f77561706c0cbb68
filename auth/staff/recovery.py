"""One-time recovery codes: ten a staff member, shown once, each good for one sign-in when
the second factor is lost. Pure: making codes, reading a typed one, the stored hash.

A code is 16 characters of Crockford's base32 (80 random bits), shown in groups of four.
Only a SHA-256 of the code, salted with the member's id, is stored: 80 bits cannot be
searched, so no slow hash is needed. Reading a typed code forgives what people mistype:
case, spaces and dashes, and the letters Crockford's alphabet leaves out for looking like
digits (o for 0, i and l for 1).
"""

from __future__ import annotations

import hashlib
import secrets

COUNT = 10
LENGTH = 16
_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_LOOKALIKES = str.maketrans({"o": "0", "i": "1", "l": "1"})


def new_codes(count: int = COUNT) -> list[str]:
    codes = ["".join(secrets.choice(_ALPHABET) for _ in range(LENGTH)) for _ in range(count)]
    return [shown(code) for code in codes]


def shown(code: str) -> str:
    return "-".join(code[i : i + 4] for i in range(0, len(code), 4))


def normalised(typed: str) -> str | None:
    """The code typed, as stored; None when it cannot be a code."""
    code = "".join(typed.lower().replace("-", " ").split()).translate(_LOOKALIKES)
    if len(code) != LENGTH or any(c not in _ALPHABET for c in code):
        return None
    return code


def code_hash(staff_id: str, code: str) -> bytes:
    """The stored form of a code (as `new_codes` shows it, or as `normalised` reads it)."""
    plain = normalised(code)
    if plain is None:
        raise ValueError("not a recovery code")
    return hashlib.sha256(f"{staff_id}:{plain}".encode("ascii")).digest()
