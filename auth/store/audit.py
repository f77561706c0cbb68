"""The SQL of the audit trail (`audit_events`, migration 0010): one INSERT, and the reads of
the account page, the staff console and `library-gateway audit export`."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from auth.audit import REASON_LIMIT, Event

_COLUMNS = (
    "id, at, actor_kind, actor_id, actor_name, action, account_id::text AS account_id,"
    " staff_id::text AS staff_id, remote, user_agent, reason, request_id, details"
)


@dataclass(frozen=True, slots=True)
class Row:
    """One row of the trail as read back."""

    id: int
    at: dt.datetime
    actor_kind: str
    actor_id: str | None
    actor_name: str | None
    action: str
    account_id: str | None
    staff_id: str | None
    remote: str | None
    user_agent: str | None
    reason: str | None
    request_id: str | None
    details: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        """The row as `audit export` writes it: one JSON object, the time in ISO 8601 UTC."""
        fields = {name: getattr(self, name) for name in self.__slots__}
        fields["at"] = self.at.astimezone(dt.UTC).isoformat()
        return fields


def _row(record: asyncpg.Record) -> Row:
    values = dict(record)
    details = values["details"]
    values["details"] = orjson.loads(details) if isinstance(details, str) else details
    return Row(**values)


_INSERT = (
    "INSERT INTO audit_events (actor_kind, actor_id, actor_name, action, account_id,"
    " staff_id, remote, user_agent, reason, request_id, details)"
    " VALUES ($1, $2, $3, $4, $5::uuid, $6::uuid, $7, $8, $9, $10, $11::jsonb)"
)


def _values(event: Event) -> tuple[Any, ...]:
    return (
        event.actor.kind,
        event.actor.id,
        event.actor.name,
        event.action,
        event.account_id,
        event.staff_id,
        event.origin.remote,
        event.origin.user_agent,
        event.reason[:REASON_LIMIT] if event.reason else None,
        event.origin.request_id,
        orjson.dumps(event.details).decode(),
    )


class AuditTrail:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def record(self, event: Event, *, conn: Any = None) -> None:
        """Append `event`; inside the caller's transaction when `conn` is given."""
        executor = conn if conn is not None else self._pool
        await executor.execute(_INSERT, *_values(event))

    async def record_all(self, events: Sequence[Event], *, conn: Any = None) -> None:
        """Append `events` in one round trip, all or none (asyncpg's `executemany` is one
        transaction of its own when `conn` is in none)."""
        executor = conn if conn is not None else self._pool
        await executor.executemany(_INSERT, [_values(event) for event in events])

    async def for_account(
        self, account_id: str, *, limit: int = 20, actions: tuple[str, ...] | None = None
    ) -> list[Row]:
        """The newest rows about one patron, newest first; only `actions` when given."""
        records = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM audit_events WHERE account_id = $1::uuid"
            " AND ($2::text[] IS NULL OR action = ANY($2::text[]))"
            " ORDER BY at DESC, id DESC LIMIT $3",
            account_id,
            list(actions) if actions is not None else None,
            limit,
        )
        return [_row(r) for r in records]

    async def newest(
        self, *, limit: int = 100, before_id: int | None = None, actor_id: str | None = None
    ) -> list[Row]:
        """The whole trail, newest first, a page of `limit` rows older than `before_id`;
        only one actor's rows when `actor_id` is given (an admin reading a colleague's)."""
        records = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM audit_events"
            " WHERE ($1::bigint IS NULL OR id < $1) AND ($2::text IS NULL OR actor_id = $2)"
            " ORDER BY id DESC LIMIT $3",
            before_id,
            actor_id,
            limit,
        )
        return [_row(r) for r in records]

    async def since(
        self, when: dt.datetime, *, until: dt.datetime | None = None, batch: int = 1000
    ) -> AsyncIterator[Row]:
        """Every row from `when` on (and before `until`, when given), oldest first (by time,
        then id), read in batches of `batch` (for `audit export`): memory stays flat however
        long the trail, and each batch goes on from the last row of the one before."""
        after: tuple[dt.datetime, int] = (when, 0)
        while True:
            records = await self._pool.fetch(
                f"SELECT {_COLUMNS} FROM audit_events WHERE (at, id) > ($1, $2)"
                " AND ($3::timestamptz IS NULL OR at < $3) ORDER BY at, id LIMIT $4",
                *after,
                until,
                batch,
            )
            for record in records:
                yield _row(record)
            if len(records) < batch:
                return
            after = (records[-1]["at"], records[-1]["id"])
