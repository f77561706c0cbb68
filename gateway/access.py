"""Who may pass: the access decision for one request, as a pure function.

Kept apart from the proxy so every combination of route, path and login state is tested with
plain asserts, and so the proxy has exactly one place that says "no".
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from gateway.routes import Route

LOGIN_PATH = "/auth/login"


@dataclass(frozen=True, slots=True)
class Forward:
    """Send the request on; with identity headers only when `with_identity`."""

    with_identity: bool


@dataclass(frozen=True, slots=True)
class LoginRequired:
    """No session on a route that needs one."""

    login_url: str
    browser: bool


Decision = Forward | LoginRequired


def login_url(path: str, query: str) -> str:
    target = f"{path}?{query}" if query else path
    return f"{LOGIN_PATH}?next={quote(target, safe='')}"


def wants_html(accept: str | None) -> bool:
    """A browser navigating: its Accept names text/html (curl's */* does not count)."""
    return accept is not None and "text/html" in accept.lower()


# The two forward decisions are values; one of them is the answer for nearly every request.
FORWARD_WITH_IDENTITY = Forward(with_identity=True)
FORWARD_ANONYMOUS = Forward(with_identity=False)


def decide(route: Route, path: str, query: str, *, logged_in: bool, accept: str | None) -> Decision:
    if logged_in:
        return FORWARD_WITH_IDENTITY
    if route.needs_login(path):
        return LoginRequired(login_url(path, query), browser=wants_html(accept))
    return FORWARD_ANONYMOUS
