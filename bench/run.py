"""Side-by-side benchmark: library-gateway against the usual ways to put a login in front of
a service, all on loopback, all in one run so the ratios hold on a noisy machine.

    python bench/run.py [--duration 10] [--connections 50] [--big-mib 1024] [--write]
                        [--no-pinned]

Needs Debian's nginx and wrk (`apt-get install nginx wrk`) and util-linux's taskset. Prints
the tables; with --write it also rewrites docs/performance.md. The small GET is measured twice:
as the processes please, and with the same one core for each setup's own processes (skip
that round with --no-pinned). Every load goes to 127.0.0.1 only and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psutil
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
PASSWORD = "bench patron passphrase"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers, which is all we wait for
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float


def wrk(
    name: str,
    url: str,
    duration: int,
    connections: int,
    cookie: str | None,
    cpus: set[int] | None = None,
    *,
    script: Path | None = None,
    env: dict[str, str] | None = None,
) -> Result:
    """wrk against `url`; with `script`, a Lua script of bench/peers shapes the requests (it
    reads what it needs from `env`)."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    if cpus is not None:
        command = ["taskset", "-c", ",".join(map(str, sorted(cpus))), *command]
    if cookie:
        command += ["-H", f"Cookie: {cookie}"]
    if script is not None:
        command += ["-s", str(script)]
    out = subprocess.run(
        [*command, url],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def percentile(label: str) -> float:
        match = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)\b", out)
        assert match, out
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        print(f"  warning: {name}: {errors.group(1)} non-2xx answers", file=sys.stderr)
    return Result(name, rps, percentile("50"), percentile("99"))


class Stack:
    """Every process of the benchmark; all of them stop when the block ends."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: list[subprocess.Popen[bytes]] = []
        self.nginx_pids: list[Path] = []

    def spawn(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            args,
            env={**os.environ, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=open(self.workdir / f"{len(self.processes)}.err", "wb"),  # noqa: SIM115
        )
        self.processes.append(process)
        return process

    def nginx_workers(self, name: str) -> list[int]:
        master = int((self.workdir / f"{name}.pid").read_text().strip())
        return [child.pid for child in psutil.Process(master).children()]

    def nginx(self, name: str, server_block: str) -> None:
        pid = self.workdir / f"{name}.pid"
        conf = self.workdir / f"{name}.conf"
        conf.write_text(f"""
