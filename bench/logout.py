"""How long a patron's logout takes when connected libraries must be told of it (OpenID
Back-Channel Logout 1.0), against how long it takes when none must.

    python bench/logout.py [--logouts 200] [--write]

The gateway runs as shipped (`library-gateway run --routes R --clients C`, one worker, its
default settings, the embedded PostgreSQL), with two connected libraries: one whose
back-channel receiver answers at once, one whose receiver never answers (it holds every
request open until the gateway's 10-second timeout). Both receivers are processes of their
own (bench/peers/backchannel_receiver.py). Three setups, one after the other, each N
logouts in a row, every one from a browser of its own:

- no connected library: log in, log out;
- a library that answers: log in, sign in at that library (an authorization that ends in a
  code), log out;
- a library that never answers: the same, at the other library.

Only the logout (`POST /auth/logout`, answered 303) is timed. Prints the table; --write puts
it into docs/performance.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # `python bench/logout.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import asyncio
import datetime
import json
import os
import re
import secrets
import shutil
import statistics
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlencode

import aiohttp
from cryptography.fernet import Fernet

from auth.oidc.backchannel import PER_CLIENT
from bench.run import (
    PASSWORD,
    PYTHON,
    ROOT,
    Stack,
    add_patron,
    free_port,
    machine,
    one_route,
    prose,
    start_gateway,
    wait_http,
    write_section,
)

PATRON = "900003"
REDIRECT_URI = "http://127.0.0.1:9/cb"  # the discard port: the code is read, never followed
WARM_UP = 50
RECEIVER = ROOT / "bench" / "peers" / "backchannel_receiver.py"

DOCS = ROOT / "docs" / "performance.md"
HEADING = "## Logout with connected libraries"
START, END = "<!-- logout-results:start -->", "<!-- logout-results:end -->"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass(frozen=True)
class Setup:
    name: str
    client_id: str | None
    """The library the patron signs in to before logging out; None: none."""


@dataclass(frozen=True)
class Result:
    setup: Setup
    latencies: list[float]

    def percentile_ms(self, which: int) -> float:
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[which - 1] * 1000

    @property
    def max_ms(self) -> float:
        return max(self.latencies) * 1000


SETUPS = (
    Setup("no connected library", None),
    Setup("a library that answers at once", "answering"),
    Setup("a library that never answers", "silent"),
)


def start(stack: Stack, workdir: Path) -> tuple[str, dict[str, int]]:
    """The two receivers and the gateway; the gateway's URL and the receivers' ports."""
    ports = {"answering": free_port(), "silent": free_port()}
    for client_id, mode in (("answering", "answer"), ("silent", "hold")):
        stack.spawn(PYTHON, str(RECEIVER), str(ports[client_id]), mode)
        wait_http(f"http://127.0.0.1:{ports[client_id]}/stats")
    routes = one_route(workdir, free_port())
    clients = workdir / "clients.yaml"
    clients.write_text(
        "clients:\n"
        + "".join(
            f"""  - client_id: {client_id}
    name: Library {client_id}
    redirect_uris: [{REDIRECT_URI}]
    secret_env: BENCH_CLIENT_SECRET
    backchannel_logout_uri: http://127.0.0.1:{port}/logout/backchannel
