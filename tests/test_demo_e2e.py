"""`library-gateway demo` as a new user runs it: one command, a working login, a second
library that takes the same login, and nothing left running after Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psutil
import pytest

from gateway.demo import public_library
from gateway.demo.runner import (
    DEMO_PASS_NUMBER,
    DEMO_PASSWORD,
    DEMO_STAFF_EMAIL,
    DEMO_USERNAME,
    LAPSED_PASS_NUMBER,
    LAPSED_UNTIL,
    LAPSED_USERNAME,
)
from tests.helpers import free_port

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Demo:
    url: str
    library_url: str
    """The public library's site, as the banner prints it."""
    process: subprocess.Popen[str]
    workdir: Path
    banner: str


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    workdir = tmp_path_factory.mktemp("demo")
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("GATEWAY_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "demo", "--port", str(port)],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    banner = []
    for line in process.stdout:  # blocks until the demo has printed its banner
        banner.append(line)
        if "Ctrl-C" in line:
            break
    text = "".join(banner)
    assert f"http://127.0.0.1:{port}" in text, text
    library = re.search(rf"{public_library.NAME}.*\n\s+(http://127\.0\.0\.2:\d+)/", text)
    assert library is not None, text
    try:
        yield Demo(f"http://127.0.0.1:{port}", library.group(1), process, workdir, text)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
        process.stdout.close()


async def test_demo_patron_logs_in_once_and_uses_every_service(demo: Demo) -> None:
    # unsafe=True: accept cookies from an IP-address host, as browsers do.
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(demo.url, cookie_jar=jar) as client:
        async with client.get("/reservations/", headers={"Accept": "text/html"}) as resp:
            assert resp.status == 200
            assert resp.url.path == "/auth/login"
            page = await resp.text()
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token is not None
        form = {
            "csrf_token": token.group(1),
            "username": DEMO_PASS_NUMBER,
            "password": DEMO_PASSWORD,
            "next": "/reservations/",
        }
        async with client.post("/auth/login", data=form) as resp:
            assert resp.status == 200
            assert resp.url.path == "/reservations/"
            assert DEMO_PASS_NUMBER in await resp.text()
        async with client.get("/catalogue/search?q=max") as resp:
            assert resp.status == 200
            assert DEMO_PASS_NUMBER in await resp.text()
        async with client.get("/digital/") as resp:
            assert resp.status == 200
            assert resp.url.path == "/digital/"
        async with client.get("/.well-known/jwks.json") as resp:
            assert (await resp.json())["keys"][0]["alg"] == "EdDSA"
    # The public library's site, another address: logged in at the catalogue, no second login.
    async with aiohttp.ClientSession(cookie_jar=jar) as browser:
        async with browser.get(demo.library_url + "/") as resp:
            assert resp.status == 200
            assert "Log in with your library account" in await resp.text()
        async with browser.get(demo.library_url + "/login") as resp:
            assert resp.status == 200
            assert str(resp.url) == demo.library_url + "/"
            assert all(r.url.path != "/auth/login" for r in resp.history)
            assert DEMO_USERNAME in await resp.text()


async def test_the_lapsed_patron_is_told_at_the_digital_library_that_their_membership_ran_out(
    demo: Demo,
) -> None:
    assert f"{LAPSED_PASS_NUMBER} (pass number) or {LAPSED_USERNAME}" in demo.banner
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(demo.url, cookie_jar=jar) as client:
        html = {"Accept": "text/html", "Accept-Language": "en"}
        async with client.get("/digital/", headers=html) as resp:
            assert resp.url.path == "/auth/login"
            page = await resp.text()
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token is not None
        form = {
            "csrf_token": token.group(1),
            "username": LAPSED_PASS_NUMBER,
            "password": DEMO_PASSWORD,
            "next": "/digital/",
        }
        # Following every redirect ends at the refusal: logged in, never sent to log in again.
        async with client.post("/auth/login", data=form, headers=html) as resp:
            assert resp.status == 403
            assert resp.url.path == "/digital/"
            text = await resp.text()
        assert "Koninklijke Bibliotheek" in text and LAPSED_UNTIL.isoformat() in text
        assert 'href="https://www.kb.nl/lid-worden"' in text
        async with client.get("/catalogue/search?q=max") as resp:
            assert resp.status == 200 and LAPSED_PASS_NUMBER in await resp.text()


async def test_the_demo_staff_admin_gets_an_activation_link_that_opens(demo: Demo) -> None:
    assert f"{demo.url}/staff/   as {DEMO_STAFF_EMAIL}" in demo.banner
    # At an IP address the console offers the authenticator app alone, and both say so.
    assert "authenticator app; passkeys" in demo.banner
    assert "or a passkey" not in demo.banner
    assert demo.process.stdout is not None
    link = None
    mail = []
    for line in demo.process.stdout:  # the mail catcher prints the invitation
        mail.append(line)
        found = re.search(r"(http://\S+/staff/activate\?token=\S+)", line)
        if found:
            link = found.group(1)
            break
    assert link is not None and link.startswith(demo.url)
    text = "".join(mail)
    assert "second factor (an authenticator app)" in text and "passkey" not in text, text
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as client:
        async with client.get(link) as resp:
            assert resp.status == 200
            page = await resp.text()
        assert 'name="password"' in page and 'name="csrf_token"' in page
        async with client.get(f"{demo.url}/staff/") as resp:
            assert resp.url.path == "/staff/login"


def test_ctrl_c_stops_everything(demo: Demo) -> None:
    process, workdir = demo.process, demo.workdir
    pgdata = str(workdir / "var" / "postgres")
    assert any(
        pgdata in " ".join(p.info["cmdline"] or ()) for p in psutil.process_iter(["cmdline"])
    )
    process.send_signal(signal.SIGINT)
    assert process.wait(60) == 0
    leftovers = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if pgdata in " ".join(p.info["cmdline"] or ())
    ]
    assert leftovers == []
