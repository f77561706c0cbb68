"""The pure parts of staff sign-in, with plain asserts: the key that seals TOTP secrets (and
its derivation from the cookie keys), recovery codes, the staff networks, the CSRF token,
the session lifetimes, staff addresses, and the passkey checks refusing what no browser
would send."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json

import pytest
from cryptography.fernet import Fernet, MultiFernet

from auth.staff import csrf, passkeys, recovery
from auth.staff.model import NotAnEmail, ReasonMissing, checked_email, checked_reason
from auth.staff.networks import allowed
from auth.staff.secrets import LABEL, SecretBox, SecretUnreadable, derive
from auth.staff.sessions import Lifetimes, live


def test_the_secret_key_is_derived_from_each_cookie_key_for_this_purpose_alone() -> None:
    text = Fernet.generate_key()
    box = SecretBox(MultiFernet([Fernet(text)]))
    sealed = box.seal("JBSWY3DPEHPK3PXP")
    # The derivation from the key's own text opens it (so reading the key back from the
    # Fernet object reads the right bytes) ...
    assert derive(base64.urlsafe_b64decode(text)).decrypt(sealed) == b"JBSWY3DPEHPK3PXP"
    # ... and the cookie key itself, or another label, does not.
    with pytest.raises(Exception):  # noqa: B017
        Fernet(text).decrypt(sealed)
    with pytest.raises(Exception):  # noqa: B017
        derive(base64.urlsafe_b64decode(text), LABEL + b"x").decrypt(sealed)


def test_a_cookie_key_rotation_keeps_the_secrets_readable_and_renews_them() -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()
    sealed = SecretBox(MultiFernet([Fernet(old)])).seal("SECRET")
    rotated = SecretBox(MultiFernet([Fernet(new), Fernet(old)]))
    assert rotated.open(sealed) == "SECRET"
    renewed = rotated.renew(sealed)
    assert SecretBox(MultiFernet([Fernet(new)])).open(renewed) == "SECRET"
    with pytest.raises(SecretUnreadable):
        SecretBox(MultiFernet([Fernet(new)])).open(sealed)
    with pytest.raises(SecretUnreadable):
        rotated.open(b"garbage")


def test_recovery_codes_are_80_bits_and_forgive_typing() -> None:
    codes = recovery.new_codes()
    assert len(codes) == 10 and len(set(codes)) == 10
    assert all(len(code) == 19 and code.count("-") == 3 for code in codes)
    code = codes[0]
    assert recovery.normalised(code.upper().replace("-", " ")) == code.replace("-", "")
    assert recovery.code_hash("id", code) == recovery.code_hash("id", code.upper())
    assert recovery.code_hash("id", code) != recovery.code_hash("other", code)
    assert recovery.normalised("0o1i-l000-0000-0000") == "0011100000000000"
    for bad in ("", "short", "x" * 16 + "y", "ü" * 16, "0000-0000-0000-000u"):
        assert recovery.normalised(bad) is None


def test_the_staff_networks() -> None:
    nets = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32"))
    assert allowed("10.1.2.3", nets)
    assert allowed("::ffff:10.1.2.3", nets)
    assert allowed("2001:db8::1", nets)
    assert not allowed("11.0.0.1", nets)
    assert not allowed("unknown", nets)
    assert not allowed(None, nets)
    assert not allowed("", nets)
    assert allowed("203.0.113.1", ())  # none configured: no limit


def test_a_csrf_token_is_the_browsers_own() -> None:
    mine, theirs = "a" * 43, "b" * 43
    assert csrf.valid(mine, csrf.token_for(mine))
    assert not csrf.valid(theirs, csrf.token_for(mine))
    assert not csrf.valid(None, csrf.token_for(mine))
    assert not csrf.valid(mine, "")
    assert not csrf.valid(mine, None)


def test_when_a_staff_session_ends() -> None:
    limits = Lifetimes(idle=900, absolute=8 * 3600, pending=600)
    now = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)

    def ago(seconds: float) -> dt.datetime:
        return now - dt.timedelta(seconds=seconds)

    assert live("full", ago(3600), ago(60), now, limits)
    assert not live("full", ago(3600), ago(900), now, limits)  # idle
    assert not live("full", ago(8 * 3600), ago(1), now, limits)  # absolute
    assert live("password", ago(500), ago(1), now, limits)
    assert not live("password", ago(600), ago(1), now, limits)  # a pending step is short
    assert not live("enrol", ago(601), ago(1), now, limits)
    assert not live("full", ago(-3600), ago(-3600), now, limits)  # from the future


def test_staff_addresses_and_reasons() -> None:
    assert checked_email("  a.b@library.example.org ") == "a.b@library.example.org"
    for bad in (
        "",
        "no-at",
        "a@b",
        "a b@c.org",
        "a@b.org\r\nBcc: x@y.org",
        "x</script>@y.org",
        "<a@b.org>",
    ):
        with pytest.raises(NotAnEmail):
            checked_email(bad)
    assert checked_reason("  lost   phone ") == "lost phone"
    assert checked_reason("lost\r\nphone") == "lost phone"  # one line, whatever was typed
    # Characters that show nothing, or turn what follows around, have no place on the trail
    # an admin reads (a reason could otherwise pass for another).
    for bad in (
        "",
        "  ",
        "no",
        "x" * 301,
        "lost\x1b[2Jphone",
        "lost \u202eenohp",
        "\u200b\u200b\u200b",
    ):
        with pytest.raises(ReasonMissing):
            checked_reason(bad)


@pytest.mark.parametrize(
    "credential",
    [
        "",
        "not json",
        "[]",
        "{}",
        '{"id": "AA", "rawId": "AA", "type": "public-key", "response": {}}',
        "x" * 20000,
    ],
)
def test_passkey_answers_no_browser_would_send_are_refused(credential: str) -> None:
    rp = passkeys.RelyingParty.for_public_url("http://localhost:8080", "Library staff")
    assert rp.id == "localhost" and rp.origin == "http://localhost:8080"
    with pytest.raises(passkeys.PasskeyRefused):
        passkeys.verify_registration(rp, credential, b"challenge")
    with pytest.raises(passkeys.PasskeyRefused):
        passkeys.verify_authentication(rp, credential, b"challenge", b"key", 0)


def test_registration_options_name_the_relying_party_and_exclude_known_keys() -> None:
    rp = passkeys.RelyingParty.for_public_url("https://login.library.example.org", "Library staff")
    options, challenge = passkeys.registration_options(
        rp,
        passkeys.user_handle("3f1c2d4e-0000-4000-8000-000000000001"),
        "a@library.example.org",
        [passkeys.KnownPasskey(b"\x01\x02", ("internal", "nonsense"))],
    )
    parsed = json.loads(options)
    assert parsed["rp"] == {"id": "login.library.example.org", "name": "Library staff"}
    assert parsed["attestation"] == "none"
    assert parsed["excludeCredentials"] == [
        {"id": "AQI", "type": "public-key", "transports": ["internal"]}
    ]
    assert len(challenge) >= 16
