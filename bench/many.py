"""Many patrons: the proxy with 100,000 live sessions in the database and wrk cycling through
tens of thousands of distinct session cookies, so that no per-session cache stays warm,
against the same small GET with one patron's cookie, in the same run.

    python bench/many.py [--sessions 100000] [--distinct 20000] [--duration 10]
                         [--connections 50] [--write]

The gateway runs as shipped (`library-gateway run`, one worker, its defaults: the JSON access
log on, the embedded PostgreSQL), in front of a static nginx (a 1 KiB file). The sessions are
written straight into its database (one patron, as many sessions as browsers), and their
cookies made with the gateway's cookie key the way its login makes them; wrk's Lua script
(bench/peers/cookies.lua) gives each request the next cookie of the list. Reported: requests
a second, p50 and p99, the database transactions the gateway committed per proxied request
(from pg_stat_database, the housekeeping's few included), and the worker's resident memory
once every distinct cookie was seen. --write puts the report into docs/performance.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # `python bench/many.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import asyncio
import datetime
import hashlib
import json
import os
import secrets
import shutil
import tempfile
import time

import asyncpg
import psutil
from cryptography.fernet import Fernet

from bench.run import (
    ROOT,
    Result,
    Stack,
    add_patron,
    free_port,
    log_in,
    machine,
    one_route,
    prose,
    start_gateway,
    wait_http,
    write_section,
    wrk,
)
from gateway.database import database_url_for, start_embedded

DOCS = ROOT / "docs" / "performance.md"
HEADING = "## Many patrons"
START, END = "<!-- many-results:start -->", "<!-- many-results:end -->"
SCRIPT = ROOT / "bench" / "peers" / "cookies.lua"
PATRON = "900004"
COOKIE = "library_session"


async def fill(database_url: str, sessions: int) -> tuple[str, list[str]]:
    """`sessions` live sessions of the benchmark's patron; their ids, and the patron's."""
    conn = await asyncpg.connect(database_url)
    try:
        account = await conn.fetchval(
            "SELECT account_id::text FROM memberships WHERE pass_number = $1", PATRON
        )
        ids = [secrets.token_urlsafe(32) for _ in range(sessions)]
        await conn.copy_records_to_table(
            "sessions",
            columns=["sid_hash", "account_id", "expires_at"],
            records=(
                (
                    hashlib.sha256(sid.encode()).digest(),
                    account,
                    datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=12),
                )
                for sid in ids
            ),
        )
    finally:
        await conn.close()
    return str(account), ids


def cookies(key: str, account: str, ids: list[str]) -> list[str]:
    """Session cookies as the gateway's login writes them (auth/pages/login.py)."""
    fernet = Fernet(key.encode())
    now = int(time.time())
    return [
        fernet.encrypt(
            json.dumps(
                {"created": now, "session": {"sid": sid, "uid": account, "iat": now, "seen": now}}
            ).encode()
        ).decode()
        for sid in ids
    ]


async def committed(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(
            await conn.fetchval(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
            )
        )
    finally:
        await conn.close()


def rss_mib(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def render(
    args: argparse.Namespace, rows: list[Result], per_request: list[float], rss: list[float]
) -> str:
    one, many = rows
    lines = [
        "| setup | requests/s | p50 ms | p99 ms | database transactions per request |"
        " worker RSS MiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row, queries, memory in zip(rows, per_request, rss, strict=True):
        lines.append(
            f"| {row.name} | {row.rps:,.0f} | {row.p50_ms:.2f} | {row.p99_ms:.2f} |"
            f" {queries:.3f} | {memory:.0f} |"
        )
    ratio = many.rps / one.rps
    paragraphs = [
        f"Measured on {datetime.date.today().isoformat()} with `python bench/many.py --sessions "
        f"{args.sessions} --distinct {args.distinct} --duration {args.duration} --connections "
        f"{args.connections}` on {machine()} (load average {os.getloadavg()[0]:.1f} at the "
        f"end): the gateway as shipped, {args.sessions:,} live sessions in its database, wrk "
        f"with {args.connections} connections giving each request the next of "
        f"{args.distinct:,} distinct cookies, against the same GET with one patron's cookie.",
        "\n".join(lines),
        f"Many patrons against one: **{ratio:.2f}x** the requests/s (the goal: at least 0.8x). "
        "The distinct cookies' run follows a warm-up in which every cookie was given once, so "
        "it measures the steady state. Database transactions are counted over the measured "
        "run (the gateway's background work included) and divided by its requests; the "
        "worker's memory is read after the run, every distinct cookie seen.",
    ]
    return prose(paragraphs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--distinct", type=int, default=20_000)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--write", action="store_true", help="rewrite docs/performance.md")
    args = parser.parse_args()
    if args.distinct > args.sessions:
        parser.error("--distinct cannot exceed --sessions")
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            print(f"needs {tool}: apt-get install nginx wrk", file=sys.stderr)
            return 1
    workdir = Path(tempfile.mkdtemp(prefix="gateway-many-"))
    www = workdir / "www"
    www.mkdir()
    (www / "index.html").write_bytes(os.urandom(512).hex().encode())
    stack = Stack(workdir)
    try:
        static = free_port()
        stack.nginx("static", f"server {{ listen 127.0.0.1:{static}; root {www}; }}")
        routes = one_route(workdir, static)
        key = Fernet.generate_key().decode()
        port = free_port()
        data_dir = workdir / "var"
        gateway = start_gateway(stack, routes, port, data_dir, key)
        add_patron(data_dir, key, PATRON, "many@example.org")
        wait_http(f"http://127.0.0.1:{static}/")
        database_url = database_url_for(start_embedded(data_dir))
        base = f"http://127.0.0.1:{port}"
        print(f"writing {args.sessions:,} sessions …", file=sys.stderr)
        account, ids = asyncio.run(fill(database_url, args.sessions))
        own = asyncio.run(log_in(base, PATRON))
        (workdir / "cookies.txt").write_text(
            "\n".join(f"{COOKIE}={c}" for c in cookies(key, account, ids[: args.distinct])) + "\n"
        )
        url = f"{base}/index.html"
        rows, per_request, rss = [], [], []
        for name, cookie, script in (
            ("one patron's cookie", own, None),
            (f"{args.distinct:,} distinct cookies", None, SCRIPT),
        ):
            env = {"COOKIES_FILE": str(workdir / "cookies.txt")}
            # Warm-up: long enough for wrk to give every distinct cookie once (at a few
            # thousand requests a second), so that the measured run is the steady state.
            warm_up = 2 if script is None else 2 + args.distinct // 2000
            wrk(name, url, warm_up, args.connections, cookie, script=script, env=env)
            before = asyncio.run(committed(database_url))
            row = wrk(name, url, args.duration, args.connections, cookie, script=script, env=env)
            after = asyncio.run(committed(database_url))
            rows.append(row)
            per_request.append((after - before) / (row.rps * args.duration))
            rss.append(rss_mib(gateway.pid))
            print(
                f"  {name}: {row.rps:,.0f} requests/s, p99 {row.p99_ms:.1f} ms, "
                f"{per_request[-1]:.3f} transactions a request, RSS {rss[-1]:.0f} MiB",
                file=sys.stderr,
            )
        report = render(args, rows, per_request, rss)
        print(report)
        if args.write:
            write_section(DOCS, report, HEADING, START, END)
    finally:
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
