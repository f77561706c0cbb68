"""Side-by-side benchmark of the OpenID Connect provider: a logged-in patron's authorization
plus the code exchange, library-gateway against npm's `oidc-provider` (the reference
implementation), both on loopback, measured in turns in the same run.

    python bench/oidc.py [--duration 10] [--concurrency 20] [--write] [--one-session]
                         [--profile FILE]

The gateway runs as shipped: `library-gateway run --routes R --clients C --port P --data-dir D`,
one worker, its default settings (JSON access log on, the default argon2, the embedded
PostgreSQL for codes and tokens). oidc-provider runs twice (bench/peers/oidc_provider.mjs):
as its quick start does, with its development interactions, in-memory storage and development
signing key; and as a deployment must run it, with the same but its storage in PostgreSQL
(bench/peers/postgres_adapter.mjs, a database of its own on the gateway's PostgreSQL server),
since the in-memory store is for development only. Each has the same confidential client, and
the relying party of bench/relying_party.py loads them in turns (A, B, C, A, B, C).

Each of the C workers is a browser with a session of its own: before every turn the patron
logs in at the provider once per worker (outside the measured time). One session shared by
every worker for the whole run (--one-session) measures something else at oidc-provider: its
in-memory store keeps every code and token of a grant in one map that it walks on every write,
so each flow of the same session makes the next one slower (its flows/s halve within 20 s),
and the turns' ratio would depend on how long the run has lasted.

Needs node and npm: oidc-provider is installed into .cache/ with npm, at pinned versions.
--write rewrites the section's results in docs/performance.md; --profile samples the gateway
with py-spy during one more turn and prints where its time goes.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # `python bench/oidc.py`: make `bench` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import asyncio
import datetime
import functools
import os
import secrets
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from importlib import metadata

from cryptography.fernet import Fernet

from bench import pyspy
from bench.relying_party import (
    CLIENT_ID,
    REDIRECT_URI,
    FlowFailed,
    Provider,
    Run,
    discover,
    log_in_through_pages,
    measure,
)
from bench.run import (
    PASSWORD,
    ROOT,
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
)
from gateway.config.settings import Settings
from gateway.database import ensure_database
from tests import npm

# Exact versions, oidc-provider's own dependencies too (as tests/npm.py pins its packages):
# a new release must not change the comparison on its own.
OIDC_PROVIDER = {
    "oidc-provider": "9.13.3",
    "jose": "6.2.19",
    "koa": "3.3.0",
    "debug": "4.4.3",
    # node-postgres, for the production row's storage
    "pg": "8.23.1",
    "pg-pool": "3.14.0",
    "pg-protocol": "1.16.1",
    "pg-connection-string": "2.14.1",
    "pg-types": "2.2.0",
    "pgpass": "1.0.5",
}
OIDC_PROVIDER_PREFIX = npm.CACHE / "oidc-provider"
LAUNCHER = ROOT / "bench" / "peers" / "oidc_provider.mjs"

PATRON = "900002"
WARM_UP = 2
TURNS = 2
GATEWAY = "library-gateway"
REFERENCE_STORED = "oidc-provider (npm), PostgreSQL storage"
REFERENCE = "oidc-provider (npm), in-memory development store"
REFERENCE_DATABASE = "oidc_provider"

DOCS = ROOT / "docs" / "performance.md"
HEADING = "## OpenID Connect: authorization + code exchange"
START, END = "<!-- oidc-results:start -->", "<!-- oidc-results:end -->"


def start_reference(
    stack: Stack, port: int, secret: str, database_url: str | None = None
) -> tuple[int, ...]:
    """oidc-provider on 127.0.0.1:`port`, installed first if it is not; its storage in the
    PostgreSQL database at `database_url` when given, in its own memory otherwise."""
    prefix = npm.install(OIDC_PROVIDER_PREFIX, OIDC_PROVIDER)
    env = {
        "OIDC_PROVIDER_PREFIX": str(prefix),
        "OIDC_PORT": str(port),
        "OIDC_CLIENT_ID": CLIENT_ID,
        "OIDC_CLIENT_SECRET": secret,
        "OIDC_REDIRECT_URI": REDIRECT_URI,
    }
    if database_url is not None:
        env["OIDC_DATABASE_URL"] = database_url
    process = stack.spawn("node", str(LAUNCHER), env=env)
    wait_http(f"http://127.0.0.1:{port}/.well-known/openid-configuration")
    return (process.pid,)


def postmaster(data_dir: Path) -> tuple[int, ...]:
    """The embedded PostgreSQL under `data_dir`: its own process, not the gateway's child, but
    the codes and tokens are written there, so its work is the provider's work."""
    pid_file = next(data_dir.rglob("postmaster.pid"), None)
    return () if pid_file is None else (int(pid_file.read_text().split()[0]),)


