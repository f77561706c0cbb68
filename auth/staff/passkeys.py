"""Passkeys (WebAuthn) as a staff member's second factor: the options a browser needs for
the two ceremonies, and the checks of what it sends back, with the `webauthn` package.

The relying party is the gateway's public host (GATEWAY_PUBLIC_URL): its host name is the
RP ID, the public URL the only origin accepted. Attestation is not asked for (none): a
passkey proves possession of its key, and staff choose their own authenticators. The
password comes first, so the passkey is a second factor and user verification is only
preferred. Everything the browser sends is untrusted: any failure to parse or verify it is
one `PasskeyRefused`, converted here from whatever the library raised.
"""

from __future__ import annotations

import ipaddress
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import webauthn
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

TIMEOUT_MS = 120_000
MAX_CREDENTIAL_JSON = 12 * 1024
_TRANSPORTS = {transport.value: transport for transport in AuthenticatorTransport}


class PasskeyRefused(Exception):
    """What the browser sent is not a valid answer to the challenge."""


@dataclass(frozen=True, slots=True)
class RelyingParty:
    id: str
    name: str
    origin: str

    @property
    def usable(self) -> bool:
        """Whether browsers will hold passkeys for it: WebAuthn takes a domain name as the
        relying party's id, never an IP address (a console at http://127.0.0.1:8080, as in
        the demo, offers the authenticator app alone)."""
        try:
            ipaddress.ip_address(self.id)
        except ValueError:
            return True
        return False

    @classmethod
    def for_public_url(cls, public_url: str, name: str) -> RelyingParty:
        host = urlsplit(public_url).hostname or "localhost"
        return cls(id=host, name=name, origin=public_url.rstrip("/"))


@dataclass(frozen=True, slots=True)
class NewPasskey:
    credential_id: bytes
    public_key: bytes
    sign_count: int
    transports: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class KnownPasskey:
    credential_id: bytes
    transports: tuple[str, ...]


def _descriptors(known: Sequence[KnownPasskey]) -> list[PublicKeyCredentialDescriptor]:
    return [
        PublicKeyCredentialDescriptor(
            id=key.credential_id,
            transports=[_TRANSPORTS[t] for t in key.transports if t in _TRANSPORTS] or None,
        )
        for key in known
    ]


def registration_options(
    rp: RelyingParty, user_id: bytes, email: str, existing: Sequence[KnownPasskey]
) -> tuple[str, bytes]:
    """The JSON options for navigator.credentials.create(), and their challenge."""
    options = webauthn.generate_registration_options(
        rp_id=rp.id,
        rp_name=rp.name,
        user_id=user_id,
        user_name=email,
        user_display_name=email,
        timeout=TIMEOUT_MS,
        attestation=AttestationConveyancePreference.NONE,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.PREFERRED,
            user_verification=UserVerificationRequirement.PREFERRED,
        ),
        exclude_credentials=_descriptors(existing),
    )
    return webauthn.options_to_json(options), options.challenge


def authentication_options(rp: RelyingParty, allowed: Sequence[KnownPasskey]) -> tuple[str, bytes]:
    """The JSON options for navigator.credentials.get(), and their challenge."""
    options = webauthn.generate_authentication_options(
        rp_id=rp.id,
        timeout=TIMEOUT_MS,
        allow_credentials=_descriptors(allowed),
        user_verification=UserVerificationRequirement.PREFERRED,
    )
    return webauthn.options_to_json(options), options.challenge


def _parsed(credential_json: str) -> dict[str, Any]:
    if not credential_json or len(credential_json) > MAX_CREDENTIAL_JSON:
        raise PasskeyRefused("no credential, or too large")
    try:
        parsed = json.loads(credential_json)
    except ValueError as exc:
        raise PasskeyRefused("not JSON") from exc
    if not isinstance(parsed, dict):
        raise PasskeyRefused("not an object")
    return parsed


def verify_registration(rp: RelyingParty, credential_json: str, challenge: bytes) -> NewPasskey:
    parsed = _parsed(credential_json)
    try:
        verified = webauthn.verify_registration_response(
            credential=parsed,
            expected_challenge=challenge,
            expected_rp_id=rp.id,
            expected_origin=rp.origin,
        )
    except Exception as exc:  # the library raises many kinds for malformed input
        raise PasskeyRefused(type(exc).__name__) from exc
    response = parsed.get("response")
    sent = response.get("transports") if isinstance(response, dict) else None
    transports = tuple(
        t
        for t in (sent if isinstance(sent, list) else [])
        if isinstance(t, str) and t in _TRANSPORTS
    )
    return NewPasskey(
        credential_id=verified.credential_id,
        public_key=verified.credential_public_key,
        sign_count=verified.sign_count,
        transports=transports,
    )


def credential_id(credential_json: str) -> bytes:
    """The credential id an authentication answer names (to find its stored key)."""
    raw = _parsed(credential_json).get("rawId")
    if not isinstance(raw, str) or not raw:
        raise PasskeyRefused("no rawId")
    try:
        return webauthn.base64url_to_bytes(raw)
    except ValueError as exc:
        raise PasskeyRefused("rawId is not base64url") from exc


def verify_authentication(
    rp: RelyingParty, credential_json: str, challenge: bytes, public_key: bytes, sign_count: int
) -> int:
    """Check an authentication answer against the stored key; return the new sign count."""
    parsed = _parsed(credential_json)
    try:
        verified = webauthn.verify_authentication_response(
            credential=parsed,
            expected_challenge=challenge,
            expected_rp_id=rp.id,
            expected_origin=rp.origin,
            credential_public_key=public_key,
            credential_current_sign_count=sign_count,
        )
    except Exception as exc:  # the library raises many kinds for malformed input
        raise PasskeyRefused(type(exc).__name__) from exc
    return int(verified.new_sign_count)


def user_handle(staff_id: str) -> bytes:
    """The WebAuthn user handle of a staff member: their id's 16 bytes (no personal data)."""
    return uuid.UUID(staff_id).bytes
