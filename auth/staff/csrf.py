"""CSRF tokens of the console's forms: derived from a secret only the browser's own cookie
holds (the staff session's token, or before there is a session the form cookie), so a page
of another site can neither read nor make one. Both cookies are SameSite=Strict as well: the
token is the second lock. Pure."""

from __future__ import annotations

import base64
import hashlib
import hmac

FIELD = "csrf_token"
_LABEL = b"library-gateway/staff-csrf/v1"


def token_for(secret: str) -> str:
    mac = hmac.new(secret.encode("ascii", "replace"), _LABEL, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def valid(secret: str | None, sent: object) -> bool:
    if not secret or not isinstance(sent, str) or not sent:
        return False
    return hmac.compare_digest(token_for(secret).encode(), sent.encode("utf-8", "replace"))
