"""`library-gateway audit export --since WHEN [--until WHEN]`: the audit trail as JSON lines.

One JSON object a line on stdout (`Row.as_json`: the time in ISO 8601 UTC, who, what, whom,
from where, the reason, the request id, the details), oldest first, read from the database in
batches and written as they come, so a year of trail streams through a pipe into a SIEM, `jq`
or a file in the memory of one batch. `WHEN` is an ISO 8601 date or time (without an offset:
UTC) or a duration back from now (`90m`, `24h`, `7d`, `2w`). A reader that stops early (`|
head`) ends the export quietly.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import re
import sys
from typing import BinaryIO

import orjson

from auth.store.audit import AuditTrail
from gateway.cli import bootstrap
from gateway.cli.main import load_settings
from gateway.config.settings import Settings

_DURATION = re.compile(r"([0-9]{1,6})([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
BAD_ARGUMENT = 2


def moment(text: str, now: dt.datetime) -> dt.datetime:
    """The moment `WHEN` names, as an aware datetime: a duration back from `now`, or an ISO
    8601 date (its midnight, UTC) or date and time (UTC unless it says otherwise).
    ValueError for anything else."""
    text = text.strip()
    try:
        duration = _DURATION.fullmatch(text)
        if duration is not None:
            amount, unit = duration.groups()
            return now - dt.timedelta(**{_UNITS[unit]: int(amount)})
        try:
            parsed = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"{text!r} is neither an ISO 8601 date or time (2026-05-01,"
                " 2026-05-01T08:00+02:00) nor a duration back from now (90m, 24h, 7d, 2w)"
            ) from None
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=dt.UTC)
        return parsed.astimezone(dt.UTC)  # what the database is given: it must exist in UTC
    except OverflowError:
        raise ValueError(f"{text!r} reaches back before the year 1") from None


def export_command(args: argparse.Namespace) -> int:
    now = dt.datetime.now(dt.UTC)
    try:
        since = moment(args.since, now)
        until = moment(args.until, now) if args.until is not None else None
    except ValueError as exc:
        print(f"library-gateway: {exc}", file=sys.stderr)
        return BAD_ARGUMENT
    if until is not None and until <= since:
        print("library-gateway: --until must come after --since", file=sys.stderr)
        return BAD_ARGUMENT
    settings = load_settings(data_dir=args.data_dir)
    url = bootstrap.database_url(settings)
    out = sys.stdout.buffer
    try:
        asyncio.run(_export(url, settings, since, until, out))
        out.flush()
    except BrokenPipeError:
        # The reader went away (`| head`): stop, and let nothing try to write to it again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


async def _export(
    url: str, settings: Settings, since: dt.datetime, until: dt.datetime | None, out: BinaryIO
) -> None:
    async with bootstrap.migrated_pool(url, settings) as pool:
        async for row in AuditTrail(pool).since(since, until=until):
            out.write(orjson.dumps(row.as_json()) + b"\n")
