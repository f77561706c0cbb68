"""The code stays as strict as the day it started: ruff (lint and format) over the whole
repository and mypy --strict over the packages, the tests and the benchmark, run by the suite
so the README's one test command checks them too. ruff is pinned in pyproject.toml, so a new
release cannot turn the suite red on its own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# mypy over a cold cache on a loaded machine is the slowest step; its own limit is the same.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_ruff() -> None:
    result = run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format() -> None:
    result = run("ruff", "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict() -> None:
    result = run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr
