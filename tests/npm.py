"""The npm packages the tests run, pinned and installed once into .cache/ with the system's npm:
axe-core inside the browser (tests/browser/), openid-client as a relying party
(tests/test_oidc_clients.py).

Every version is exact, the dependencies' too: a new release must not turn the suite red on its
own. Raise a pin on purpose, and fix what the new release finds. A missing npm, or an install
that fails, fails the test that needs it with npm's own words; nothing is skipped.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests import system_packages

CACHE = Path(__file__).resolve().parent.parent / ".cache"
INSTALL_TIMEOUT = 90
"""Seconds one `npm install` may take: a few small packages, well within a test's timeout."""


def installed_version(prefix: Path, name: str) -> str | None:
    """The version of package `name` under `prefix`/node_modules, or None."""
    try:
        manifest = json.loads(
            (prefix / "node_modules" / name / "package.json").read_text(encoding="utf-8")
        )
    except (OSError, ValueError):
        return None
    version = manifest.get("version") if isinstance(manifest, dict) else None
    return version if isinstance(version, str) else None


def _holds(prefix: Path, packages: Mapping[str, str]) -> bool:
    return all(installed_version(prefix, name) == version for name, version in packages.items())


def install(prefix: Path, packages: Mapping[str, str]) -> Path:
    """`prefix` (a folder under .cache/) with exactly these packages (name → version) in its
    node_modules, installed with npm the first time. Several test runs may start at once; one
    installs, the others wait for it."""
    if _holds(prefix, packages):
        return prefix
    system_packages.require("npm")
    npm = shutil.which("npm")
    assert npm is not None
    prefix.mkdir(parents=True, exist_ok=True)
    with open(prefix / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _holds(prefix, packages):
            return prefix
        specs = [f"{name}@{version}" for name, version in packages.items()]
        try:
            done = subprocess.run(
                [
                    npm,
                    "install",
                    "--no-save",
                    "--no-audit",
                    "--no-fund",
                    "--prefix",
                    str(prefix),
                    *specs,
                ],
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"npm could not install {' '.join(specs)} in {INSTALL_TIMEOUT} s", pytrace=False
            )
        if done.returncode != 0 or not _holds(prefix, packages):
            pytest.fail(f"npm could not install {' '.join(specs)}:\n{done.stderr}", pytrace=False)
    return prefix
