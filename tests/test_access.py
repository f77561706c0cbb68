"""The access decision, with plain asserts: every combination of route, path and login state
gets exactly one answer, and nothing but the decision says "no"."""

from __future__ import annotations

import pytest

from auth import urls
from gateway.config.routes import Auth, Backend, Route
from gateway.proxy.access import (
    Forward,
    LoginRequired,
    Redirect,
    Unrouted,
    decide,
    login_url,
    wants_html,
)

BACKEND = Backend("http", "127.0.0.1", 8102)
RESERVATIONS = Route(
    name="reservations",
    prefix="/reservations",
    backend=BACKEND,
    auth=Auth.REQUIRED,
    public=("/reservations/opening-hours",),
)
CATALOGUE = Route(name="catalogue", prefix="/catalogue", backend=BACKEND, auth=Auth.OPTIONAL)
OPEN = Route(name="open", prefix="/open", backend=BACKEND, auth=Auth.PUBLIC)

BROWSER = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"


@pytest.mark.parametrize("route", [RESERVATIONS, CATALOGUE, OPEN])
def test_a_logged_in_patron_is_forwarded_with_identity_on_every_route(route: Route) -> None:
    decision = decide(route, route.prefix + "/x", "", logged_in=True, accept=None)
    assert decision == Forward(route, with_identity=True)


@pytest.mark.parametrize("route", [CATALOGUE, OPEN])
def test_an_anonymous_visitor_passes_optional_and_public_routes_without_identity(
    route: Route,
) -> None:
    decision = decide(route, route.prefix + "/x", "q=1", logged_in=False, accept=BROWSER)
    assert decision == Forward(route, with_identity=False)


def test_a_browser_without_a_session_is_sent_to_the_login_with_the_whole_target() -> None:
    decision = decide(
        RESERVATIONS, "/reservations/mine", "page=2&x=a b", logged_in=False, accept=BROWSER
    )
    assert decision == LoginRequired(
        RESERVATIONS, "/auth/login?next=%2Freservations%2Fmine%3Fpage%3D2%26x%3Da%20b", True
    )


def test_an_api_client_without_a_session_is_refused_not_redirected() -> None:
    decision = decide(
        RESERVATIONS, "/reservations/mine", "", logged_in=False, accept="application/json"
    )
    assert isinstance(decision, LoginRequired) and not decision.browser


@pytest.mark.parametrize(
    "path",
    ["/reservations/opening-hours", "/reservations/opening-hours/today"],
)
def test_public_sub_paths_of_a_required_route_need_no_login(path: str) -> None:
    decision = decide(RESERVATIONS, path, "", logged_in=False, accept=BROWSER)
    assert decision == Forward(RESERVATIONS, with_identity=False)


@pytest.mark.parametrize(
    "path",
    [
        "/reservations/opening-hours-secret",  # not a whole segment
        "/reservations/opening-hours;v=1",  # a path parameter is not the public path
        "/reservations",
    ],
)
def test_near_misses_of_a_public_sub_path_stay_behind_the_login(path: str) -> None:
    decision = decide(RESERVATIONS, path, "", logged_in=False, accept=BROWSER)
    assert isinstance(decision, LoginRequired)


def test_the_front_door_without_a_route_lands_on_the_patrons_own_page() -> None:
    assert decide(None, "/", "", logged_in=False, accept=BROWSER) == Redirect(urls.ACCOUNT)
    assert decide(None, "/", "", logged_in=True, accept=None) == Redirect(urls.ACCOUNT)


@pytest.mark.parametrize("logged_in", [True, False])
def test_a_path_no_route_covers_is_unrouted_whoever_asks(logged_in: bool) -> None:
    assert decide(None, "/nowhere", "", logged_in=logged_in, accept=BROWSER) == Unrouted()


def test_the_login_url_carries_the_target_encoded_as_one_parameter() -> None:
    assert login_url("/a b/c", "") == "/auth/login?next=%2Fa%20b%2Fc"
    assert (
        login_url("/x", "next=//evil.example")
        == "/auth/login?next=%2Fx%3Fnext%3D%2F%2Fevil.example"
    )


@pytest.mark.parametrize(
    ("accept", "browser"),
    [
        (BROWSER, True),
        ("TEXT/HTML", True),
        ("*/*", False),
        ("application/json", False),
        (None, False),
    ],
)
def test_only_an_accept_naming_html_counts_as_a_browser(accept: str | None, browser: bool) -> None:
    assert wants_html(accept) is browser
