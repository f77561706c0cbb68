"""The paths `auth` serves, named once: its pages register them, and the gateway reads them
here to reserve them, to send a patron to the login and to land a visitor on their account.
"""

from __future__ import annotations

PREFIX = "/auth"
LOGIN = "/auth/login"
LOGOUT = "/auth/logout"
ACCOUNT = "/auth/account"
ACCOUNT_USERNAME = "/auth/account/username"
ACCOUNT_PASSWORD = "/auth/account/password"
ACCOUNT_LINK = "/auth/account/link"
FORGOT_PASSWORD = "/auth/forgot-password"
RESET_PASSWORD = "/auth/reset-password"
FORGOT_USERNAME = "/auth/forgot-username"
ACTIVATE = "/auth/activate"
STATIC = "/auth/static"
JWKS = "/.well-known/jwks.json"
OIDC_DISCOVERY = "/.well-known/openid-configuration"
OIDC_AUTHORIZE = "/auth/oidc/authorize"
OIDC_CONSENT = "/auth/oidc/consent"
OIDC_TOKEN = "/auth/oidc/token"
OIDC_USERINFO = "/auth/oidc/userinfo"
OIDC_REVOKE = "/auth/oidc/revoke"
OIDC_INTROSPECT = "/auth/oidc/introspect"
OIDC_LOGOUT = "/auth/oidc/logout"
ACCOUNT_SESSIONS_END = "/auth/account/sessions/end"
ACCOUNT_SESSIONS_END_OTHERS = "/auth/account/sessions/end-others"

# The staff console (auth/staff): its own accounts and sessions, under a prefix of its own.
STAFF = "/staff"
STAFF_HOME = "/staff/"
STAFF_LOGIN = "/staff/login"
STAFF_LOGIN_FACTOR = "/staff/login/factor"
STAFF_LOGIN_PASSKEY = "/staff/login/passkey"
STAFF_LOGOUT = "/staff/logout"
STAFF_ACTIVATE = "/staff/activate"
STAFF_SECURITY = "/staff/security"
STAFF_SECURITY_TOTP = "/staff/security/totp"
STAFF_SECURITY_PASSKEY = "/staff/security/passkey"
STAFF_SECURITY_REMOVE = "/staff/security/remove"
STAFF_SECURITY_CODES = "/staff/security/recovery-codes"
STAFF_PATRONS = "/staff/patrons"
STAFF_MEMBERS = "/staff/members"
STAFF_MEMBERS_ADD = "/staff/members/add"
STAFF_MEMBERS_DISABLE = "/staff/members/disable"
STAFF_MEMBERS_ENABLE = "/staff/members/enable"
STAFF_MEMBERS_ROLE = "/staff/members/role"
STAFF_MEMBERS_RESET = "/staff/members/reset"
STAFF_AUDIT = "/staff/audit"
STAFF_STATIC = "/staff/static"

# Top-level path segments that belong to `auth` and can never be a backend's.
RESERVED_PREFIXES: tuple[str, ...] = (PREFIX, STAFF, "/.well-known")


def is_page(path: str) -> bool:
    """Whether `path` is one of the /auth/* pages (they carry the pages' security headers)."""
    return path.startswith(PREFIX + "/")