worker_processes 1;
pid {pid};
error_log {self.workdir}/{name}.error.log;
events {{ worker_connections 4096; }}
http {{
  # As its users run it: the access log on, written in 64 KiB batches (nginx's own advice
  # for a busy server).
  access_log {self.workdir}/{name}.access.log combined buffer=64k;
  keepalive_requests 1000000;
  client_max_body_size 0;
  {server_block}
}}
""")
        subprocess.run(["nginx", "-c", str(conf)], check=True)
        self.nginx_pids.append(pid)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        for pid in self.nginx_pids:
            if pid.exists():
                os.kill(int(pid.read_text().strip()), signal.SIGQUIT)


@contextmanager
def pinned(pids: list[int], cpus: set[int]) -> Iterator[None]:
    """Keep these processes on `cpus` while the block runs."""
    before = {pid: os.sched_getaffinity(pid) for pid in pids}
    for pid in pids:
        os.sched_setaffinity(pid, cpus)
    try:
        yield
    finally:
        for pid, allowed in before.items():
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(pid, allowed)


@contextmanager
def peak_rss(pid: int) -> Iterator[dict[str, float]]:
    """Peak resident memory of a process tree while the block runs, in MiB."""
    result = {"baseline": 0.0, "peak": 0.0}
    root = psutil.Process(pid)

    def rss() -> float:
        total = root.memory_info().rss
        for child in root.children(recursive=True):
            total += child.memory_info().rss
        return total / 2**20

    result["baseline"] = result["peak"] = rss()
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            result["peak"] = max(result["peak"], rss())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()


def curl_speed(args: list[str]) -> float:
    """MiB/s of one curl transfer."""
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{speed_download} %{speed_upload}", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return max(float(out[0]), float(out[1])) / 2**20


async def log_in(base: str, name: str) -> str:
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(base, cookie_jar=jar) as client:
        async with client.get("/auth/login") as resp:
            token = re.search(r'name="csrf_token" value="([^"]+)"', await resp.text())
        assert token
        async with client.post(
            "/auth/login",
            data={"csrf_token": token.group(1), "username": name, "password": PASSWORD},
            allow_redirects=False,
        ) as resp:
            assert resp.status == 303, resp.status
        cookie = next(c for c in jar if c.key == "library_session")
        return f"library_session={cookie.value}"


async def login_storm(base: str, name: str, per_second: int, seconds: float) -> dict[str, int]:
    """`per_second` logins a second for `seconds`, each a real GET form + POST."""
    outcomes: dict[str, int] = {}

    async def one() -> None:
        try:
            await log_in(base, name)
            outcome = "303"
        except AssertionError as exc:
            outcome = str(exc) or "no form"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    tasks = []
    started = time.monotonic()
    for index in range(int(per_second * seconds)):
        delay = started + index / per_second - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    return outcomes


async def login_capacity(base: str, name: str, browsers: int, seconds: float) -> float:
    """Logins a second the gateway completes with `browsers` logging in back to back (each a
    real GET form + POST, the default argon2 parameters)."""
    done = 0
    end = time.monotonic() + seconds

    async def browser() -> None:
        nonlocal done
        while time.monotonic() < end:
            await log_in(base, name)
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(browser() for _ in range(browsers)))
    return done / (time.monotonic() - started)


def one_route(workdir: Path, backend_port: int) -> Path:
    """routes.yaml with one route, all of `/`, login required, to a backend on `backend_port`
    (one nobody listens on, for a benchmark of the gateway's own endpoints)."""
    routes = workdir / "routes.yaml"
    routes.write_text(
        f"routes:\n  - name: library\n    prefix: /\n"
        f"    backend: http://127.0.0.1:{backend_port}\n    auth: required\n"
    )
    return routes


def start_gateway(
    stack: Stack,
    routes: Path,
    port: int,
    data_dir: Path,
    key: str,
    workers: int = 1,
    *,
    clients: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """`library-gateway run` on 127.0.0.1:`port` with its default settings (the JSON access
    log on, written to a file as a service manager would), `env` laid over them; serving
    `clients` when given."""
    federation = ("--clients", str(clients)) if clients is not None else ()
    process = stack.spawn(
        PYTHON,
        "-m",
        "gateway",
        "run",
        "--routes",
        str(routes),
        *federation,
        "--port",
        str(port),
        "--admin-port",
        "0",
        "--workers",
        str(workers),
        "--data-dir",
        str(data_dir),
        env={"GATEWAY_COOKIE_KEYS": key, **(env or {})},
    )
    wait_http(f"http://127.0.0.1:{port}/healthz")
    return process


def add_patron(data_dir: Path, key: str, pass_number: str, email: str) -> None:
    """A patron with the benchmark's password, added with `library-gateway accounts add`."""
    subprocess.run(
        [
            PYTHON,
            "-m",
            "gateway",
            "accounts",
            "add",
            "--pass-number",
            pass_number,
            "--email",
            email,
            "--password-stdin",
            "--data-dir",
            str(data_dir),
        ],
        input=PASSWORD + "\n",
        text=True,
        check=True,
        capture_output=True,
        env={**os.environ, "GATEWAY_COOKIE_KEYS": key},
    )


def otlp_batches(stack: Stack) -> int:
    """The batches of spans the OTLP sink has taken so far (its log: a line a batch)."""
    log = stack.workdir / "otlp.batches.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return sum(1 for line in lines if '"POST ' in line and '" 200 ' in line)


def machine() -> str:
    model = "unknown CPU"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} cores ({model}), "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


QUIET = "library-gateway, access log off"
TRACED = "library-gateway, OTLP export on"
SAMPLED = "library-gateway, OTLP export on, 1 in 10 sampled"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--big-mib", type=int, default=1024, help="size of the big transfer")
    parser.add_argument("--write", action="store_true", help="rewrite docs/performance.md")
    parser.add_argument(
        "--no-pinned",
        action="store_true",
        help="skip the second small-GET round with one core for each setup",
    )
    args = parser.parse_args()
    for tool in ("nginx", "wrk", "curl", *(() if args.no_pinned else ("taskset",))):
        if shutil.which(tool) is None:
            print(f"needs {tool}: apt-get install nginx wrk curl util-linux", file=sys.stderr)
            return 1

    workdir = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    www = workdir / "www"
    www.mkdir()
    (www / "index.html").write_bytes(os.urandom(768).hex().encode()[:1024])
    with open(www / "big.bin", "wb") as big:
        block = os.urandom(1 << 20)
        for _ in range(args.big_mib):
            big.write(block)
    key = Fernet.generate_key().decode()
    peer_cookie = (
        "library_session="
        + Fernet(key.encode())
        .encrypt(json.dumps({"created": int(time.time()), "session": {"uid": "bench"}}).encode())
        .decode()
    )
    ports = {
        name: free_port()
        for name in (
            "static",
            "nginx",
            "auth",
            "nginx_auth",
            "session",
            "gateway",
            "gateway_quiet",
            "gateway2",
            "sink",
            "gateway_traced",
            "gateway_sampled",
            "otlp",
        )
    }
    stack = Stack(workdir)
    rows: list[Result] = []
    pinned_rows: list[Result] = []
    extra: dict[str, str] = {}
    try:
        stack.nginx("static", f"server {{ listen 127.0.0.1:{ports['static']}; root {www}; }}")
        upstream = f"upstream backend {{ server 127.0.0.1:{ports['static']}; keepalive 64; }}"
        proxy = (
            "proxy_pass http://backend; proxy_http_version 1.1; "
            'proxy_set_header Connection ""; proxy_buffering off;'
        )
        stack.nginx(
            "proxy",
            f"{upstream} server {{ listen 127.0.0.1:{ports['nginx']}; location / {{ {proxy} }} }}",
        )
        auth = stack.spawn(
            PYTHON, str(ROOT / "bench/peers/auth_service.py"), str(ports["auth"]), key
        )
        stack.nginx(
            "auth",
            f"{upstream} upstream decide {{ server 127.0.0.1:{ports['auth']}; "
            f"keepalive 64; }} server {{ listen 127.0.0.1:{ports['nginx_auth']}; "
            f"location = /_auth {{ internal; proxy_pass http://decide/auth; "
            'proxy_http_version 1.1; proxy_set_header Connection ""; '
            'proxy_pass_request_body off; proxy_set_header Content-Length ""; } '
            f"location / {{ auth_request /_auth; {proxy} }} }}",
        )
        session = stack.spawn(
            PYTHON,
            str(ROOT / "bench/peers/session_proxy.py"),
            str(ports["session"]),
            key,
            f"http://127.0.0.1:{ports['static']}",
        )
        stack.spawn(PYTHON, str(ROOT / "bench/peers/upload_sink.py"), str(ports["sink"]))
        # An OTLP/HTTP collector that takes every batch and drops it (nginx answers 200 and
        # discards the body); a line a batch in its own, unbuffered log.
        stack.nginx(
            "otlp",
            f"server {{ listen 127.0.0.1:{ports['otlp']}; "
            f"access_log {workdir / 'otlp.batches.log'}; return 200; }}",
        )
        routes = workdir / "routes.yaml"
        routes.write_text(f"""routes:
  - name: library
    prefix: /
    backend: http://127.0.0.1:{ports["static"]}
    auth: required
  - name: upload
    prefix: /upload
    backend: http://127.0.0.1:{ports["sink"]}
    auth: required
""")
        gateway = start_gateway(stack, routes, ports["gateway"], workdir / "var", key)
        # The same, its access log off: what the log costs (the table's last row).
        quiet = start_gateway(
            stack,
            routes,
            ports["gateway_quiet"],
            workdir / "var",
            key,
            env={"GATEWAY_LOG_LEVEL": "WARNING"},
        )
        # The same, exporting its spans over OTLP (every OTEL_* setting at its default), and
        # once more with the sampler an operator would reach for at this rate.
        otlp = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{ports['otlp']}"}
        traced = start_gateway(
            stack, routes, ports["gateway_traced"], workdir / "var", key, env=otlp
        )
        sampled = start_gateway(
            stack,
            routes,
            ports["gateway_sampled"],
            workdir / "var",
            key,
            env={
                **otlp,
                "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": "0.1",
            },
        )
        add_patron(workdir / "var", key, "900001", "bench@example.org")
        for port in (ports["auth"], ports["session"], ports["sink"]):
            wait_http(f"http://127.0.0.1:{port}/")
        base = f"http://127.0.0.1:{ports['gateway']}"
        cookie = asyncio.run(log_in(base, "900001"))

        duration, connections = args.duration, args.connections
        print(f"small GET, {connections} connections, {duration} s each …", file=sys.stderr)
        targets = [
            ("nginx-proxy (no auth)", ports["nginx"], None),
            ("nginx + auth_request", ports["nginx_auth"], peer_cookie),
            ("aiohttp-session proxy", ports["session"], peer_cookie),
            ("library-gateway", ports["gateway"], cookie),
            (QUIET, ports["gateway_quiet"], cookie),
            (TRACED, ports["gateway_traced"], cookie),
            (SAMPLED, ports["gateway_sampled"], cookie),
        ]
        for name, port, with_cookie in targets:  # warm-up, then the measured run
            wrk(name, f"http://127.0.0.1:{port}/index.html", 2, connections, with_cookie)
            batches = otlp_batches(stack)
            rows.append(
                wrk(name, f"http://127.0.0.1:{port}/index.html", duration, connections, with_cookie)
            )
            if name == TRACED:
                # Three spans a request (the request, its session check, the call to the
                # backend); full batches go out at once, so all but the last are in by now.
                made = round(rows[-1].rps * duration) * 3
                sent = otlp_batches(stack) - batches
                extra["otlp"] = (
                    f"the measured run made about {made:,} spans; {sent:,} batches of 512 "
                    f"(the default batch), {sent * 512:,} spans, reached the sink during it"
                )

        if not args.no_pinned and os.cpu_count() and os.cpu_count() >= 2:  # type: ignore[operator]
            print("small GET, the same one core for each setup …", file=sys.stderr)
            # Each setup's own processes on core 0; wrk and the backend on core 1.
            own = {
                "nginx-proxy (no auth)": stack.nginx_workers("proxy"),
                "nginx + auth_request": [*stack.nginx_workers("auth"), auth.pid],
                "aiohttp-session proxy": [session.pid],
                "library-gateway": [gateway.pid],
                QUIET: [quiet.pid],
                TRACED: [traced.pid],
                SAMPLED: [sampled.pid],
            }
            with pinned([*stack.nginx_workers("static"), *stack.nginx_workers("otlp")], {1}):
                for name, port, with_cookie in targets:
                    with pinned(own[name], {0}):
                        url = f"http://127.0.0.1:{port}/index.html"
                        wrk(name, url, 2, connections, with_cookie, cpus={1})
                        pinned_rows.append(
                            wrk(name, url, duration, connections, with_cookie, cpus={1})
                        )

        print("big transfers …", file=sys.stderr)
        big_url = "/big.bin"
        nginx_down = curl_speed([f"http://127.0.0.1:{ports['nginx']}{big_url}"])
        with peak_rss(gateway.pid) as rss_down:
            gateway_down = curl_speed(["-H", f"Cookie: {cookie}", f"{base}{big_url}"])
        nginx_up = curl_speed(
            [
                "-T",
                str(www / "big.bin"),
                "-H",
                "Expect:",
                f"http://127.0.0.1:{ports['sink']}/upload",
            ]
        )
        with peak_rss(gateway.pid) as rss_up:
            gateway_up = curl_speed(
                [
                    "-T",
                    str(www / "big.bin"),
                    "-H",
                    "Expect:",
                    "-H",
                    f"Cookie: {cookie}",
                    f"{base}/upload/big",
                ]
            )
        extra["download"] = (
            f"{gateway_down:.0f} MiB/s through the gateway, "
            f"{nginx_down:.0f} MiB/s through nginx "
            f"({gateway_down / nginx_down:.0%}); gateway RSS grew "
            f"{rss_down['peak'] - rss_down['baseline']:.1f} MiB"
        )
        extra["upload"] = (
            f"{gateway_up:.0f} MiB/s through the gateway, {nginx_up:.0f} MiB/s "
            f"straight to the backend ({gateway_up / nginx_up:.0%}); gateway RSS "
            f"grew {rss_up['peak'] - rss_up['baseline']:.1f} MiB"
        )

        print("logins a second …", file=sys.stderr)
        capacity = asyncio.run(login_capacity(base, "900001", 4, duration))
        extra["capacity"] = (
            f"{capacity:.1f} logins/s with the default argon2 parameters (4 browsers logging in "
            f"back to back for {duration} s, nothing else running)"
        )
        print("login storms …", file=sys.stderr)
        storms = []
        for rate in (20, max(1, round(capacity))):
            storm: dict[str, dict[str, int]] = {}

            def run_storm(rate: int = rate, storm: dict[str, dict[str, int]] = storm) -> None:
                storm["outcomes"] = asyncio.run(login_storm(base, "900001", rate, duration))

            thread = threading.Thread(target=run_storm)
            thread.start()
            during = wrk(
                f"library-gateway during {rate} logins/s",
                f"{base}/index.html",
                duration,
                connections,
                cookie,
            )
            thread.join()
            rows.append(during)
            answers = ", ".join(
                f"{count} x {status}" for status, count in sorted(storm.get("outcomes", {}).items())
            )
            storms.append(f"{rate * duration} logins in {duration} s answered {answers}")
        extra["storm"] = "; ".join(storms)

        print("in turns: the log, and nginx + auth_request …", file=sys.stderr)
        gateway_url = f"{base}/index.html"
        extra["log_turns"] = in_turns(
            (gateway_url, cookie),
            (f"http://127.0.0.1:{ports['gateway_quiet']}/index.html", cookie),
            connections,
            "with the log on over the log off",
        )
        extra["auth_turns"] = in_turns(
            (gateway_url, cookie),
            (f"http://127.0.0.1:{ports['nginx_auth']}/index.html", peer_cookie),
            connections,
            "the gateway over nginx + auth_request",
        )

        print("--workers 2 …", file=sys.stderr)
        start_gateway(stack, routes, ports["gateway2"], workdir / "var", key, workers=2)
        url2 = f"http://127.0.0.1:{ports['gateway2']}/index.html"
        wrk("warm-up", url2, 2, connections, cookie)
        # One worker and two measured in turns, each pair within a minute: the machine's
        # speed drifts more than that between the first table and this point.
        pairs = []
        for _ in range(2):
            one = wrk("library-gateway", f"{base}/index.html", duration, connections, cookie)
            two = wrk("library-gateway --workers 2", url2, duration, connections, cookie)
            pairs.append((one, two))
        rows.append(pairs[-1][1])
        ratios_2 = sorted(two.rps / one.rps for one, two in pairs)
        extra["workers"] = (
            f"{sum(ratios_2) / len(ratios_2):.2f}x one worker, in turns ("
            + ", ".join(f"{one.rps:,.0f} against {two.rps:,.0f} requests/s" for one, two in pairs)
            + ")"
        )
    finally:
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    report = render(rows, pinned_rows, extra, args)
    print(report)
    if args.write:
        write_results(ROOT / "docs" / "performance.md", report)
    return 0


TURN_PAIRS, TURN_SECONDS = 6, 4


def in_turns(
    a: tuple[str, str | None], b: tuple[str, str | None], connections: int, what: str
) -> str:
    """The requests/s of `a` over `b` (each a URL and its cookie), measured in turns: pairs of
    short runs back to back, A then B and B then A in alternation, so the machine's drift
    (as large as the differences measured here) falls on both alike; the median of the pairs'
    ratios, and their range."""
    for url, with_cookie in (a, b):
        wrk("warm-up", url, 1, connections, with_cookie)

    def run(side: tuple[str, str | None]) -> float:
        return wrk("turn", side[0], TURN_SECONDS, connections, side[1]).rps

    ratios_ab = []
    for pair in range(TURN_PAIRS):
        if pair % 2 == 0:
            rps_a = run(a)
            rps_b = run(b)
        else:
            rps_b = run(b)
            rps_a = run(a)
        ratios_ab.append(rps_a / rps_b)
    ratios_ab.sort()
    middle = len(ratios_ab) // 2
    median = (ratios_ab[middle - 1] + ratios_ab[middle]) / 2
    return (
        f"{median:.2f}x {what} (the median of {TURN_PAIRS} pairs of {TURN_SECONDS} s runs "
        f"back to back, {ratios_ab[0]:.2f}x to {ratios_ab[-1]:.2f}x)"
    )


START, END = "<!-- results:start -->", "<!-- results:end -->"


def write_results(path: Path, report: str, start: str = START, end: str = END) -> None:
    """Replace the measured part of the file (between the `start` and `end` markers), keeping
    the analysis written around it."""
    text = path.read_text() if path.exists() else f"# Performance\n\n{start}\n{end}\n"
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    path.write_text(f"{head}{start}\n{report}{end}{tail}")


def write_section(path: Path, report: str, heading: str, start: str, end: str) -> None:
    """`write_results` for a section of its own: added at the end of the file (under
    `heading`, between its markers) the first time, its results rewritten after that."""
    text = path.read_text()
    if start not in text:
        path.write_text(f"{text.rstrip()}\n\n{heading}\n\n{start}\n{end}\n")
    write_results(path, report, start, end)


def prose(paragraphs: list[str]) -> str:
    """A report's paragraphs wrapped for the Markdown file; tables (lines starting with `|`)
    kept as they are."""
    return (
        "\n\n".join(
            text if text.startswith("|") else textwrap.fill(text, 96, break_on_hyphens=False)
            for text in paragraphs
        )
        + "\n"
    )


def table(rows: list[Result]) -> list[str]:
    lines = ["| setup | requests/s | p50 ms | p99 ms |", "| --- | ---: | ---: | ---: |"]
    lines += [
        f"| {row.name} | {row.rps:,.0f} | {row.p50_ms:.2f} | {row.p99_ms:.2f} |" for row in rows
    ]
    return lines


def ratios(rows: list[Result]) -> list[str]:
    by_name = {row.name: row for row in rows}
    gateway = by_name["library-gateway"]
    return [
        f"- nginx + auth_request: {gateway.rps / by_name['nginx + auth_request'].rps:.2f}x the "
        f"requests/s, p99 {gateway.p99_ms:.1f} ms against "
        f"{by_name['nginx + auth_request'].p99_ms:.1f} ms",
        f"- aiohttp-session proxy: {gateway.rps / by_name['aiohttp-session proxy'].rps:.2f}x "
        f"the requests/s, p99 {gateway.p99_ms:.1f} ms against "
        f"{by_name['aiohttp-session proxy'].p99_ms:.1f} ms",
        f"- the access log costs the gateway {1 - gateway.rps / by_name[QUIET].rps:.0%} of its "
        f"requests/s ({gateway.rps:,.0f} with it, {by_name[QUIET].rps:,.0f} without)",
        f"- exporting spans over OTLP costs the gateway "
        f"{1 - by_name[TRACED].rps / gateway.rps:.0%} of its requests/s "
        f"({gateway.rps:,.0f} with export off, the default, "
        f"{by_name[TRACED].rps:,.0f} with it on, {by_name[SAMPLED].rps:,.0f} with one request "
        "in ten sampled)",
    ]


def render(
    rows: list[Result], pinned_rows: list[Result], extra: dict[str, str], args: argparse.Namespace
) -> str:
    scale = extra.get("workers", "not measured")
    same_core = ""
    if pinned_rows:
        same_core = f"""
The same small GET with the same CPU for every setup: each setup's own processes (nginx's
worker; nginx's worker and the decision service; the Python proxy) kept on core 0, wrk and
the backend on core 1. Without this, nginx + auth_request spreads over both cores while a
one-worker Python proxy can use only one.

{chr(10).join(table(pinned_rows))}

Ratios on one core each:

{chr(10).join(ratios(pinned_rows))}
"""
    return f"""Measured with `python bench/run.py --duration {args.duration} --connections \
{args.connections} --big-mib {args.big_mib}` on {machine()}. Every setup forwards to the
same static nginx backend (a 1 KiB file); library-gateway is logged in on an
`auth: required` route, the peers check the same kind of aiohttp-session Fernet cookie.
wrk (one thread, {args.connections} connections) runs on the same machine, so it takes one
of the cores.

{chr(10).join(table(rows))}

Ratios (library-gateway, one worker, against each):

{chr(10).join(ratios(rows))}

Measured in turns, so that the machine's drift between two rows of the table cannot pass
for a difference between two setups:

- the access log: {extra.get("log_turns", "not measured")};
- against nginx + auth_request: {extra.get("auth_turns", "not measured")}.

- `--workers 2`: {scale}.
- 1 GiB download: {extra.get("download", "not measured")}.
- 1 GiB upload: {extra.get("upload", "not measured")}.
- OTLP export: {extra.get("otlp", "not measured")}.
- Logins: {extra.get("capacity", "not measured")}.
- Login storms, at 20 logins/s and at that capacity: {extra.get("storm", "not measured")};
  the proxied p99 during each is its "during … logins/s" row.
{same_core}"""


if __name__ == "__main__":
    sys.exit(main())
