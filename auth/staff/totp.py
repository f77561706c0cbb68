"""TOTP (RFC 6238) as a staff member's second factor: a secret, the code it gives at a time
step, and the decision whether a typed code is accepted. Pure: the clock and the last step
accepted are arguments, the database keeps the rest.

A code of the current 30-second step or the one either side is accepted (clocks drift), but
never one of a step at or before the last step accepted for the factor: a code seen over a
shoulder, or replayed from a logged form, cannot be used again, not even within its own step.
"""

from __future__ import annotations

import hmac
import io

import pyotp
import qrcode
import qrcode.image.svg

STEP = 30
DIGITS = 6
DRIFT = 1  # steps accepted either side of the current one


def new_secret() -> str:
    """160 random bits, base32 (what authenticator apps expect)."""
    return pyotp.random_base32()


def step_at(now: float) -> int:
    return int(now // STEP)


def code_at(secret: str, step: int) -> str:
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP).generate_otp(step)


def normalised(code: str) -> str | None:
    """A typed code without the spaces apps show in the middle; None when it cannot be one."""
    code = "".join(code.split())
    if len(code) != DIGITS or not (code.isascii() and code.isdigit()):
        return None
    return code


def matching_step(secret: str, code: str, now: float, last_step: int | None) -> int | None:
    """The time step whose code `code` is, if it is accepted now; else None."""
    typed = normalised(code)
    if typed is None:
        return None
    current = step_at(now)
    found = None
    for step in range(current - DRIFT, current + DRIFT + 1):
        if last_step is not None and step <= last_step:
            continue
        # Every candidate is compared, in constant time each, whether or not one matched.
        if hmac.compare_digest(code_at(secret, step), typed) and found is None:
            found = step
    return found


def provisioning_uri(secret: str, account: str, issuer: str) -> str:
    """The otpauth:// URI an authenticator app reads from the QR code."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP).provisioning_uri(
        name=account, issuer_name=issuer
    )


def qr_svg(data: str) -> str:
    """`data` as a QR code: an inline SVG element (no image file, no Pillow), hidden from
    screen readers: the page gives the secret as text beside it."""
    image = qrcode.make(
        data,
        image_factory=qrcode.image.svg.SvgPathImage,
        box_size=8,
        error_correction=qrcode.constants.ERROR_CORRECT_M,
    )
    out = io.BytesIO()
    image.save(out)
    svg = out.getvalue().decode("utf-8")
    svg = svg[svg.index("<svg") :]
    return svg.replace("<svg ", '<svg class="qr" aria-hidden="true" focusable="false" ', 1)
