"""The `library-gateway` command: run, demo, routes, clients, institutions, accounts, staff,
keys, audit, migrate, settings.

Each subcommand is a small function taking parsed arguments; `--data-dir` is accepted by every
command that touches the database, so they all find the same embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.config import settings as settings_module
from gateway.config.settings import SETTINGS, Settings, SettingsError

if TYPE_CHECKING:
    from auth.memberships import InstitutionTable
    from auth.oidc.clients import ClientTable
    from gateway.config.routes import RouteTable

Command = Callable[[argparse.Namespace], int]


def _data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Settings.data_dir,
        help="where the embedded database, keys and outbox live (default ./var)",
    )


def build_parser() -> argparse.ArgumentParser:
    env_help = "\n".join(f"  {s.env:<32} {s.help}" for s in SETTINGS)
    parser = argparse.ArgumentParser(
        prog="library-gateway",
        description="One login for every library service.",
        epilog="environment settings:\n" + env_help,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the gateway")
    run.add_argument("--routes", type=Path, required=True, help="the routes.yaml file")
    run.add_argument(
        "--clients",
        type=Path,
        help="the clients.yaml file of the services that log patrons in through the gateway "
        "(default: clients.yaml beside the routes file, when it exists; none: federation off)",
    )
    run.add_argument(
        "--institutions",
        type=Path,
        help="the institutions.yaml file of the libraries whose passes accounts hold "
        "(default: institutions.yaml beside the routes file, when it exists; none: one "
        "built-in institution, 'default')",
    )
    run.add_argument("--host", default=Settings.host)
    run.add_argument("--port", type=int, default=Settings.port)
    run.add_argument(
        "--admin-port",
        type=int,
        default=Settings.admin_port,
        help="port of the admin listener: metrics and health, on GATEWAY_ADMIN_HOST (0: off)",
    )
    run.add_argument(
        "--workers", type=int, default=Settings.workers, help="processes sharing the port"
    )
    _data_dir(run)
    run.set_defaults(func=run_entry)

    demo = commands.add_parser("demo", help="the gateway with demo services and a demo patron")
    demo.add_argument("--port", type=int, default=Settings.port)
    _data_dir(demo)
    demo.set_defaults(func=_lazy("gateway.demo.runner", "demo_command"))

    routes = commands.add_parser("routes", help="route map tools")
    routes_commands = routes.add_subparsers(dest="routes_command", required=True)
    check = routes_commands.add_parser("check", help="validate a routes.yaml")
    check.add_argument("file", type=Path)
    _institutions_option(check)
    check.set_defaults(func=routes_check)

    clients = commands.add_parser("clients", help="OpenID Connect client tools")
    clients_commands = clients.add_subparsers(dest="clients_command", required=True)
    check = clients_commands.add_parser(
        "check",
        help="validate a clients.yaml",
        description="Check FILE as `run` would, secrets read from the environment, and print "
        "every problem as FILE:LINE: reason.",
    )
    check.add_argument("file", type=Path)
    check.add_argument(
        "--routes",
        type=Path,
        help="refuse a client_id that names a route of this routes.yaml "
        "(default: routes.yaml beside FILE, when it exists)",
    )
    _institutions_option(check)
    check.set_defaults(func=clients_check)

    institutions = commands.add_parser("institutions", help="institution list tools")
    institutions_commands = institutions.add_subparsers(dest="institutions_command", required=True)
    check = institutions_commands.add_parser(
        "check",
        help="validate an institutions.yaml",
        description="Check FILE as `run` would and print every problem as FILE:LINE: reason.",
    )
    check.add_argument("file", type=Path)
    check.set_defaults(func=institutions_check)

    accounts = commands.add_parser("accounts", help="manage patron accounts")
    accounts_commands = accounts.add_subparsers(dest="accounts_command", required=True)
    add = accounts_commands.add_parser("add", help="create an account")
    add.add_argument("--pass-number", required=True)
    add.add_argument("--email", required=True)
    add.add_argument("--username")
    add.add_argument(
        "--password-stdin",
        action="store_true",
        required=True,
        help="read the password from standard input",
    )
    _data_dir(add)
    add.set_defaults(func=_lazy("gateway.cli.accounts", "add_command"))

    imports = accounts_commands.add_parser(
        "import",
        help="create accounts from a CSV export of an old system",
        description="Create an account for every row of FILE (header: pass_number,email,"
        "password_hash[,username][,type][,valid_until]), its pass a membership of the "
        "institution. A row whose pass number the institution has already is refused and the "
        "account left as it is (a password changed since is never overwritten). Bad rows are "
        "reported on stderr as FILE:LINE: reason and the good rows still land.",
        epilog="exit status: 0 when no row was refused, 1 when some were, 2 when the file or "
        "the database could not be used",
    )
    imports.add_argument("file", type=Path, metavar="FILE.csv")
    imports.add_argument(
        "--institution", metavar="ID", help="the institution of the passes (default: the default)"
    )
    _institutions_file_option(imports)
    imports.add_argument(
        "--dry-run",
        action="store_true",
        help="check every row against the file and the database, write nothing",
    )
    _data_dir(imports)
    imports.set_defaults(func=_lazy("gateway.cli.importing", "import_command"))

    invite = accounts_commands.add_parser("invite", help="mail a new member an activation link")
    invite.add_argument("--pass-number", required=True)
    invite.add_argument("--email", required=True)
    invite.add_argument("--lang", choices=("nl", "en"), default="nl", help="the mail's language")
    _data_dir(invite)
    invite.set_defaults(func=_lazy("gateway.cli.accounts", "invite_command"))

    for name, help_text in (
        (
            "disable",
            "block an account (a lost or withdrawn pass): it can no longer log in, "
            "and its sessions end at once on every instance",
        ),
        ("enable", "let a disabled account log in again"),
    ):
        sub = accounts_commands.add_parser(name, help=help_text, description=help_text)
        who = sub.add_mutually_exclusive_group(required=True)
        who.add_argument("--pass-number")
        who.add_argument("--username")
        _data_dir(sub)
        sub.set_defaults(func=_lazy("gateway.cli.accounts", f"{name}_command"))

    membership = accounts_commands.add_parser(
        "membership", help="give an account a library pass, or end one"
    )
    membership_commands = membership.add_subparsers(dest="membership_command", required=True)
    give = membership_commands.add_parser(
        "add",
        help="give an account a pass of an institution",
        description="Give the account LOGIN (its username or any of its pass numbers) a "
        "membership; running gateways see it at once.",
    )
    give.add_argument("--account", required=True, metavar="LOGIN")
    give.add_argument("--type", metavar="T", help="the institution's word: adult, youth, ...")
    give.add_argument("--valid-until", metavar="YYYY-MM-DD", help="its last valid day")
    end = membership_commands.add_parser(
        "end", help="end a membership: the pass no longer logs in nor counts"
    )
    for sub, command in ((give, "membership_add_command"), (end, "membership_end_command")):
        sub.add_argument("--institution", required=True, metavar="ID")
        sub.add_argument("--pass-number", required=True, metavar="N")
        _institutions_file_option(sub)
        _data_dir(sub)
        sub.set_defaults(func=_lazy("gateway.cli.memberships", command))

    staff = commands.add_parser("staff", help="manage the staff console's accounts")
    staff_commands = staff.add_subparsers(dest="staff_command", required=True)
    for name, help_text, options in (
        ("add", "add a staff member and mail them an activation link", ("role", "lang")),
        (
            "reset",
            "start a member's sign-in over (a lost second factor): password, factors and "
            "recovery codes removed, sessions ended, a new activation link mailed",
            ("lang",),
        ),
        ("disable", "disable a member: they can no longer sign in, their sessions end", ()),
        ("enable", "let a disabled member sign in again", ()),
        ("role", "change a member's role", ("role",)),
    ):
        sub = staff_commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--email", required=True)
        if "role" in options:
            sub.add_argument("--role", required=True, choices=("helpdesk", "admin"))
        if "lang" in options:
            sub.add_argument(
                "--lang", choices=("nl", "en"), default="nl", help="the mail's language"
            )
        sub.add_argument("--reason", help="why, for the audit trail")
        _data_dir(sub)
        sub.set_defaults(func=_lazy("gateway.cli.staff", f"{name}_command"))
    listing = staff_commands.add_parser("list", help="list the staff members")
    _data_dir(listing)
    listing.set_defaults(func=_lazy("gateway.cli.staff", "list_command"))

    keys = commands.add_parser("keys", help="cookie and signing keys")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    new_cookie = keys_commands.add_parser("new-cookie-key", help="print a new Fernet key")
    new_cookie.set_defaults(func=new_cookie_key)
    for name, help_text in (
        ("rotate", "make a new signing key of each kind active (identity headers, OpenID Connect)"),
        ("prune", "unpublish signing keys retired over an hour ago"),
        ("list", "list signing keys"),
    ):
        sub = keys_commands.add_parser(name, help=help_text)
        _data_dir(sub)
        sub.set_defaults(func=_lazy("gateway.cli.accounts", f"keys_{name}_command"))

    audit = commands.add_parser("audit", help="the audit trail")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    export = audit_commands.add_parser(
        "export",
        help="write the audit trail as JSON lines",
        description="Write every row of the audit trail from --since (and before --until) to "
        "stdout, one JSON object a line, oldest first, streamed. WHEN is an ISO 8601 date or "
        "time (without an offset: UTC), e.g. 2026-05-01 or 2026-05-01T08:00+02:00, or a "
        "duration back from now: 90m, 24h, 7d, 2w.",
    )
    export.add_argument("--since", required=True, metavar="WHEN")
    export.add_argument("--until", metavar="WHEN", help="rows before this moment only")
    _data_dir(export)
    export.set_defaults(func=_lazy("gateway.cli.audit", "export_command"))

    migrate = commands.add_parser(
        "migrate",
        help="bring the database schema up to date and exit",
        description="Apply every database migration not applied yet, then exit. `run` does "
        "this at start too; run it alone first when several instances start "
        "(a Kubernetes Job, a deploy script).",
    )
    _data_dir(migrate)
    migrate.set_defaults(func=_lazy("gateway.cli.accounts", "migrate_command"))

    show = commands.add_parser("settings", help="list the environment settings")
    show.set_defaults(func=show_settings)
    return parser


def _institutions_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--institutions",
        type=Path,
        help="check require: rules against this institutions.yaml (default: "
        "institutions.yaml beside FILE, when it exists; else the one built-in institution)",
    )


def _institutions_file_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--institutions",
        type=Path,
        metavar="FILE",
        help="the gateway's institutions.yaml: --institution must name one of it, and pass "
        "numbers and types are checked against it (without it any id is taken)",
    )


def _lazy(module: str, name: str) -> Command:
    # Import heavy modules only for the command that needs them: `routes check` stays fast.
    def command(args: argparse.Namespace) -> int:
        import importlib

        function: Command = getattr(importlib.import_module(module), name)
        return function(args)

    return command


def run_entry(args: argparse.Namespace) -> int:
    if args.workers > 1:
        # prometheus-client picks its storage when first imported, so multiprocess mode
        # (every worker's metrics summed on the admin port) must be chosen before that.
        import shutil

        folder = (args.data_dir / "metrics").resolve()
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    return _lazy("gateway.server.processes", "run_command")(args)


def load_routes_or_report(
    path: Path, institutions: InstitutionTable | None = None
) -> RouteTable | None:
    """The routes in `path` (`require:` rules checked against `institutions`); None once
    every problem with the file is on stderr."""
    from gateway.config.routes_file import RoutesInvalid, load_routes

    try:
        return load_routes(path, institutions)
    except RoutesInvalid as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


def routes_check(args: argparse.Namespace) -> int:
    institutions_file = institutions_path(args.file, args.institutions)
    institutions = None
    if institutions_file is not None:
        institutions = load_institutions_or_report(institutions_file)
        if institutions is None:
            return 1
    table = load_routes_or_report(args.file, institutions)
    if table is None:
        return 1
    print(f"{args.file}: {counted(len(table.routes), 'route')} OK")
    for route in sorted(table.routes, key=lambda item: item.prefix):
        print(
            f"  {route.prefix:<24} -> {route.backend.origin}{route.backend.base_path}"
            f"  [{route.name}, auth: {route.auth.value}]"
        )
    return 0


def clients_path(routes: Path, given: Path | None) -> Path | None:
    """The clients file `run` serves: the one given, else clients.yaml beside the routes file
    when there is one; None turns federation off."""
    if given is not None:
        return given
    beside = routes.with_name("clients.yaml")
    return beside if beside.exists() else None


def load_clients_or_report(
    path: Path, routes: RouteTable | None, institutions: InstitutionTable | None = None
) -> ClientTable | None:
    """The clients in `path` (secrets from the environment, client_ids checked against
    `routes`, `require:` rules against `institutions`); None once every problem with the
    file is on stderr."""
    from gateway.config.clients_file import ClientsInvalid, load_clients

    try:
        return load_clients(path, routes=routes, institutions=institutions)
    except ClientsInvalid as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


def clients_check(args: argparse.Namespace) -> int:
    routes_file = args.routes
    if routes_file is None and args.file.with_name("routes.yaml").exists():
        routes_file = args.file.with_name("routes.yaml")
    institutions_file = institutions_path(args.file, args.institutions)
    institutions = None
    if institutions_file is not None:
        institutions = load_institutions_or_report(institutions_file)
        if institutions is None:
            return 1
    routes = None if routes_file is None else load_routes_or_report(routes_file, institutions)
    table = load_clients_or_report(args.file, routes, institutions)
    if table is None or (routes_file is not None and routes is None):
        return 1
    print(f"{args.file}: {counted(len(table.clients), 'client')} OK")
    for client in table.clients:
        kind = "public" if client.public else "confidential"
        print(
            f"  {client.client_id:<24} {kind:<12} subject: {client.subject:<8}"
            f"  {' '.join(client.redirect_uris)}"
        )
    return 0


def institutions_path(beside: Path, given: Path | None) -> Path | None:
    """The institutions file in force: the one given, else institutions.yaml beside the
    routes (or clients) file when there is one; None: the one built-in institution."""
    if given is not None:
        return given
    found = beside.with_name("institutions.yaml")
    return found if found.exists() else None


def counted(number: int, noun: str) -> str:
    """`1 route`, `3 routes`: what a check found, in words."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def load_institutions_or_report(path: Path) -> InstitutionTable | None:
    """The institutions in `path`; None once every problem with the file is on stderr."""
    from gateway.config.institutions_file import InstitutionsInvalid, load_institutions

    try:
        return load_institutions(path)
    except InstitutionsInvalid as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


def institutions_check(args: argparse.Namespace) -> int:
    table = load_institutions_or_report(args.file)
    if table is None:
        return 1
    print(f"{args.file}: {counted(len(table.institutions), 'institution')} OK")
    for institution in table.institutions:
        marks = " (default)" if institution.default else ""
        types = f"  types: {', '.join(institution.types)}" if institution.types else ""
        print(f"  {institution.id:<16} {institution.name}{marks}{types}")
    return 0


def new_cookie_key(_args: argparse.Namespace) -> int:
    from cryptography.fernet import Fernet

    print(Fernet.generate_key().decode("ascii"))
    return 0


def show_settings(_args: argparse.Namespace) -> int:
    for setting in settings_module.SETTINGS:
        default = setting.default or "(unset)"
        print(f"{setting.env}\n    {setting.help}\n    default: {default}")
    return 0


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings.from_env(None, **overrides)
    except SettingsError as exc:
        raise SystemExit(f"library-gateway: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
