"""Reading a patron the way the helpdesk sees them: exact matches for a query, and the
overview of one account, assembled from the account's tables and the audit trail.

Reads only, and unrecorded: `auth.helpdesk.service.Helpdesk` records the looking (a
`helpdesk_viewed` row) before it hands an overview to a page. The queries are the ones the
patron's own pages use where there are such (the sessions list, the passes, the trail);
the rest are in `auth.store.helpdesk`.
"""

from __future__ import annotations

import uuid

import asyncpg

from auth.credentials import throttle
from auth.credentials.usernames import canonical
from auth.helpdesk import model
from auth.helpdesk.model import MatchKey, PatronMatch, PatronOverview
from auth.mail import MAX_ATTEMPTS
from auth.oidc.clients import ClientSource
from auth.services import AuthServices
from auth.sessions.browsers import describe
from auth.sessions.registry import MAX_USER_AGENT
from auth.store.accounts import canonical_email
from auth.store.audit import AuditTrail
from auth.store.helpdesk import HelpdeskStore
from auth.store.memberships import Memberships

MAX_MATCHES = 20
MAX_QUERY = 320
SIGN_INS = 10
MAILS = 20
ENDED_PASSES = 20
SIGN_IN_ACTIONS = ("login_succeeded", "login_failed")
_KEYS: tuple[MatchKey, ...] = ("account_id", "pass_number", "username", "email")


def account_id_of(value: object) -> str | None:
    """`value` as an account id (a UUID, in its canonical form), or None: a malformed id
    names nobody, it is no error."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        return None


def state_of(row: asyncpg.Record) -> model.State:
    return model.account_state(
        disabled=row["disabled"], not_activated=row["not_activated"], merged_into=row["merged_into"]
    )


class Lookup:
    """`clients`: the connected libraries in force (to name them); None without federation."""

    def __init__(
        self, store: HelpdeskStore, services: AuthServices, clients: ClientSource | None
    ) -> None:
        self._store = store
        self._services = services
        self._clients = clients

    async def find(self, query: str) -> list[PatronMatch]:
        text = query.strip() if isinstance(query, str) else ""
        if not text or len(text) > MAX_QUERY or not text.isprintable():
            return []
        rows = await self._store.find(
            account_id=account_id_of(text),
            name=canonical(text),
            email=canonical_email(text),
            limit=MAX_MATCHES,
        )
        return [
            PatronMatch(
                account_id=row["id"],
                username=row["username"],
                email=row["email"],
                state=state_of(row),
                matched_by=tuple(key for key in _KEYS if key in row["keys"]),
                merged_into=row["merged_into"],
            )
            for row in rows
        ]

    async def read(self, row: asyncpg.Record, memberships: Memberships) -> PatronOverview:
        """The overview of the account `row` (`HelpdeskStore.account`)."""
        services, store = self._services, self._store
        account_id = row["id"]
        block = await store.throttle(throttle.account_key(account_id, ""))
        sessions = await services.registry.live_sessions(account_id, idle=services.lifetimes.idle)
        return PatronOverview(
            account_id=account_id,
            username=row["username"],
            email=row["email"],
            pass_number=row["pass_number"],
            state=state_of(row),
            merged_into=row["merged_into"],
            created_at=row["created_at"],
            memberships=await memberships.of(account_id),
            ended_passes=tuple(
                model.EndedPass(r["institution"], r["pass_number"], r["type"], r["ended_at"])
                for r in await store.ended_passes(account_id, ENDED_PASSES)
            ),
            block=(
                model.Block(
                    block["failures"],
                    block["last_failure_at"],
                    block["blocked_until"],
                    block["blocked"],
                )
                if block is not None
                else None
            ),
            sign_ins=await _sign_ins(services.audit, account_id),
            sessions=tuple(
                model.OpenSession(
                    started_at=s.created_at,
                    last_seen_at=s.last_seen_at,
                    browser=describe(s.user_agent),
                    libraries=tuple(self._library(client_id) for client_id in s.clients),
                )
                for s in sessions
            ),
            mails=tuple(_mail(r) for r in await store.mails(account_id, MAILS)),
            links=tuple(
                model.PendingLink(r["purpose"], r["created_at"], r["expires_at"])
                for r in await store.live_links(account_id)
            ),
        )

    def _library(self, client_id: str) -> model.ConnectedLibrary:
        client = self._clients.table.get(client_id) if self._clients is not None else None
        return model.ConnectedLibrary(client_id, client.name if client is not None else client_id)


async def _sign_ins(audit: AuditTrail, account_id: str) -> tuple[model.SignIn, ...]:
    rows = await audit.for_account(account_id, limit=SIGN_INS, actions=SIGN_IN_ACTIONS)
    return tuple(
        model.SignIn(
            at=r.at,
            succeeded=r.action == "login_succeeded",
            browser=describe(r.user_agent[:MAX_USER_AGENT] if r.user_agent else None),
            remote=r.remote,
        )
        for r in rows
    )


def _mail(row: asyncpg.Record) -> model.MailEntry:
    state = model.mail_state(
        sent=row["sent_at"] is not None, attempts=row["attempts"], max_attempts=MAX_ATTEMPTS
    )
    return model.MailEntry(
        kind=row["kind"],
        recipient=row["recipient"],
        created_at=row["created_at"],
        state=state,
        attempts=row["attempts"],
        sent_at=row["sent_at"],
        last_error=row["last_error"] if state != "sent" else None,
        next_attempt_at=row["next_attempt_at"] if state in ("waiting", "retrying") else None,
    )
