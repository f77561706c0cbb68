"""Who may pass, and where a request goes: the access decision for one request, as a pure
function.

Kept apart from the proxy so every combination of route, path and login state is tested with
plain asserts, and so the proxy has exactly one place that says "no".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import NamedTuple
from urllib.parse import quote

from auth import clock, urls
from auth.memberships import Membership, Shortfall, shortfall
from gateway.config.routes import Route


class Forward(NamedTuple):
    """Send the request on to `route`; with identity headers only when `with_identity`.

    A tuple rather than a dataclass: one is made for nearly every request, and a tuple is
    made fastest."""

    route: Route
    with_identity: bool


@dataclass(frozen=True, slots=True)
class LoginRequired:
    """No session on a route that needs one."""

    route: Route
    login_url: str
    browser: bool


@dataclass(frozen=True, slots=True)
class MembershipRequired:
    """A logged-in patron without the valid membership the route requires: 403, never a
    login (they are logged in; sending them there again would loop)."""

    route: Route
    shortfall: Shortfall
    browser: bool


@dataclass(frozen=True, slots=True)
class Redirect:
    """Nobody serves this path, but the gateway knows where the visitor meant to go."""

    location: str


@dataclass(frozen=True, slots=True)
class Unrouted:
    """No route covers the path: 404."""


Decision = Forward | LoginRequired | MembershipRequired | Redirect | Unrouted

UNROUTED = Unrouted()
# No service claims the front door: the patron's own page is the landing (it sends anonymous
# visitors on to the login).
LANDING = Redirect(urls.ACCOUNT)


def login_url(path: str, query: str) -> str:
    target = f"{path}?{query}" if query else path
    return f"{urls.LOGIN}?next={quote(target, safe='')}"


def wants_html(accept: str | None) -> bool:
    """A browser navigating: its Accept names text/html (curl's */* does not count)."""
    return accept is not None and "text/html" in accept.lower()


def decide(
    route: Route | None,
    path: str,
    query: str,
    *,
    logged_in: bool,
    accept: str | None,
    memberships: Sequence[Membership] = (),
    today: date | None = None,
) -> Decision:
    """What to do with a request for `path` (normalised, never a reserved one), given the
    route that matched it, if any, and the logged-in patron's `memberships` (checked only on
    a route that requires one, on `today`: the library's date, unless given)."""
    if route is None:
        return LANDING if path == "/" else UNROUTED
    if logged_in:
        requirement = route.require
        if requirement is not None and route.needs_login(path):
            short = shortfall(memberships, requirement, today or clock.today())
            if short is not None:
                return MembershipRequired(route, short, browser=wants_html(accept))
        return Forward(route, with_identity=True)
    if route.needs_login(path):
        return LoginRequired(route, login_url(path, query), browser=wants_html(accept))
    return Forward(route, with_identity=False)
