"""Routes and clients that require a membership, through the real gateway: the 403 page and
its JSON twin, never a login loop, the rule met at once when a membership arrives, and the
memberships backends and clients are told (X-Library-Memberships, the identity JWT, the
`library` scope), verified with PyJWT against the published keys."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import jwt
import pytest
from aiohttp.test_utils import TestServer

from auth import clock
from auth.credentials.passwords import PasswordHasher
from auth.memberships import Membership, Requirement, Shortfall
from auth.services import SERVICES
from auth.store.accounts import Account
from auth.store.memberships import Memberships
from gateway.config.routes import Auth, Backend, Route
from gateway.proxy.access import Forward, LoginRequired, MembershipRequired, decide
from tests.helpers import Gateway, MakeGateway, add_patron, identity_seen, login
from tests.test_oidc_provider import answer, authorize_url, exchange, pkce, verified

RENEW = "https://www.kb.nl/lid-worden"
INSTITUTIONS = f"""\
institutions:
  - id: kb
    name: Koninklijke Bibliotheek
    renew_url: {RENEW}
    default: true
    types: [adult, youth, student]
  - id: obs
    name: Bibliothèque Rivierenland
"""
STUDY = "https://study.example.nl/cb"
SECRET = "s3cret-" + "m" * 40
CLIENTS = f"""\
clients:
  - client_id: study-app
    name: Studiezaal
    redirect_uris: [{STUDY}]
    secret_env: MEMBERSHIP_TEST_SECRET
    require: {{institution: kb, types: [student]}}
"""
HTML = {"Accept": "text/html", "Accept-Language": "en"}
API = {"Accept": "application/json"}
YESTERDAY = clock.today() - timedelta(days=1)


def routes(port: int | None) -> str:
    return f"""\
routes:
  - name: catalogue
    prefix: /catalogue
    backend: http://127.0.0.1:{port}
    auth: optional
  - name: digital
    prefix: /digital
    backend: http://127.0.0.1:{port}
    auth: required
    public: [/digital/about]
    require: {{institution: kb}}
  - name: study
    prefix: /study
    backend: http://127.0.0.1:{port}
    auth: required
    require: {{institution: kb, types: [student]}}
