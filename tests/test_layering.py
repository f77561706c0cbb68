"""Imports go one way, as the README's layout says: `gateway` imports `auth`, never the reverse;
the data plane and the configuration never reach up into the server, the command line or the
application's assembly; the decision modules do no I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, with `from x import y` counted as both x and x.y."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def offenders(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{path.relative_to(ROOT)} imports {module}"
        for path in (ROOT / folder).rglob("*.py")
        for module in imported_modules(path)
        if any(module == f or module.startswith(f + ".") for f in forbidden)
    )


def test_auth_never_imports_gateway() -> None:
    assert offenders("auth", ("gateway",)) == []


@pytest.mark.parametrize("folder", ["gateway/proxy", "gateway/config", "gateway/ops"])
def test_the_data_plane_and_configuration_never_import_the_layers_above_them(
    folder: str,
) -> None:
    above = ("gateway.server", "gateway.cli", "gateway.app", "gateway.demo", "gateway.middleware")
    assert offenders(folder, above) == []


@pytest.mark.parametrize(
    "module",
    [
        "gateway/proxy/access.py",
        "gateway/proxy/paths.py",
        "gateway/proxy/headers.py",
        "gateway/config/routes.py",
        "auth/sessions/lifetimes.py",
        "auth/sessions/browsers.py",
        "auth/credentials/usernames.py",
        "auth/credentials/emails.py",
        "auth/helpdesk/model.py",
        "auth/pages/redirects.py",
        "auth/oidc/clients.py",
        "auth/oidc/requests.py",
        "auth/staff/totp.py",
        "auth/staff/recovery.py",
        "auth/staff/networks.py",
        "auth/staff/sessions.py",
        "auth/staff/csrf.py",
        "auth/staff/patron_view.py",
    ],
)
def test_decision_modules_do_no_io(module: str) -> None:
    io = ("aiohttp", "asyncpg", "asyncio", "socket", "aiosmtplib")
    imported = imported_modules(ROOT / module)
    assert sorted(m for m in imported if m.split(".")[0] in io) == []
