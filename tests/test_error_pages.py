"""The gateway's own error pages, as a patron's browser and an API client get them: in the
patron's language, saying what to do next, with a link home; JSON for everything else; the
status (and a 405's Allow) as they always were."""

from __future__ import annotations

import html
import re
import socket

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestServer
from yarl import URL

from auth.pages import i18n
from tests.helpers import Gateway, MakeGateway, routes_for

BROWSER = "text/html,application/xhtml+xml"
CLIENTS = """\
clients:
  - client_id: app
    name: Bibliotheek App
    redirect_uris: [http://127.0.0.1:9/app]
"""


def text(lang: str, key: str) -> str:
    """A text of the pages as a page shows it (HTML-escaped)."""
    return html.escape(i18n.translator(lang)[key])


async def page(resp: ClientResponse, lang: str, kind: str) -> str:
    """The body of an error page of `kind` in `lang`, checked to be that page."""
    assert resp.headers["Content-Type"].startswith("text/html")
    body = await resp.text()
    assert f'<html lang="{lang}">' in body
    assert f"<h1>{text(lang, f'gateway_error.{kind}.title')}</h1>" in body
    assert f"<p>{text(lang, f'gateway_error.{kind}.text')}</p>" in body
    assert f'<a href="/">{text(lang, "gateway_error.home")}</a>' in body
    return body


@pytest.mark.parametrize(
    ("headers", "lang"),
    [
        ({"Accept-Language": "nl"}, "nl"),
        ({"Accept-Language": "en-GB,en;q=0.9"}, "en"),
        ({}, "nl"),
        # The switch on the pages, remembered in a cookie, wins over the browser's wish.
        ({"Accept-Language": "nl", "Cookie": f"{i18n.LANG_COOKIE}=en"}, "en"),
        ({"Accept-Language": "en", "Cookie": f"{i18n.LANG_COOKIE}=nl"}, "nl"),
    ],
)
async def test_an_unrouted_path_is_a_page_in_the_patrons_language(
    gw: Gateway, headers: dict[str, str], lang: str
) -> None:
    resp = await gw.get("/nothing", headers={"Accept": BROWSER, **headers})
    assert resp.status == 404
    await page(resp, lang, "not_found")


async def test_a_refused_path_says_what_to_do_not_the_parsers_reason(gw: Gateway) -> None:
    resp = await gw.get(
        URL("/catalogue/%2e%2e/x", encoded=True),
        headers={"Accept": BROWSER, "Accept-Language": "nl"},
    )
    assert resp.status == 400
    body = await page(resp, "nl", "bad_request")
    assert "segment" not in body
    # An API client still gets the reason.
    resp = await gw.get(URL("/catalogue/%2e%2e/x", encoded=True))
    assert resp.status == 400
    assert await resp.json() == {
        "error": "bad_request",
        "message": "the path contains a '.' or '..' segment",
    }


async def test_a_backend_that_is_down_is_explained_not_repeated(
    make_gateway: MakeGateway,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    gw = await make_gateway(routes_for(dead_port))
    for lang in ("nl", "en"):
        resp = await gw.get("/catalogue/", headers={"Accept": BROWSER, "Accept-Language": lang})
        assert resp.status == 502
        await page(resp, lang, "upstream_unavailable")
    nl = i18n.translator("nl")
    heading = nl["gateway_error.upstream_unavailable.title"]
    assert heading not in nl["gateway_error.upstream_unavailable.text"]
    resp = await gw.get("/catalogue/")
    assert (await resp.json())["error"] == "bad_gateway"


@pytest.mark.parametrize(
    "path",
    [
        "/auth/nothing",
        "/auth/account/nothing",
        "/auth/static/nothing.css",
        "/staff/nothing",
        "/.well-known/nothing",
        "/_gateway/nothing",
    ],
)
async def test_a_wrong_path_under_the_gateways_own_prefixes_is_its_own_page(
    gw: Gateway, path: str
) -> None:
    resp = await gw.get(path, headers={"Accept": BROWSER, "Accept-Language": "en"})
    assert resp.status == 404
    body = await page(resp, "en", "not_found")
    assert "404: Not Found" not in body
    resp = await gw.get(path, headers={"Accept": "application/json"})
    assert resp.status == 404
    assert await resp.json() == {"error": "not_found", "message": "Not found"}


async def test_a_method_a_page_does_not_take_is_405_with_allow_and_a_page(
    make_gateway: MakeGateway, backend: TestServer
) -> None:
    gw = await make_gateway(routes_for(backend.port), clients=CLIENTS)
    resp = await gw.get("/auth/oidc/token", headers={"Accept": BROWSER, "Accept-Language": "nl"})
    assert resp.status == 405
    assert resp.headers["Allow"] == "POST"
    body = await page(resp, "nl", "method_not_allowed")
    assert "Method Not Allowed" not in body
    resp = await gw.delete("/auth/login", headers={"Accept": "application/json"})
    assert resp.status == 405
    assert set(resp.headers["Allow"].split(",")) == {"GET", "HEAD", "POST"}
    assert (await resp.json())["error"] == "method_not_allowed"


async def test_the_page_under_auth_keeps_its_style_under_the_pages_policy(gw: Gateway) -> None:
    """The /auth/ pages' CSP allows only a nonce-tagged inline style: the error page's
    style carries that nonce."""
    resp = await gw.get("/auth/nothing", headers={"Accept": BROWSER})
    found = re.search(r'<style nonce="([^"]+)">', await resp.text())
    assert found is not None
    assert f"'nonce-{found.group(1)}'" in resp.headers["Content-Security-Policy"]