def server_url(data_dir: Path, database: str) -> str:
    """The URL of `database` on the embedded PostgreSQL under `data_dir` (the gateway's
    server), for asyncpg and node-postgres alike."""
    pid_file = next(data_dir.rglob("postmaster.pid"))
    # postmaster.pid: the pid, the data directory, the start time, the port, the socket folder
    lines = pid_file.read_text().splitlines()
    port, socket_dir = lines[3].strip(), lines[4].strip()
    return f"postgresql://postgres@/{database}?host={socket_dir}&port={port}"


def start_library_gateway(stack: Stack, workdir: Path, port: int, secret: str) -> tuple[int, ...]:
    """The gateway as shipped, serving one client, with the benchmark's patron."""
    routes = one_route(workdir, free_port())
    clients = workdir / "clients.yaml"
    clients.write_text(f"""clients:
  - client_id: {CLIENT_ID}
    name: Benchmark library
    redirect_uris: [{REDIRECT_URI}]
    secret_env: BENCH_CLIENT_SECRET
""")
    data_dir = workdir / "var"
    key = Fernet.generate_key().decode()
    env = {
        "GATEWAY_LOG_LEVEL": Settings().log_level,  # the default: the access log is on
        "GATEWAY_PUBLIC_URL": f"http://127.0.0.1:{port}",  # the issuer the client expects
        "BENCH_CLIENT_SECRET": secret,
    }
    gateway = start_gateway(stack, routes, port, data_dir, key, clients=clients, env=env)
    add_patron(data_dir, key, PATRON, "oidc-bench@example.org")
    return (gateway.pid, *postmaster(data_dir))


async def sessions(login: Callable[[], Awaitable[str]], count: int) -> list[str]:
    """`count` sessions of the patron, as from that many browsers, logged in one by one."""
    return [await login() for _ in range(count)]


async def benchmark(stack: Stack, workdir: Path, args: argparse.Namespace) -> list[Run]:
    secret = secrets.token_hex(32)
    gateway_port, reference_port, stored_port = free_port(), free_port(), free_port()
    print(f"starting oidc-provider {OIDC_PROVIDER['oidc-provider']} …", file=sys.stderr)
    reference_pids = start_reference(stack, reference_port, secret)
    print("starting library-gateway …", file=sys.stderr)
    gateway_pids = start_library_gateway(stack, workdir, gateway_port, secret)
    print("starting oidc-provider with PostgreSQL storage …", file=sys.stderr)
    data_dir = workdir / "var"
    # A database of oidc-provider's own on the gateway's server: both store on the same one.
    await ensure_database(server_url(data_dir, "postgres"), REFERENCE_DATABASE)
    stored_pids = start_reference(
        stack, stored_port, secret, server_url(data_dir, REFERENCE_DATABASE)
    ) + postmaster(data_dir)
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    setups: list[tuple[Provider, Callable[[], Awaitable[str]]]] = [
        (
            await discover(GATEWAY, gateway_url, gateway_pids),
            functools.partial(log_in, gateway_url, PATRON),
        ),
    ]
    for name, port, pids in (
        (REFERENCE_STORED, stored_port, stored_pids),
        (REFERENCE, reference_port, reference_pids),
    ):
        url = f"http://127.0.0.1:{port}"
        setups.append(
            (
                await discover(name, url, pids),
                functools.partial(log_in_through_pages, url, PATRON, PASSWORD),
            )
        )
    kept = {p.name: [await login()] for p, login in setups} if args.one_session else {}

    async def browsers(provider: Provider, login: Callable[[], Awaitable[str]]) -> list[str]:
        if args.one_session:
            return kept[provider.name]
        return await sessions(login, args.concurrency)

    for provider, login in setups:
        print(f"warm-up: {provider.name} …", file=sys.stderr)
        await measure(provider, await browsers(provider, login), secret, WARM_UP, args.concurrency)
    runs = []
    for turn in range(1, TURNS + 1):
        for provider, login in setups:
            cookies = await browsers(provider, login)  # new ones every turn: see above
            print(f"turn {turn}: {provider.name}, {args.duration} s …", file=sys.stderr)
            run = await measure(provider, cookies, secret, args.duration, args.concurrency)
            print(
                f"  {run.rate:,.0f} flows/s, p50 {run.percentile_ms(50):.1f} ms, "
                f"p99 {run.percentile_ms(99):.1f} ms, {run.cpu_ms_per_flow:.2f} ms CPU/flow",
                file=sys.stderr,
            )
            runs.append(run)

    if args.profile:
        provider, login = setups[0]
        cookies = await browsers(provider, login)
        print(f"profiling {provider.name} with py-spy, {args.duration} s …", file=sys.stderr)
        sampler = pyspy.record(provider.pids[0], args.duration, args.profile)
        await measure(provider, cookies, secret, args.duration, args.concurrency)
        await asyncio.to_thread(sampler.wait)
        print(pyspy.summary(args.profile, top=30), file=sys.stderr)
    return runs


def versions() -> str:
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True)
    return (
        f"library-gateway {metadata.version('library-gateway')} "
        f"(aiohttp {metadata.version('aiohttp')}, asyncpg {metadata.version('asyncpg')}, "
        f"PyJWT {metadata.version('PyJWT')}), oidc-provider {OIDC_PROVIDER['oidc-provider']} "
        f"(koa {OIDC_PROVIDER['koa']}, jose {OIDC_PROVIDER['jose']}, "
        f"Node.js {node.stdout.strip().lstrip('v')})"
    )


