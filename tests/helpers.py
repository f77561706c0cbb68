"""Plain helpers the test modules share; the fixtures that use them live in conftest.py.

The gateway under test and its route map; patrons, forms and logins through the real pages;
reading and forging the session cookie; what the backend was told; mails as the SMTP catcher
got them; raw bytes on the wire; the command line; and the login throttle and hasher the
attacks in tests/security/ push against.

Forging uses the gateway's own cookie format (aiohttp-session's `{"created": …, "session":
{…}}`, encrypted with the test's MultiFernet), so a test can move a timestamp without waiting
for it to pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from email.message import EmailMessage
from http.cookies import Morsel, SimpleCookie
from pathlib import Path
from typing import Any, TypeAlias

import asyncpg
import markupsafe
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.typedefs import LooseHeaders
from cryptography.fernet import MultiFernet
from multidict import CIMultiDict
from yarl import URL

from auth.credentials.passwords import PasswordHasher
from auth.pages import i18n
from auth.services import SERVICES, template_environment
from auth.store.accounts import Account, Accounts
from gateway.appkeys import OUTBOX_WORKER
from gateway.demo.mailcatcher import MailCatcher
from gateway.server.runner import GatewayRunner

ROOT = Path(__file__).resolve().parent.parent

COOKIE = "library_session"
DEVICE_COOKIE = "library_device"
PASSWORD = "correct horse battery staple"
# Cheap argon2 for tests: the parameters change nothing about behaviour.
FAST_ARGON2 = {"time_cost": 1, "memory_cost": 1024, "parallelism": 1}

# --- The gateway under test -----------------------------------------------------------------

Gateway: TypeAlias = TestClient[web.Request, web.Application]
"""A client of a gateway under test, as the `gw` fixtures and `make_gateway` give it."""

MakeGateway: TypeAlias = Callable[..., Awaitable[Gateway]]
"""The `make_gateway` fixture: `await make_gateway(routes_text, **settings_overrides)`."""


class GatewayTestServer(TestServer):
    """A test server that runs the app the way `library-gateway run` does."""

    async def _make_runner(self, **kwargs: Any) -> GatewayRunner:
        return GatewayRunner(self.app, **kwargs)


def routes_for(port: int | None, extra: str = "") -> str:
    """The usual route map, every route on the backend at `port` (a started server's)."""
    assert port is not None, "the backend server has not started"
    return f"""\
routes:
  - name: catalogue
    prefix: /catalogue
    backend: http://127.0.0.1:{port}
    auth: optional
  - name: reservations
    prefix: /reservations
    backend: http://127.0.0.1:{port}
    auth: required
    public: [/reservations/opening-hours]
  - name: open
    prefix: /open
    backend: http://127.0.0.1:{port}
    auth: public
{extra}"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    process: subprocess.Popen[Any], port: int, *, deadline: float, log: Path | None = None
) -> None:
    """Return once 127.0.0.1:`port` accepts connections, `process` being the server that is
    to listen there. Between tries it waits for that process to exit, briefly, so one that
    dies is noticed at once; fails (with the tail of its `log`) when it does, or when the
    deadline passes first."""
    end = time.monotonic() + deadline
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            pass
        try:
            code = process.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            if time.monotonic() < end:
                continue
            problem = f"nothing listens on port {port} after {deadline} s"
        else:
            problem = f"{process.args!r} exited with {code} before it listened on port {port}"
        tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
        raise AssertionError(f"{problem}\n{tail}")


# --- Patrons, forms and logins --------------------------------------------------------------

# A random start per process, so pass numbers never repeat within a module's shared database.
_numbers = itertools.count(10**9 + secrets.randbelow(10**9))
_CSRF = re.compile(r'name="csrf_token" value="([^"]*)"')


def unique_pass_number() -> str:
    return str(next(_numbers))


async def add_patron(
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
    *,
    username: str | None = None,
    password: str = PASSWORD,
    pass_number: str | None = None,
    password_hash: str | None = None,
) -> Account:
    number = pass_number or unique_pass_number()
    return await Accounts(pool).add(
        pass_number=number,
        email=f"patron{number}@example.org",
        username=username or f"reader{number}",
        password_hash=password_hash or await hasher.hash(password),
    )


def csrf_in(page: str) -> str:
    found = _CSRF.search(page)
    assert found is not None, "the page has no csrf_token field"
    return found.group(1)


async def form_token(client: Gateway, path: str = "/auth/login") -> str:
    """GET a form page (which also sets the session cookie) and return its CSRF token."""
    resp = await client.get(path)
    assert resp.status == 200
    return csrf_in(await resp.text())


async def post_form(
    client: Gateway, path: str, fields: dict[str, str], **kwargs: Any
) -> ClientResponse:
    return await client.post(path, data=fields, allow_redirects=False, **kwargs)


async def login(
    client: Gateway, name: str, password: str = PASSWORD, next: str | None = None
) -> ClientResponse:
    """Log in through the real form: fetch it for the token, then post it."""
    fields = {"csrf_token": await form_token(client), "username": name, "password": password}
    if next is not None:
        fields["next"] = next
    return await post_form(client, "/auth/login", fields)


async def can_log_in(client: Gateway, name: str, password: str = PASSWORD) -> bool:
    """Whether a fresh browser (the jar emptied) logs in with this name and password: 303
    yes, 401 (a failed login's answer) no; any other answer fails the test."""
    client.session.cookie_jar.clear()
    resp = await login(client, name, password)
    assert resp.status in (303, 401), f"a login answered {resp.status}"
    return resp.status == 303


# --- The session cookie ---------------------------------------------------------------------


def jar_cookie(client: Gateway, name: str = COOKIE) -> str | None:
    """The session cookie the client's jar holds now."""
    for morsel in client.session.cookie_jar:
        if morsel.key == name:
            return morsel.value
    return None


def set_cookies(resp: ClientResponse, name: str = COOKIE) -> list[Morsel[str]]:
    """Every Set-Cookie of `resp` for cookie `name`, parsed."""
    found = []
    for header in resp.headers.getall("Set-Cookie", ()):
        parsed: SimpleCookie = SimpleCookie()
        parsed.load(header)
        if name in parsed:
            found.append(parsed[name])
    return found


def clears_cookie(resp: ClientResponse, name: str = COOKIE) -> bool:
    return any(m.value in ("", '""') or m["max-age"] == "0" for m in set_cookies(resp, name))


async def fetch(
    client: Gateway,
    path: str,
    cookie: str | None,
    *,
    name: str = COOKIE,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> ClientResponse:
    """A request carrying exactly this session cookie (or none): the jar is emptied first so
    nothing it collected earlier rides along."""
    client.session.cookie_jar.clear()
    sent = {"Accept": "application/json", **(headers or {})}
    if cookie is not None:
        sent["Cookie"] = f"{name}={cookie}"
    return await client.request(method, path, headers=sent, allow_redirects=False, **kwargs)


async def account_on(client: Gateway, cookie: str | None, *, name: str = COOKIE) -> str | None:
    """The account id a required route's backend is given for this cookie; None when the
    gateway refuses the request as anonymous."""
    resp = await fetch(client, "/reservations/mine", cookie, name=name)
    if resp.status == 401:
        assert (await resp.json())["error"] == "authentication_required"
        return None
    assert resp.status == 200
    return identity_seen(await resp.json())["x-library-user-id"]


# --- What the backend was told -------------------------------------------------------------


def received(payload: dict[str, Any]) -> dict[str, list[str]]:
    """The echo backend's headers, by lower-case name."""
    out: dict[str, list[str]] = {}
    for key, value in payload["headers"]:
        out.setdefault(key.lower(), []).append(value)
    return out


def identity_seen(payload: dict[str, Any]) -> dict[str, str]:
    """The X-Library-* headers the backend got (one value each, or the test fails)."""
    seen = received(payload)
    out = {}
    for key, values in seen.items():
        if key.startswith("x-library-"):
            assert len(values) == 1, f"{key} arrived {len(values)} times"
            out[key] = values[0]
    return out


# --- Forged cookies and page texts ---------------------------------------------------------


def open_cookie(keys: MultiFernet, cookie: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(keys.decrypt(cookie.encode("ascii")))
    return data


def seal_cookie(keys: MultiFernet, data: object) -> str:
    return keys.encrypt(json.dumps(data).encode()).decode("ascii")


def page_text(key: str) -> str:
    """A text of the pages in the default language, as a page shows it (HTML-escaped, the
    way Jinja escapes it)."""
    return str(markupsafe.escape(i18n.translator(i18n.DEFAULT)[key]))


# --- Mail, as the SMTP catcher got it -------------------------------------------------------


async def settle(client: Gateway) -> None:
    """Finish the work a gateway queued after its last answers (forgotten password or
    username), then send every mail that is due now rather than at the worker's next wake-up."""
    await asyncio.gather(*client.app[SERVICES].background)
    await client.app[OUTBOX_WORKER].send_due()


def mail_subject(kind: str, lang: str = "nl") -> str:
    """The subject a mail of this kind has (the first line of its template)."""
    env = template_environment()
    assert env.loader is not None
    source, _, _ = env.loader.get_source(env, f"mail/{kind}.{lang}.txt")
    return source.split("\n", 1)[0].strip()


async def mail_for(
    catcher: MailCatcher, recipient: str, kind: str, lang: str = "nl"
) -> EmailMessage:
    """The newest mail of this kind that reached `recipient`, waiting for it if need be."""
    subject = mail_subject(kind, lang)
    return await catcher.wait_for(lambda m: m["To"] == recipient and m["Subject"] == subject)


def plain_text(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None, "the mail has no plain-text part"
    return str(part.get_content())


def link_in(message: EmailMessage) -> str:
    """The one link in a mail's plain text."""
    [link] = re.findall(r"https?://\S+", plain_text(message))
    return str(link)


def followed(link: str) -> str:
    """A mailed link's path and query, to follow it on the test server."""
    return URL(link).raw_path_qs


def token_of(link: str) -> str:
    return URL(link).query["token"]


async def outbox_for(pool: asyncpg.Pool, recipient: str) -> list[asyncpg.Record]:
    """Every mail queued for `recipient`, oldest first, as the outbox table holds it once no
    sender holds it: FOR UPDATE waits for a worker still delivering one of these mails, so
    the answer is never a half-way state."""
    return list(
        await pool.fetch(
            "SELECT * FROM outbox WHERE recipient = $1 ORDER BY id FOR UPDATE", recipient
        )
    )


# --- Bytes on the wire ----------------------------------------------------------------------


async def raw_request(port: int, data: bytes) -> tuple[int, bytes]:
    """Send bytes exactly as given (no client normalises them) and return the status code
    and the whole answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    status_line = answer.split(b"\r\n", 1)[0]
    return int(status_line.split()[1]), answer


def get_bytes(target: str, headers: str = "") -> bytes:
    return (
        f"GET {target} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n"
    ).encode("latin-1")


def as_chunk(data: bytes) -> bytes:
    """`data` as one chunk of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


async def answer_before_the_end(port: int, head: str, first_part: bytes) -> bytes:
    """Send a request head and only the first part of its body, and return the status line
    and headers of the answer. The rest of the body (for a chunked one, its last chunk) is
    never sent: an answer that arrives at all was given before the whole body was there, on
    what had streamed in so far."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode("latin-1") + first_part)
        await writer.drain()
        # The head is awaited, not the end of the connection: the server may linger to
        # drain a body it did not read.
        return await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


# --- The command line -----------------------------------------------------------------------


def cli(
    *args: str, stdin: str = "", env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`library-gateway ARGS…` as an operator runs it, in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        input=stdin,
        text=True,
        capture_output=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        check=False,
    )


# --- The login throttle and the hasher ------------------------------------------------------


async def ledger(pool: asyncpg.Pool) -> dict[str, int]:
    """The failure counters the throttle keeps, by key (`account:…`, `name:…`, `addr:…`)."""
    rows = await pool.fetch("SELECT key, failures FROM login_throttle")
    return {row["key"]: row["failures"] for row in rows}


async def lift_blocks(pool: asyncpg.Pool) -> None:
    """Let every block run out now, as the clock would (counters are kept)."""
    await pool.execute(
        "UPDATE login_throttle SET blocked_until = now() - interval '1 second'"
        " WHERE blocked_until IS NOT NULL"
    )


async def attempt(
    client: Gateway,
    name: str,
    password: str,
    *,
    headers: LooseHeaders | None = None,
    device: str | None = None,
) -> tuple[int, str | None]:
    """One login from a fresh browser: (status, Retry-After). The same extra headers go with
    the form's GET and its POST, as a client that forges them would send them. `device` is a
    device cookie the browser carries (`device_after_login`), as a patron's own browser would."""
    status, retry_after, _ = await attempt_on_device(
        client, name, password, headers=headers, device=device
    )
    return status, retry_after


async def attempt_on_device(
    client: Gateway,
    name: str,
    password: str,
    *,
    headers: LooseHeaders | None = None,
    device: str | None = None,
) -> tuple[int, str | None, str | None]:
    """`attempt`, also giving the device cookie the gateway set (None when it set none)."""
    client.session.cookie_jar.clear()
    sent = CIMultiDict(headers or {})
    if device is not None:
        sent["Cookie"] = f"{DEVICE_COOKIE}={device}"
    page = await client.get("/auth/login", headers=sent)
    assert page.status == 200
    resp = await client.post(
        "/auth/login",
        allow_redirects=False,
        headers=sent,
        data={
            "csrf_token": csrf_in(await page.text()),
            "username": name,
            "password": password,
        },
    )
    given = set_cookies(resp, DEVICE_COOKIE)
    return resp.status, resp.headers.get("Retry-After"), given[0].value if given else None


async def device_after_login(client: Gateway, name: str, password: str = PASSWORD) -> str:
    """Log in from a fresh browser and keep the device cookie it is given."""
    status, _, device = await attempt_on_device(client, name, password)
    assert status == 303 and device is not None
    return device


@contextlib.asynccontextmanager
async def hasher_held(hasher: PasswordHasher) -> AsyncIterator[None]:
    """Keep a one-slot hasher (max_workers=1, max_queue=0) busy until the block ends.

    The hasher has no public way to be kept busy on cue, so this takes its only slot through
    the same bounded queue a login uses and holds it on an event: deterministic, no timing.
    Inside the block every password check answers HasherBusy at once; a request that does not
    hash at all is unaffected, which is how the tests tell the two apart.
    """
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        entered.set()
        release.wait()

    held = asyncio.ensure_future(hasher._run(hold))
    await asyncio.to_thread(entered.wait)
    try:
        yield
    finally:
        release.set()
        await held
