"""Why the helpdesk refuses an action. Nothing has changed when one of these is raised, and
no audit row was written.

    HelpdeskError
    ├── NotStaff          the actor is not a staff member (a programming error in a page)
    ├── ReasonRequired    no reason, or not one short line of text          (page: 422)
    ├── NoSuchPatron      no account with that id                           (page: 404)
    ├── NotApplicable     the action does not fit the account's state now;  (page: 409)
    │                     `code`: merged, disabled, enabled, activated, no_email, unchanged
    └── EmailRejected     the new address is not an e-mail address          (page: 422)

An address another account has is no refusal: a family shares one (forgot-username mails
every account of an address), as `accounts add` and the import allow.
"""

from __future__ import annotations


class HelpdeskError(Exception):
    """Base of the helpdesk's refusals."""


class NotStaff(HelpdeskError):
    """Only a staff member acts at the helpdesk."""


class ReasonRequired(HelpdeskError):
    """Every action needs a short reason: it goes into the audit trail with the action."""


class NoSuchPatron(HelpdeskError):
    """No account has that id."""


class NotApplicable(HelpdeskError):
    """The account's state does not allow the action (see `code`)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class EmailRejected(HelpdeskError):
    """The new address breaks the rules of `auth.credentials.emails` (`code` as there)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