def render(runs: list[Run], args: argparse.Namespace, load: float) -> str:
    """The section's measured part: every turn, and the ratios turn by turn."""
    lines = [
        "| setup | turn | flows/s | p50 ms | p99 ms | provider CPU ms/flow |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    turns: dict[str, int] = {}
    for run in runs:
        turns[run.name] = turns.get(run.name, 0) + 1
        lines.append(
            f"| {run.name} | {turns[run.name]} | {run.rate:,.0f} | {run.percentile_ms(50):.1f} "
            f"| {run.percentile_ms(99):.1f} | {run.cpu_ms_per_flow:.2f} |"
        )
    ours = [run for run in runs if run.name == GATEWAY]

    def against(name: str) -> tuple[float, str]:
        """The gateway's flows/s over `name`'s, turn by turn, and the sentence that says so."""
        theirs = [run for run in runs if run.name == name]
        ratios = [a.rate / b.rate for a, b in zip(ours, theirs, strict=True)]
        cpu = [a.cpu_ms_per_flow / b.cpu_ms_per_flow for a, b in zip(ours, theirs, strict=True)]
        ratio = statistics.mean(ratios)
        return ratio, (
            f"against {name}, flows/s turn by turn: "
            + ", ".join(f"{r:.2f}x" for r in ratios)
            + f"; **{ratio:.2f}x** on average; CPU per flow, the gateway's over its: "
            + ", ".join(f"{c:.2f}x" for c in cpu)
        )

    deployed, deployed_text = against(REFERENCE_STORED)
    _, development_text = against(REFERENCE)
    verdict = "meets" if deployed >= 1.0 else "is below"
    command = f"python bench/oidc.py --duration {args.duration} --concurrency {args.concurrency}"
    if args.one_session:
        command += " --one-session"
        sessions_are = "all in one session of one login, kept for the whole run"
    else:
        sessions_are = "each in a session of its own (the patron logged in anew for every turn)"
    paragraphs = [
        f"Measured on {datetime.date.today().isoformat()} with `{command}` on {machine()} "
        f"(load average {load:.1f} at the start); {versions()}.",
        "A flow is a logged-in patron's authorization (GET; code, openid, state, nonce, PKCE "
        "S256) answered with a redirect carrying the code, then that code exchanged at the "
        f"token endpoint (client_secret_basic) for an ID token. {args.concurrency} workers "
        "with one connection each run in the benchmark's own Python process on the same "
        f"machine, {sessions_are}; the three setups take turns of {args.duration} s after "
        f"{WARM_UP} s of warm-up each. Provider CPU is the user and system time of the "
        "provider's processes over the turn (the gateway with its PostgreSQL; node; node "
        "with the PostgreSQL it stores in), per flow.",
        "\n".join(lines),
        f"Library-gateway {deployed_text}: oidc-provider as a deployment runs it, its store "
        "in PostgreSQL like the gateway's (the in-memory store, oidc-provider says at start, "
        "MUST be replaced so as not to lose everything on a restart and to share it between "
        f"processes), and the comparison the target of 1.0x is judged on, which it {verdict}. "
        f"Library-gateway {development_text}: oidc-provider's development quick start, "
        "everything in one node process's memory (an LRU of 1,000 entries).",
    ]
    return prose(paragraphs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per turn")
    parser.add_argument("--concurrency", type=int, default=20, help="flows at once")
    parser.add_argument("--write", action="store_true", help="rewrite docs/performance.md")
    parser.add_argument(
        "--one-session",
        action="store_true",
        help="every worker in the one session of a single login, kept for the whole run",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help="sample the gateway with py-spy during one more turn; raw stacks to FILE",
    )
    args = parser.parse_args()
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            print(f"needs {tool}: apt-get install nodejs npm", file=sys.stderr)
            return 1
    if args.profile and pyspy.executable() is None:
        print("--profile needs py-spy: .venv/bin/pip install py-spy", file=sys.stderr)
        return 1
    try:
        import uvloop
    except ImportError:
        pass
    else:  # the load generator's own overhead as small as it can be, for both alike
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

    load = os.getloadavg()[0]
    if load > 1.0:
        print(
            f"warning: load average {load:.1f} before the start: the machine is busy",
            file=sys.stderr,
        )
    workdir = Path(tempfile.mkdtemp(prefix="gateway-oidc-bench-"))
    stack = Stack(workdir)
    try:
        runs = asyncio.run(benchmark(stack, workdir, args))
    except FlowFailed as exc:
        print(f"a flow failed, so nothing is reported: {exc}", file=sys.stderr)
        for log in sorted(workdir.glob("*.err")):
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}", file=sys.stderr)
        return 1
    finally:
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    report = render(runs, args, load)
    print(report)
    if args.write:
        write_section(DOCS, report, HEADING, START, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
