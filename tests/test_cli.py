"""The command line as an operator uses it: real processes, a real embedded PostgreSQL."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config.settings import SETTINGS

ROOT = Path(__file__).resolve().parent.parent


def cli(
    *args: str, stdin: str = "", env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
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


def test_console_script_and_module_are_the_same_program() -> None:
    result = cli("--help")
    assert result.returncode == 0
    for command in ("run", "demo", "routes", "accounts", "keys", "settings"):
        assert command in result.stdout
    for setting in SETTINGS:
        assert setting.env in result.stdout


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = {match for match in re.findall(r"^\| `(GATEWAY_[A-Z0-9_]+)` \|", readme, re.M)}
    assert table == {setting.env for setting in SETTINGS}


def test_the_shipped_routes_file_is_valid() -> None:
    result = cli("routes", "check", str(ROOT / "routes.yaml"))
    assert result.returncode == 0, result.stderr
    assert "3 routes OK" in result.stdout


def test_bad_settings_are_refused_with_the_variable_named() -> None:
    result = cli(
        "accounts",
        "add",
        "--pass-number",
        "1",
        "--email",
        "a@b.c",
        "--password-stdin",
        env={"GATEWAY_THEME_COLOUR": "red;}body{"},
        stdin="whatever-long-enough\n",
    )
    assert result.returncode != 0
    assert "GATEWAY_THEME_COLOUR" in result.stderr


@pytest.mark.slow
def test_accounts_add_then_login_name_works_and_rules_are_enforced(
    tmp_path: Path, database_url: str
) -> None:
    env = {"GATEWAY_DATABASE_URL": database_url}
    ok = cli(
        "accounts",
        "add",
        "--pass-number",
        "55501",
        "--email",
        "jan@example.org",
        "--username",
        "jan.cli",
        "--password-stdin",
        stdin="a quiet reading room\n",
        env=env,
        cwd=tmp_path,
    )
    assert ok.returncode == 0, ok.stderr
    assert "jan.cli" in ok.stdout
    again = cli(
        "accounts",
        "add",
        "--pass-number",
        "55501",
        "--email",
        "x@example.org",
        "--password-stdin",
        stdin="a quiet reading room\n",
        env=env,
        cwd=tmp_path,
    )
    assert again.returncode == 1
    assert "exists already" in again.stderr
    weak = cli(
        "accounts",
        "add",
        "--pass-number",
        "55502",
        "--email",
        "x@example.org",
        "--password-stdin",
        stdin="password\n",
        env=env,
        cwd=tmp_path,
    )
    assert weak.returncode == 1
    stolen = cli(
        "accounts",
        "add",
        "--pass-number",
        "55503",
        "--email",
        "x@example.org",
        "--username",
        "55501",
        "--password-stdin",
        stdin="a quiet reading room\n",
        env=env,
        cwd=tmp_path,
    )
    assert stolen.returncode == 1


@pytest.mark.slow
def test_accounts_add_uses_the_embedded_database_under_the_data_dir(tmp_path: Path) -> None:
    env = {"GATEWAY_DATABASE_URL": ""}
    result = cli(
        "accounts",
        "add",
        "--pass-number",
        "77701",
        "--email",
        "e@example.org",
        "--password-stdin",
        "--data-dir",
        str(tmp_path / "var"),
        stdin="embedded and quick\n",
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "var" / "postgres" / "PG_VERSION").exists()
    listed = cli("keys", "list", "--data-dir", str(tmp_path / "var"), env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "active" in listed.stdout
    # The last process that used the embedded server stopped it.
    assert not (tmp_path / "var" / "postgres" / "postmaster.pid").exists()


@pytest.mark.parametrize(
    "email",
    [
        "no-at-sign",
        "two@@example.org",
        "line\nbreak@example.org",
        "space in@example.org",
        "@example.org",
        "x@localhost",
    ],
)
def test_accounts_add_and_invite_refuse_what_is_not_an_address(email: str) -> None:
    """A line break in an address would become a header injection in every mail to it."""
    for command in (["accounts", "add", "--password-stdin"], ["accounts", "invite"]):
        result = cli(
            *command,
            "--pass-number",
            "88801",
            "--email",
            email,
            stdin="a quiet reading room\n",
            env={"GATEWAY_DATABASE_URL": "postgresql://x"},
        )
        assert result.returncode == 1
        assert "not an e-mail address" in result.stderr