"""
            for client_id, port in ports.items()
        )
    )
    port = free_port()
    data_dir = workdir / "var"
    key = Fernet.generate_key().decode()
    env = {
        "GATEWAY_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "BENCH_CLIENT_SECRET": secrets.token_hex(32),
    }
    start_gateway(stack, routes, port, data_dir, key, clients=clients, env=env)
    add_patron(data_dir, key, PATRON, "logout-bench@example.org")
    return f"http://127.0.0.1:{port}", ports


async def csrf(client: aiohttp.ClientSession, path: str) -> str:
    async with client.get(path) as resp:
        found = _CSRF.search(await resp.text())
    assert found, f"no form at {path}"
    return found.group(1)


async def one_logout(base: str, client_id: str | None) -> float:
    """A fresh browser logs in (and signs in at `client_id`); the seconds its logout took."""
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(base, cookie_jar=jar) as browser:
        fields = {"csrf_token": await csrf(browser, "/auth/login"), "username": PATRON}
        async with browser.post(
            "/auth/login", data={**fields, "password": PASSWORD}, allow_redirects=False
        ) as resp:
            assert resp.status == 303, f"login answered {resp.status}"
        if client_id is not None:
            query = urlencode(
                {
                    "response_type": "code",
                    "client_id": client_id,
                    "redirect_uri": REDIRECT_URI,
                    "scope": "openid",
                    "state": secrets.token_urlsafe(8),
                }
            )
            async with browser.get(f"/auth/oidc/authorize?{query}", allow_redirects=False) as resp:
                assert resp.status == 302 and "code=" in resp.headers["Location"], resp.status
        token = await csrf(browser, "/auth/logout")
        started = time.perf_counter()
        async with browser.post(
            "/auth/logout", data={"csrf_token": token}, allow_redirects=False
        ) as resp:
            await resp.read()
            took = time.perf_counter() - started
            assert resp.status == 303, f"logout answered {resp.status}"
    return took


def receiver_stats(port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as resp:
        stats: dict[str, int] = json.load(resp)
    return stats


async def delivered(port: int, expected: int, within: float = 30.0) -> int:
    """How many tokens the receiver at `port` has got, once it has `expected` (or the time
    is up)."""
    deadline = time.monotonic() + within
    while True:
        received = (await asyncio.to_thread(receiver_stats, port))["received"]
        if received >= expected or time.monotonic() > deadline:
            return received
        await asyncio.sleep(0.1)


async def benchmark(base: str, ports: dict[str, int], logouts: int) -> tuple[list[Result], str]:
    """The setups in order; the silent library's last, since what it leaves behind (held
    requests, deliveries waiting their turn) outlives its turn."""
    print(f"warm-up: {WARM_UP} logouts of each of the first two setups …", file=sys.stderr)
    for setup in SETUPS[:2]:
        for _ in range(WARM_UP):
            await one_logout(base, setup.client_id)
    results = []
    for setup in SETUPS:
        print(f"{setup.name}: {logouts} logouts …", file=sys.stderr)
        result = Result(setup, [await one_logout(base, setup.client_id) for _ in range(logouts)])
        print(
            f"  p50 {result.percentile_ms(50):.1f} ms, p99 {result.percentile_ms(99):.1f} ms",
            file=sys.stderr,
        )
        results.append(result)
    told = WARM_UP + logouts
    got = await delivered(ports["answering"], told)
    silent = await asyncio.to_thread(receiver_stats, ports["silent"])
    notes = (
        f"the answering library had received {got} of its {told} logout tokens; the silent "
        f"one {silent['received']} of its {logouts}, {silent['held']} of them still held open "
        f"(the worker has at most {PER_CLIENT} deliveries under way to one library; the rest "
        "wait their turn in the table)"
    )
    return results, notes


def render(results: list[Result], notes: str, logouts: int, load: float) -> str:
    lines = [
        "| setup | logouts | p50 ms | p99 ms | max ms |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {r.setup.name} | {len(r.latencies)} | {r.percentile_ms(50):.1f} "
        f"| {r.percentile_ms(99):.1f} | {r.max_ms:.1f} |"
        for r in results
    ]
    paragraphs = [
        f"Measured on {datetime.date.today().isoformat()} with `python bench/logout.py "
        f"--logouts {logouts}` on {machine()} (load average {load:.1f} at the start): the "
        "gateway as shipped (one worker, the "
        "embedded PostgreSQL), every logout from a browser of its own that has just logged "
        "in (and, but for the first row, signed in at the library), one at a time, after "
        f"{WARM_UP} logouts of warm-up in each of the first two setups; the silent library's "
        "setup runs last. Timed: `POST /auth/logout` to its 303.",
        "\n".join(lines),
        f"At the end {notes}. The logout writes the back-channel deliveries in its own "
        "transaction and answers; the libraries are told afterwards by the worker, so a "
        "library that never answers costs the patron nothing. Differences of a few tenths of "
        "a millisecond between the rows are within this machine's run-to-run noise.",
    ]
    return prose(paragraphs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logouts", type=int, default=200, help="logouts per setup")
    parser.add_argument("--write", action="store_true", help="rewrite docs/performance.md")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    if load > 1.0:
        print(f"warning: load average {load:.1f} before the start", file=sys.stderr)
    workdir = Path(tempfile.mkdtemp(prefix="gateway-logout-bench-"))
    stack = Stack(workdir)
    try:
        base, ports = start(stack, workdir)
        results, notes = asyncio.run(benchmark(base, ports, args.logouts))
    except AssertionError as exc:
        print(f"a step failed, so nothing is reported: {exc}", file=sys.stderr)
        for log in sorted(workdir.glob("*.err")):
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}", file=sys.stderr)
        return 1
    finally:
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    report = render(results, notes, args.logouts, load)
    print(report)
    if args.write:
        write_section(DOCS, report, HEADING, START, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
