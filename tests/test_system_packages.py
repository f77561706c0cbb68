"""The suite's own set-up: when a system package it needs is missing and this run may not
install it, the run says which, and how to install it; nothing is said when all is there."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.system_packages import PACKAGES, SystemPackage, ensure


def test_nothing_is_said_or_done_when_every_package_is_there() -> None:
    said: list[str] = []
    here = SystemPackage("python3", "These tests", (sys.executable,))
    assert ensure(said.append, [here], may_install=True)
    assert said == []


def test_a_missing_package_that_may_not_be_installed_is_named_with_the_way_to_install_it() -> None:
    said: list[str] = []
    gone = SystemPackage("no-such-package", "The imaginary tests", ("/nonexistent/tool",))
    assert not ensure(said.append, [gone], may_install=False)
    assert said == [
        "system packages: not installing no-such-package (that takes root and apt-get); the"
        " tests that need them will fail.",
        "system packages: The imaginary tests need the system package no-such-package, which"
        " is missing (Debian/Ubuntu: `sudo apt-get install no-such-package`).",
    ]


def test_a_replacement_named_in_the_environment_is_checked_and_never_installed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    said: list[str] = []
    browser = SystemPackage(
        "no-such-browser", "The imaginary tests", ("/nonexistent/browser",), override="BROWSER_X"
    )
    monkeypatch.setenv("BROWSER_X", str(tmp_path / "not-there"))
    assert not ensure(said.append, [browser], may_install=True)
    assert said == [
        "system packages: The imaginary tests need no-such-browser, and"
        f" BROWSER_X={tmp_path / 'not-there'} is not an executable file."
    ]
    monkeypatch.setenv("BROWSER_X", sys.executable)
    assert ensure(said.append, [browser], may_install=True)


def test_every_listed_package_says_what_needs_it() -> None:
    names = [package.name for package in PACKAGES]
    assert len(names) == len(set(names))
    for package in PACKAGES:
        assert package.needed_by and package.provides
