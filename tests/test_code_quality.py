"""The code stays as strict as the day it started: ruff and mypy --strict, run by the suite so
the README's one test command checks them too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


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
    result = run("ruff", "check", "gateway", "auth", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict() -> None:
    result = run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_auth_never_imports_gateway() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "auth").rglob("*.py")
        if "import gateway" in (text := path.read_text(encoding="utf-8")) or "from gateway" in text
    ]
    assert offenders == []