"""


@pytest.fixture
async def gw(
    make_gateway: MakeGateway, backend: TestServer, monkeypatch: pytest.MonkeyPatch
) -> Gateway:
    monkeypatch.setenv("MEMBERSHIP_TEST_SECRET", SECRET)
    return await make_gateway(routes(backend.port), institutions=INSTITUTIONS, clients=CLIENTS)


@pytest.fixture
async def patron(gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher) -> Account:
    """A patron made after the gateway started: their pass is a KB membership, no end."""
    return await add_patron(pool, hasher)


async def lapse(pool: asyncpg.Pool, patron: Account, until: date = YESTERDAY) -> None:
    await Memberships(pool).change("kb", patron.pass_number, type="adult", valid_until=until)


# --- the decision, plain asserts ------------------------------------------------------------

ROUTE = Route(
    "digital",
    "/digital",
    Backend("http", "127.0.0.1", 8103),
    Auth.REQUIRED,
    public=("/digital/about",),
    require=Requirement("kb"),
)


def test_the_decision_refuses_a_patron_without_the_membership_and_never_asks_for_a_login() -> None:
    lapsed = (Membership("kb", "1", "adult", date(2024, 1, 31)),)
    decision = decide(
        ROUTE, "/digital/x", "", logged_in=True, accept="text/html", memberships=lapsed
    )
    assert decision == MembershipRequired(ROUTE, Shortfall(Requirement("kb"), lapsed[0]), True)
    valid = (Membership("kb", "1", "adult", date(2024, 1, 31)),)
    on_time = decide(
        ROUTE,
        "/digital/x",
        "",
        logged_in=True,
        accept=None,
        memberships=valid,
        today=date(2024, 1, 31),
    )
    assert on_time == Forward(ROUTE, with_identity=True)
    # Public sub-paths need neither a login nor a membership.
    assert decide(ROUTE, "/digital/about", "", logged_in=True, accept=None) == Forward(ROUTE, True)
    # Anonymous: the login first.
    assert isinstance(decide(ROUTE, "/digital/x", "", logged_in=False, accept=None), LoginRequired)


# --- the proxy ---------------------------------------------------------------------------


async def test_a_valid_membership_passes_and_the_backend_is_told_every_membership(
    gw: Gateway, pool: asyncpg.Pool, patron: Account
) -> None:
    await Memberships(pool).add(patron.id, Membership("obs", "RL-" + patron.pass_number, "youth"))
    await login(gw, patron.username)
    # A spoofed header is replaced by the real one.
    resp = await gw.get("/digital/book", headers={"X-Library-Memberships": "kb:adult:2099-01-01"})
    assert resp.status == 200
    seen = identity_seen(await resp.json())
    assert seen["x-library-memberships"] == "kb::,obs:youth:"


async def test_no_membership_at_all_gets_a_403_page_naming_the_institution(
    gw: Gateway, pool: asyncpg.Pool, patron: Account
) -> None:
    await Memberships(pool).end("kb", patron.pass_number)
    await login(gw, patron.username)
    resp = await gw.get("/digital/book", headers=HTML, allow_redirects=False)
    assert resp.status == 403 and "Location" not in resp.headers
    assert resp.headers["Cache-Control"] == "no-store"
    assert "nonce-" in resp.headers["Content-Security-Policy"]
    page = await resp.text()
    assert "Membership required" in page
    assert "valid membership of Koninklijke Bibliotheek" in page
    assert f'href="{RENEW}">Become a member' in page
    dutch = await gw.get("/digital/book", headers={"Accept": "text/html", "Accept-Language": "nl"})
    assert "Lidmaatschap nodig" in await dutch.text()


async def test_an_expired_membership_gets_the_date_and_the_renew_link(
    gw: Gateway, pool: asyncpg.Pool, patron: Account
) -> None:
    await lapse(pool, patron, date(2024, 1, 31))
    await login(gw, patron.username)
    resp = await gw.get("/digital/book", headers=HTML)
    assert resp.status == 403
    page = await resp.text()
    assert "Your membership of Koninklijke Bibliotheek ran out on 2024-01-31." in page
    assert f'href="{RENEW}">Renew your membership' in page


async def test_the_wrong_type_is_refused_and_api_clients_get_json(
    gw: Gateway, patron: Account, pool: asyncpg.Pool
) -> None:
    await lapse(pool, patron, date(2099, 12, 31))  # adult, valid
    await login(gw, patron.username)
    assert (await gw.get("/digital/book", headers=API)).status == 200
    resp = await gw.get("/study/desk", headers=API)
    assert resp.status == 403 and resp.content_type == "application/json"
    assert await resp.json() == {
        "error": "membership_required",
        "institution": "kb",
        "types": ["student"],
        "expired_on": None,
        "renew_url": RENEW,
    }
    html = await gw.get("/study/desk", headers=HTML)
    assert "Memberships that give access: student." in await html.text()


async def test_an_expired_membership_in_json_names_the_day_it_ran_out(
    gw: Gateway, patron: Account, pool: asyncpg.Pool
) -> None:
    await lapse(pool, patron)
    await login(gw, patron.username)
    resp = await gw.get("/digital/book", headers=API)
    assert resp.status == 403
    assert (await resp.json())["expired_on"] == YESTERDAY.isoformat()


async def test_an_anonymous_visitor_logs_in_first_then_gets_the_403_without_a_loop(
    gw: Gateway, patron: Account, pool: asyncpg.Pool
) -> None:
    await lapse(pool, patron)
    first = await gw.get("/digital/book?x=1", headers=HTML, allow_redirects=False)
    assert first.status == 302
    assert first.headers["Location"] == "/auth/login?next=%2Fdigital%2Fbook%3Fx%3D1"
    # The login's redirects, followed to the end, stop at the refusal.
    resp = await login(gw, patron.username, next="/digital/book?x=1")
    assert resp.status == 303
    followed = await gw.get(resp.headers["Location"], headers=HTML)
    assert followed.status == 403 and followed.url.path == "/digital/book"
    assert all(r.url.path != "/auth/login" for r in followed.history)
    # Public sub-paths stay open to the logged-in patron without the membership.
    assert (await gw.get("/digital/about")).status == 200


async def test_a_membership_added_lets_the_patron_in_at_once(
    gw: Gateway, pool: asyncpg.Pool, patron: Account
) -> None:
    await lapse(pool, patron)
    await login(gw, patron.username)
    assert (await gw.get("/digital/book", headers=API)).status == 403
    await Memberships(pool).add(patron.id, Membership("kb", "K" + patron.pass_number, "adult"))
    await gw.app[SERVICES].registry.account_changed(patron.id)
    resp = await gw.get("/digital/book", headers=API)
    assert resp.status == 200
    header = identity_seen(await resp.json())["x-library-memberships"]
    assert header == f"kb:adult:{YESTERDAY.isoformat()},kb:adult:"


async def test_a_patron_with_no_memberships_gets_no_memberships_header(
    gw: Gateway, pool: asyncpg.Pool, patron: Account
) -> None:
    await Memberships(pool).end("kb", patron.pass_number)
    await login(gw, patron.username)
    resp = await gw.get("/catalogue/", headers={"X-Library-Memberships": "kb:adult:"})
    assert "x-library-memberships" not in identity_seen(await resp.json())


async def test_the_identity_jwt_carries_the_memberships(
    gw: Gateway, pool: asyncpg.Pool, patron: Account
) -> None:
    await lapse(pool, patron, date(2027, 1, 31))
    await login(gw, patron.username)
    seen = identity_seen(await (await gw.get("/catalogue/")).json())
    token = seen["x-library-identity"]
    keys = jwt.PyJWKSet.from_dict(await (await gw.get("/.well-known/jwks.json")).json())
    key = keys[jwt.get_unverified_header(token)["kid"]]
    claims = jwt.decode(token, key.key, algorithms=["EdDSA"], audience="catalogue")
    assert claims["memberships"] == [
        {"institution": "kb", "type": "adult", "valid_until": "2027-01-31"}
    ]


# --- the library's calendar ---------------------------------------------------------------

LIBRARY_ZONE = ZoneInfo("Europe/Amsterdam")


@pytest.fixture
def server_zone_off_the_librarys() -> Iterator[None]:
    """The process's own time zone set to one whose date is not the library's at this moment,
    as on a server abroad, or a container on UTC just after a Dutch midnight: UTC+14 or
    UTC-12, whichever disagrees with Amsterdam now (one of them always does)."""
    now = datetime.now(UTC)
    library_day = now.astimezone(LIBRARY_ZONE).date()
    zone = next(
        name
        for name in ("Etc/GMT-14", "Etc/GMT+12")
        if now.astimezone(ZoneInfo(name)).date() != library_day
    )
    before = os.environ.get("TZ")
    os.environ["TZ"] = zone
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


async def test_a_membership_is_valid_through_its_last_day_as_the_library_counts_days(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, server_zone_off_the_librarys: None
) -> None:
    """`valid_until` is the last valid day in the Netherlands, as the account page shows it,
    whatever time zone the server runs in: on a route and at a client that require it."""
    today = datetime.now(LIBRARY_ZONE).date()
    memberships = Memberships(pool)
    last_day, ran_out = await add_patron(pool, hasher), await add_patron(pool, hasher)
    for patron, until in ((last_day, today), (ran_out, today - timedelta(days=1))):
        await memberships.change("kb", patron.pass_number, type="student", valid_until=until)

    await login(gw, last_day.username)
    assert (await gw.get("/digital/book", headers=API)).status == 200
    _, params = answer(await gw.get(authorize_url("study-app", STUDY), allow_redirects=False))
    assert "code" in params and "error" not in params

    await login(gw, ran_out.username)
    resp = await gw.get("/digital/book", headers=API)
    assert resp.status == 403
    assert (await resp.json())["expired_on"] == (today - timedelta(days=1)).isoformat()
    _, params = answer(await gw.get(authorize_url("study-app", STUDY), allow_redirects=False))
    assert params["error"] == "access_denied" and "code" not in params


# --- OpenID Connect ------------------------------------------------------------------------


async def test_a_client_that_requires_a_membership_gets_access_denied_not_a_login_loop(
    gw: Gateway, patron: Account
) -> None:
    anonymous = await gw.get(authorize_url("study-app", STUDY), allow_redirects=False)
    assert anonymous.status == 302 and anonymous.headers["Location"].startswith("/auth/login?")
    await login(gw, patron.username)
    for extra in ({}, {"prompt": "none"}):
        resp = await gw.get(authorize_url("study-app", STUDY, **extra), allow_redirects=False)
        target, params = answer(resp)
        assert target == STUDY and params["error"] == "access_denied"
        assert params["error_description"] == (
            "the patron has no valid membership of Koninklijke Bibliotheek (student)"
        )
        assert params["state"].startswith("st-") and params["iss"] == "http://127.0.0.1:8080"
        assert "code" not in params


async def test_the_library_scope_carries_the_memberships_in_the_id_token_and_userinfo(
    gw: Gateway, pool: asyncpg.Pool, patron: Account
) -> None:
    await Memberships(pool).change("kb", patron.pass_number, type="student", valid_until=None)
    await Memberships(pool).add(patron.id, Membership("obs", "RL-" + patron.pass_number))
    await login(gw, patron.username)
    verifier, challenge = pkce()
    url = authorize_url("study-app", STUDY, code_challenge=challenge, code_challenge_method="S256")
    _, params = answer(await gw.get(url, allow_redirects=False))
    tokens_resp = await exchange(
        gw,
        params["code"],
        client_id="study-app",
        redirect_uri=STUDY,
        verifier=verifier,
        secret=SECRET,
    )
    assert tokens_resp.status == 200
    tokens = await tokens_resp.json()
    expected: list[dict[str, Any]] = [
        {"institution": "kb", "type": "student", "valid_until": None},
        {"institution": "obs", "type": None, "valid_until": None},
    ]
    assert (await verified(gw, tokens["id_token"], "study-app"))["memberships"] == expected
    info = await gw.get(
        "/auth/oidc/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert (await info.json())["memberships"] == expected
    discovery = json.loads(await (await gw.get("/.well-known/openid-configuration")).text())
    assert "memberships" in discovery["claims_supported"]
