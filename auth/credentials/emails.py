"""The e-mail address an account's login mails go to: what is accepted as one.

Every reset link, activation link and change notice is sent there, so an address is checked
once, the same way, wherever one is set (`accounts add` and `invite` on the command line, the
helpdesk correcting one). The check is deliberately plain: one `@` with something on both
sides, a dot in the domain, at most 254 characters, and no white space or control character
anywhere (a line break in an address would be a header injection in every mail to it).
Whether the mailbox exists only a mail can tell. Pure: no I/O.
"""

from __future__ import annotations

MAX_LENGTH = 254


class EmailRejected(ValueError):
    """Not an address mail can be sent to; ``code`` says why (``invalid``, ``length``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def plausible(email: str) -> bool:
    """Whether `email` passes the rules, as it stands (no stripping)."""
    local, at, domain = email.partition("@")
    return (
        bool(at)
        and bool(local)
        and "." in domain
        and "@" not in domain
        and len(email) <= MAX_LENGTH
        and all(c.isprintable() and not c.isspace() for c in email)
    )


def check_email(value: str) -> str:
    """The address to store (`value` without surrounding white space), or `EmailRejected`."""
    email = value.strip()
    if len(email) > MAX_LENGTH:
        raise EmailRejected("length", f"An e-mail address has at most {MAX_LENGTH} characters.")
    if not plausible(email):
        raise EmailRejected("invalid", "That is not an e-mail address.")
    return email
