"""Device cookies: a browser that has logged in as a patron is trusted for that patron.

After OWASP's "Slow down online guessing attacks with device cookies". A successful login
leaves a long-lived cookie in the browser that names the account, the account's device epoch
and a random nonce, sealed with the cookie keys (Fernet: encrypted and authenticated, so it
can be neither read nor forged, and it rotates with GATEWAY_COOKIE_KEYS). A login attempt
that carries a device cookie for the account it names is a *trusted* attempt: its failures
count against that device alone (its nonce), and neither the account's lockout nor the
address's limit ever stops it. Everyone else (an attacker, a new browser) is counted per
account and per address.

Revocation needs no list of devices: a password change or reset raises the account's device
epoch (`Accounts.void_devices`), and a cookie naming an older epoch vouches for nothing.

The cookie holds up to `MAX_ACCOUNTS` patrons, most recent first, because a family computer
or a library's public PC is shared. It is scoped to /auth/ (backends never see it) and is
HttpOnly, SameSite=Strict, Secure with an https public URL.

Everything here is pure: the codec reads and writes values, the caller does the I/O.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.fernet import InvalidToken, MultiFernet

from auth import urls

COOKIE_NAME = "library_device"
LIFETIME = 365 * 86400
"""Seconds a device stays trusted without a new login (a year, like OWASP's example)."""
MAX_ACCOUNTS = 5
MAX_COOKIE_BYTES = 2048


@dataclass(frozen=True, slots=True)
class Device:
    """One patron a browser has logged in as: the account, its device epoch at the time,
    and the nonce that names this browser in the throttle."""

    account_id: str
    epoch: int
    nonce: str

    @property
    def throttle_key(self) -> str:
        return f"device:{self.nonce}"


def cookie_name(secure: bool) -> str:
    # __Secure- makes browsers refuse the cookie unless it came over https with Secure.
    return f"__Secure-{COOKIE_NAME}" if secure else COOKIE_NAME


def cookie_flags(secure: bool) -> dict[str, Any]:
    """The cookie's attributes, in one place: only the /auth/ pages ever receive it."""
    return {
        "path": urls.PREFIX + "/",
        "max_age": LIFETIME,
        "secure": secure,
        "httponly": True,
        "samesite": "Strict",
    }


def trusted(devices: Sequence[Device], account_id: str, epoch: int) -> Device | None:
    """The device entry that vouches for `account_id` at its current `epoch`, if any."""
    for device in devices:
        if device.account_id == account_id and device.epoch == epoch:
            return device
    return None


def remember(devices: Sequence[Device], account_id: str, epoch: int) -> list[Device]:
    """The cookie's entries after a successful login as `account_id`: a fresh nonce for it
    (so its failure counter starts anew), first, and at most `MAX_ACCOUNTS` in all."""
    fresh = Device(account_id, epoch, secrets.token_urlsafe(16))
    others = [device for device in devices if device.account_id != account_id]
    return [fresh, *others][:MAX_ACCOUNTS]


class DeviceCodec:
    """Seals and opens the device cookie with the cookie keys; anything unreadable, old,
    oversized or malformed opens as no devices at all."""

    def __init__(self, keys: MultiFernet, *, secure: bool, lifetime: int = LIFETIME) -> None:
        self._keys = keys
        self._lifetime = lifetime
        self.cookie_name = cookie_name(secure)
        self.cookie_flags = cookie_flags(secure)

    def seal(self, devices: Sequence[Device]) -> str:
        data = [[d.account_id, d.epoch, d.nonce] for d in devices]
        return self._keys.encrypt(json.dumps(data, separators=(",", ":")).encode()).decode()

    def open(self, cookie: str | None) -> list[Device]:
        if not cookie or len(cookie) > MAX_COOKIE_BYTES:
            return []
        try:
            data = json.loads(self._keys.decrypt(cookie.encode("ascii"), ttl=self._lifetime))
        except (InvalidToken, UnicodeError, ValueError):
            return []
        if not isinstance(data, list):
            return []
        return [
            Device(entry[0], entry[1], entry[2])
            for entry in data[:MAX_ACCOUNTS]
            if isinstance(entry, list)
            and len(entry) == 3
            and isinstance(entry[0], str)
            and isinstance(entry[1], int)
            and isinstance(entry[2], str)
        ]
