"""The system packages the test suite needs besides its Python ones, listed once.

The README's one test command brings them itself: tests/conftest.py calls `ensure` when the
run starts (in the xdist controller only, never in each worker). As root on a machine with
apt-get (Debian, Ubuntu) the missing ones are installed; anywhere else the run says at the
start what is missing and how to install it, and each test that needs a package fails with
that message (`require`), never skips. `python3 -m tests.system_packages` does the same by
hand and exits non-zero while something is missing.

A new need is one more `SystemPackage` in `PACKAGES`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

CHROMIUM = "/usr/bin/chromium"
"""Where Debian's chromium package puts the browser."""
APACHE = "/usr/sbin/apache2"
"""Where Debian's apache2 package puts httpd."""
MOD_AUTH_OPENIDC = "/usr/lib/apache2/modules/mod_auth_openidc.so"
"""Where Debian's libapache2-mod-auth-openidc package puts the module."""
PGBOUNCER = "/usr/sbin/pgbouncer"
"""Where Debian's pgbouncer package puts the connection pooler."""


@dataclass(frozen=True)
class SystemPackage:
    """A Debian package, what in the suite needs it, and how to see that it is installed."""

    name: str
    needed_by: str
    provides: tuple[str, ...]
    """Commands (looked up on PATH) or absolute paths; any one of them present will do."""
    override: str | None = None
    """An environment variable that may name a replacement executable instead."""

    def replaced(self) -> bool:
        """Whether the environment names a replacement to use instead."""
        return bool(self.override and os.environ.get(self.override))

    def installed(self) -> bool:
        if self.override and (replacement := os.environ.get(self.override)):
            return os.path.isfile(replacement) and os.access(replacement, os.X_OK)
        return any(
            os.path.exists(item) if os.path.isabs(item) else shutil.which(item) is not None
            for item in self.provides
        )

    def advice(self) -> str:
        """What is missing, and how to install it."""
        replacement = os.environ.get(self.override) if self.override else None
        if replacement:
            return (
                f"{self.needed_by} need {self.name}, and {self.override}={replacement} is "
                "not an executable file."
            )
        how = f"Debian/Ubuntu: `sudo apt-get install {self.name}`"
        if self.override:
            how += f"; or set {self.override} to the path of an executable that replaces it"
        return f"{self.needed_by} need the system package {self.name}, which is missing ({how})."


PACKAGES: tuple[SystemPackage, ...] = (
    SystemPackage(
        "chromium",
        "The browser tests (tests/browser/)",
        (CHROMIUM,),
        override="CHROMIUM",
    ),
    SystemPackage(
        "npm",
        "The accessibility tests and the OpenID Connect client tests, which install axe-core"
        " and openid-client with it,",
        ("npm",),
    ),
    SystemPackage(
        "apache2",
        "The OpenID Connect client tests (tests/test_oidc_clients.py)",
        (APACHE,),
    ),
    SystemPackage(
        "libapache2-mod-auth-openidc",
        "The OpenID Connect client tests (tests/test_oidc_clients.py)",
        (MOD_AUTH_OPENIDC,),
    ),
    SystemPackage(
        "pgbouncer",
        "The tests behind a transaction pooler (tests/test_pgbouncer.py)",
        (PGBOUNCER,),
    ),
)

GIVE_UP = 30 * 60
"""Seconds an apt-get step may take before the run goes on without it (it only ever bounds a
broken mirror; a real install of these takes a few minutes)."""


def package(name: str) -> SystemPackage:
    [found] = [p for p in PACKAGES if p.name == name]
    return found


def missing(packages: Sequence[SystemPackage] = PACKAGES) -> list[SystemPackage]:
    return [p for p in packages if not p.installed()]


def can_install() -> bool:
    """Whether this process may install packages itself: root, with apt-get."""
    return hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get") is not None


def ensure(
    say: Callable[[str], None],
    packages: Sequence[SystemPackage] = PACKAGES,
    *,
    may_install: bool | None = None,
) -> bool:
    """Install whatever of `packages` is missing, when this process can (`can_install`,
    unless `may_install` says otherwise); say what it does, or what is missing and how to
    install it. True when nothing is missing any more.

    A package replaced through its environment variable is never installed: the replacement
    was chosen on purpose, and only it can be fixed.
    """
    absent = missing(packages)
    if not absent:
        return True
    names = [p.name for p in absent if not p.replaced()]
    if names and (can_install() if may_install is None else may_install):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (["apt-get", "update"], ["apt-get", "install", "-y", *names]):
            say(f"system packages: running `{' '.join(command)}`")
            try:
                subprocess.run(command, env=env, check=True, timeout=GIVE_UP)
            except (OSError, subprocess.SubprocessError) as exc:
                say(f"system packages: `{' '.join(command)}` failed: {exc}")
                break
        absent = missing(packages)
        installed = [name for name in names if name not in {p.name for p in absent}]
        if installed:
            say(f"system packages: installed {', '.join(installed)}")
    elif names:
        say(
            "system packages: not installing "
            + ", ".join(names)
            + " (that takes root and apt-get); the tests that need them will fail."
        )
    for p in absent:
        say(f"system packages: {p.advice()}")
    return not absent


def require(name: str) -> None:
    """Fail the calling test, with how to fix it, when the package `name` is missing."""
    import pytest  # here, so that CI can run this module with a bare python3

    needed = package(name)
    if not needed.installed():
        pytest.fail(needed.advice(), pytrace=False)


if __name__ == "__main__":
    sys.exit(0 if ensure(print) else 1)
