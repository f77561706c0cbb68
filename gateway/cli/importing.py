"""`library-gateway accounts import [--institution ID] FILE.csv`: bring patrons over from an
old library system.

Every row is a pass of one institution (`--institution`, else the default one). The file is
streamed: ``auth.importer`` reads and checks one row at a time, and each good row goes through
a short pipeline: does the institution have the pass number already (then the row is refused
with its line, and the account is left as it is, so a password changed since is never
overwritten), wrap a weak legacy hash in argon2id, insert. Wrapping costs argon2's full price
per row, so it runs in a thread pool the size of ``GATEWAY_ARGON2_WORKERS`` (argon2-cffi
releases the GIL: the threads use the cores), and only a few rows per thread are in flight at
once, which keeps a 100k-row file within the memory of a handful of rows.

Bad rows go to stderr as ``FILE:LINE: reason`` while the good ones land; the summary goes to
stdout. Exit status: 0 when no row was refused, 1 when some were, 2 when the file (or the
database) could not be used at all.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TextIO

import asyncpg

from auth.audit import Event
from auth.credentials.passwords import wrap_legacy
from auth.importer import Candidate, FileRefused, Refusal, Tally, read_import
from auth.memberships import DEFAULT_ID
from auth.store.accounts import Accounts, PassNumberTaken, UsernameTaken
from auth.store.audit import AuditTrail
from auth.store.memberships import Memberships
from gateway.cli import bootstrap, operator
from gateway.cli.institutions import InstitutionUnknown, institution_for
from gateway.cli.main import load_settings
from gateway.config.settings import Settings

UNUSABLE = 2
# Rows in flight per hashing thread: enough that a thread never waits for the database.
_ROWS_PER_WORKER = 4


def import_command(args: argparse.Namespace) -> int:
    settings = load_settings(data_dir=args.data_dir)
    path: Path = args.file
    try:
        institution = institution_for(args)
    except InstitutionUnknown as exc:
        print(f"library-gateway: {exc}", file=sys.stderr)
        return UNUSABLE
    try:
        # utf-8-sig drops a BOM; surrogateescape lets one row with bytes that are not UTF-8
        # be refused alone; newline="" keeps line breaks inside quoted fields for csv.
        stream = path.open(encoding="utf-8-sig", errors="surrogateescape", newline="")
    except OSError as exc:
        print(f"library-gateway: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return UNUSABLE
    with stream:
        try:
            rows = read_import(
                stream,
                pass_number_pattern=settings.pass_number_pattern,
                institution=institution.known,
            )
        except FileRefused as exc:
            print(f"{path}:{exc.line}: {exc.reason}", file=sys.stderr)
            return UNUSABLE
        url = bootstrap.database_url(settings)
        run = _Import(
            str(path), institution.id, dry_run=args.dry_run, workers=settings.argon2_workers
        )
        failure: BaseException | None = None
        try:
            asyncio.run(run.all(rows, url, settings))
        except* (OSError, asyncpg.PostgresError) as group:
            failure = group.exceptions[0]
    run.print_summary(sys.stdout)
    if failure is not None:
        print(
            f"library-gateway: the database failed: {failure}; rows before it may have"
            " landed, and running the import again is safe",
            file=sys.stderr,
        )
        return UNUSABLE
    return run.tally.exit_code


class _Import:
    def __init__(
        self, shown_path: str, institution: str | None, *, dry_run: bool, workers: int
    ) -> None:
        self.tally = Tally()
        self._path = shown_path
        self._institution = institution  # None: the default institution
        # How a refusal names the institution: its id, or, for the built-in one that no
        # institutions.yaml named, "the default institution".
        self._shown_institution = institution or "the default institution"
        self._dry_run = dry_run
        self._workers = workers

    def print_summary(self, out: TextIO) -> None:
        if self._dry_run:
            print("dry run: nothing was written; an import would have", file=out)
        print(f"{self._path}: {self.tally.summary()}", file=out)

    async def all(self, rows: Iterator[Candidate | Refusal], url: str, settings: Settings) -> None:
        slots = asyncio.Semaphore(self._workers * _ROWS_PER_WORKER)
        with ThreadPoolExecutor(self._workers, thread_name_prefix="import-hasher") as hashers:
            async with bootstrap.migrated_pool(url, settings) as pool:
                if self._institution is None:
                    default = await Memberships(pool).default_id()
                    if default != DEFAULT_ID:
                        self._shown_institution = default
                try:
                    async with asyncio.TaskGroup() as group:
                        accounts = Accounts(pool)
                        # Reading stops while every slot is taken, so the file is never read
                        # ahead of the hashing by more than the slots.
                        for row in rows:
                            if isinstance(row, Refusal):
                                self._refuse(row.line, row.reason)
                                continue
                            await slots.acquire()
                            task = group.create_task(self._land(row, accounts, hashers))
                            task.add_done_callback(lambda _task: slots.release())
                finally:
                    # One row for the run (also one cut short: what landed is on it), not
                    # one an account: a library's import is one operator action.
                    if not self._dry_run:
                        await AuditTrail(pool).record(self._event())

    def _event(self) -> Event:
        return operator.event(
            "operator_import",
            "accounts import",
            file=Path(self._path).name,
            institution=self._institution,
            **dataclasses.asdict(self.tally),
        )

    async def _land(self, row: Candidate, accounts: Accounts, hashers: ThreadPoolExecutor) -> None:
        try:
            # Asked before the costly wrapping, so a repeated run over a big file is quick.
            present = await accounts.check_import(
                pass_number=row.pass_number, username=row.username, institution=self._institution
            )
            if not present and not self._dry_run:
                stored = row.password_hash
                if stored is not None and row.needs_wrapping:
                    loop = asyncio.get_running_loop()
                    stored = await loop.run_in_executor(hashers, wrap_legacy, stored)
                present = not await accounts.import_account(
                    pass_number=row.pass_number,
                    email=row.email,
                    username=row.username,
                    password_hash=stored,
                    institution=self._institution,
                    type=row.type,
                    valid_until=row.valid_until,
                )
        except PassNumberTaken:
            self._refuse(
                row.line, f"pass number {row.pass_number!r} is the username of another account"
            )
            return
        except UsernameTaken:
            self._refuse(
                row.line,
                f"username {row.username!r} is the username or pass number of another account",
            )
            return
        if present:
            self.tally.present += 1
            self._refuse(
                row.line,
                f"pass number {row.pass_number!r} of {self._shown_institution} exists already;"
                " the account was left as it is",
            )
            return
        self.tally.imported += 1
        if row.password_hash is None:
            self.tally.without_password += 1

    def _refuse(self, line: int, reason: str) -> None:
        self.tally.refused += 1
        print(f"{self._path}:{line}: {reason}", file=sys.stderr)
