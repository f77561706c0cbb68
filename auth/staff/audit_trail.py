"""The audit trail as the admin reads it: everybody's rows, newest first, a page at a time
(`before_id`), or one actor's (a colleague's, a patron's, an operator's: every name in the
list links to that actor's rows). Helpdesk members get 403."""

from __future__ import annotations

from aiohttp import web

from auth import urls
from auth.audit import label
from auth.pages.render import language
from auth.staff.guard import admin_only
from auth.staff.render import page
from auth.staff.services import STAFF_SERVICES

PAGE_SIZE = 50
MAX_ACTOR = 200


@admin_only
async def trail_page(request: web.Request) -> web.StreamResponse:
    services = request.config_dict[STAFF_SERVICES]
    before = request.query.get("before_id", "")
    before_id = int(before) if before.isascii() and before.isdigit() and len(before) < 19 else None
    actor = request.query.get("actor", "").strip()[:MAX_ACTOR] or None
    # An id with a control character is nobody's (and one PostgreSQL's text cannot hold).
    rows = (
        await services.audit.newest(limit=PAGE_SIZE + 1, before_id=before_id, actor_id=actor)
        if actor is None or actor.isprintable()
        else []
    )
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    members = await services.members.everyone()
    lang = language(request)
    return await page(
        request,
        "audit.html",
        rows=rows,
        actions={row.action: label(row.action, lang) for row in rows},
        emails={member.id: member.email for member in members},
        members=members,
        actor=actor or "",
        next_before=rows[-1].id if more and rows else None,
    )


def add_routes(console: web.Application) -> None:
    console.router.add_get(urls.STAFF_AUDIT.removeprefix(urls.STAFF), trail_page)
