"""The key that encrypts staff members' TOTP secrets at rest, derived from the cookie keys.

Each cookie key (GATEWAY_COOKIE_KEYS, or the key file in the data dir) gives a key of its
own for this purpose through HKDF-SHA256 with a label no other use shares, so a TOTP secret's
ciphertext can never pass for a session cookie, a device cookie or a stored signing key, and
no other use of the cookie keys can decrypt it. The derived keys keep the cookie keys' order:
the first encrypts, every one decrypts, so a cookie-key rotation needs nothing else (each
successful TOTP sign-in re-encrypts its secret under the newest key: `SecretBox.renew`).

The cookie keys reach the gateway as Fernet objects; their key material is read back from
them here, in this one place (tests/test_staff_factors.py checks the derivation against the
key's text, so a change in the cryptography package cannot slip by).
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

LABEL = b"library-gateway/staff-factor-secrets/v1"


class SecretUnreadable(Exception):
    """A stored secret none of the current cookie keys can decrypt (the key that made it
    was dropped from GATEWAY_COOKIE_KEYS): the factor must be enrolled again."""


def derive(raw_key: bytes, label: bytes = LABEL) -> Fernet:
    """The Fernet key derived from one cookie key's 32 raw bytes for `label`."""
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(raw_key)
    return Fernet(base64.urlsafe_b64encode(derived))


def _raw(fernet: Fernet) -> bytes:
    return fernet._signing_key + fernet._encryption_key


class SecretBox:
    """Encrypts and decrypts factor secrets with the keys derived from the cookie keys."""

    def __init__(self, cookie_keys: MultiFernet, label: bytes = LABEL) -> None:
        self._keys = MultiFernet([derive(_raw(key), label) for key in cookie_keys._fernets])

    def seal(self, secret: str) -> bytes:
        return self._keys.encrypt(secret.encode("ascii"))

    def open(self, sealed: bytes) -> str:
        try:
            return self._keys.decrypt(sealed).decode("ascii")
        except (InvalidToken, UnicodeError) as exc:
            raise SecretUnreadable from exc

    def renew(self, sealed: bytes) -> bytes:
        """The same secret sealed under the newest key."""
        try:
            return self._keys.rotate(sealed)
        except InvalidToken as exc:
            raise SecretUnreadable from exc
