"""docs/federation.md's two client examples, run as they are printed there (Python with
Authlib, Node.js with openid-client) against a real `library-gateway run`: a patron logs in
at the first, and walks into the second without a login form. A page that promises working
examples keeps its promise.

The only change made to an example is the one the page itself tells a reader to make for a
gateway on plain http on loopback (openid-client's allowInsecureRequests).
"""

from __future__ import annotations

import html
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from auth.credentials.passwords import PasswordHasher
from auth.store.accounts import Account
from tests import npm, system_packages
from tests.helpers import PASSWORD, add_patron, free_port, wait_for_port
from tests.test_oidc_clients import OPENID_CLIENT, OPENID_CLIENT_PREFIX

pytestmark = pytest.mark.slow

DOC = Path(__file__).resolve().parent.parent / "docs" / "federation.md"
STARTUP = 60.0
"""Seconds a process may take to listen; a bound, not a timing claim."""
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')
INSECURE = "  client.ClientSecretBasic(CLIENT_SECRET),\n);"


def example(heading: str, language: str) -> str:
    """The code block of `language` under the docs' heading `### heading`."""
    section = DOC.read_text(encoding="utf-8").split(f"\n### {heading}\n", 1)
    assert len(section) == 2, f"docs/federation.md has no section '{heading}'"
    found = re.search(rf"```{language}\n(.*?)```", section[1], re.DOTALL)
    assert found is not None, f"no {language} block under '{heading}'"
    return found.group(1)


@dataclass(frozen=True)
class Site:
    client_id: str
    port: int
    secret: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {
            "CLIENT_ID": self.client_id,
            "CLIENT_SECRET": self.secret,
            "REDIRECT_URI": f"{self.url}/callback",
            "PORT": str(self.port),
        }


@dataclass(frozen=True)
class Sites:
    python: Site
    node: Site


@pytest.fixture(scope="module")
def sites() -> Sites:
    """Both examples' ports, known before the gateway starts: their redirect URIs are in its
    clients.yaml."""
    return Sites(
        Site("python-example", free_port(), secrets.token_urlsafe(32)),
        Site("node-example", free_port(), secrets.token_urlsafe(32)),
    )


def _stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STARTUP)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _start(
    args: list[str], env: dict[str, str], port: int, log: Path, cwd: Path
) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        process = subprocess.Popen(
            args, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    try:
        wait_for_port(process, port, deadline=STARTUP, log=log)
    except BaseException:
        _stop(process)
        raise
    return process


@pytest.fixture(scope="module")
def issuer(
    database_url: str, sites: Sites, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`library-gateway run` with both examples in its clients.yaml."""
    folder = tmp_path_factory.mktemp("gateway")
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    (folder / "routes.yaml").write_text(
        "routes:\n  - name: shelf\n    prefix: /shelf\n    backend: http://127.0.0.1:9\n"
        "    auth: required\n",
        encoding="utf-8",
    )
    (folder / "clients.yaml").write_text(
        "clients:\n"
        + "".join(
            f"  - client_id: {site.client_id}\n"
            f"    name: {site.client_id.title()}\n"
            f"    redirect_uris: [{site.url}/callback]\n"
            f"    secret_env: SECRET_{i}\n"
            for i, site in enumerate((sites.python, sites.node))
        ),
        encoding="utf-8",
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("GATEWAY_")}
    env.update(
        GATEWAY_DATABASE_URL=database_url,
        GATEWAY_PUBLIC_URL=issuer,
        SECRET_0=sites.python.secret,
        SECRET_1=sites.node.secret,
    )
    process = _start(
        [
            sys.executable,
            "-m",
            "gateway",
            "run",
            "--routes",
            str(folder / "routes.yaml"),
            "--port",
            str(port),
            "--admin-port",
            "0",
            "--data-dir",
            str(folder / "data"),
        ],
        env,
        port,
        folder / "gateway.log",
        folder,
    )
    try:
        yield issuer
    finally:
        _stop(process)


@pytest.fixture(scope="module")
def python_example(
    issuer: str, sites: Sites, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    site = sites.python
    folder = tmp_path_factory.mktemp("python-example")
    (folder / "site.py").write_text(example("Python (Authlib)", "python"), encoding="utf-8")
    env = {**os.environ, **site.env, "ISSUER": issuer}
    process = _start(
        [sys.executable, "-W", "error", "site.py"], env, site.port, folder / "site.log", folder
    )
    try:
        yield site
    finally:
        _stop(process)


@pytest.fixture(scope="module")
def node_example(
    issuer: str, sites: Sites, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    site = sites.node
    system_packages.require("npm")  # and with it Node.js
    prefix = npm.install(OPENID_CLIENT_PREFIX, OPENID_CLIENT)
    node = shutil.which("node")
    assert node is not None, "npm is installed but node is not on PATH"
    folder = tmp_path_factory.mktemp("node-example")
    code = example("Node.js (openid-client)", "js")
    assert INSECURE in code, "the Node.js example's discovery call changed shape"
    code = code.replace(
        INSECURE,
        "  client.ClientSecretBasic(CLIENT_SECRET),\n"
        "  { execute: [client.allowInsecureRequests] },\n);",
    )
    (folder / "site.mjs").write_text(code, encoding="utf-8")
    (folder / "node_modules").symlink_to(prefix / "node_modules")
    env = {**os.environ, **site.env, "ISSUER": issuer}
    process = _start([node, "site.mjs"], env, site.port, folder / "site.log", folder)
    try:
        yield site
    finally:
        _stop(process)


@pytest.fixture
async def patron(pool: asyncpg.Pool, hasher: PasswordHasher) -> Account:
    return await add_patron(pool, hasher)


async def test_a_patron_logs_in_at_one_example_and_walks_into_the_other(
    python_example: Site, node_example: Site, patron: Account
) -> None:
    first, second = python_example, node_example
    greeting = f"Hello {patron.username}, pass {patron.pass_number}"
    # All three on 127.0.0.1, where a cookie jar keeps one cookie per name whatever the port:
    # the examples' cookies take turns, which is enough for one patron walking from one to
    # the other.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        home = await browser.get(first.url + "/")
        assert "Log in with your library account" in await home.text()
        form = await browser.get(first.url + "/login")
        page = await form.text()
        assert form.url.path == "/auth/login" and "Python-Example" in page
        fields = {name: html.unescape(value) for name, value in _HIDDEN.findall(page)}
        fields.update(username=patron.username, password=PASSWORD)
        arrived = await browser.post(
            form.url.with_path("/auth/login").with_query(None), data=fields
        )
        assert str(arrived.url) == first.url + "/", await arrived.text()
        assert await arrived.text() == greeting

        walked = await browser.get(second.url + "/login")
        assert str(walked.url) == second.url + "/", await walked.text()
        assert all(step.url.path != "/auth/login" for step in walked.history)
        assert await walked.text() == greeting
