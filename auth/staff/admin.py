"""The admin's pages: the staff list, adding a member (their activation link is mailed),
disabling and enabling one, changing a role, and starting a member's sign-in over (the
lost-factor procedure). Every action takes a short reason and writes its row of the audit
trail in the same transaction (`auth.staff.management`). An admin cannot act on their own
account here: the console always keeps the admin who is using it.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from auth import urls
from auth.audit import origin_of
from auth.pages.render import language
from auth.staff import trail
from auth.staff.forms import read_checked
from auth.staff.guard import admin_only
from auth.staff.model import StaffError, checked_reason
from auth.staff.render import page
from auth.staff.services import STAFF_SERVICES

_STATUS = {
    "email": 422,
    "reason": 422,
    "role": 422,
    "email_taken": 409,
    "self": 409,
    "not_admin": 403,
    "unknown": 404,
}
_NOTICES = {
    "added": "staff.members.added",
    "disabled": "staff.members.disabled",
    "enabled": "staff.members.enabled",
    "role": "staff.members.role_changed",
    "reset": "staff.members.reset_sent",
    "unchanged": "staff.members.unchanged",
}


@admin_only
async def members_page(request: web.Request) -> web.StreamResponse:
    return await _page(request, notice=_NOTICES.get(request.query.get("notice", "")))


async def _page(request: web.Request, *, status: int = 200, **context: Any) -> web.Response:
    services = request.config_dict[STAFF_SERVICES]
    context.setdefault("form", {"email": "", "role": "helpdesk", "reason": ""})
    return await page(
        request,
        "members.html",
        status=status,
        members=await services.members.everyone(),
        **context,
    )


@admin_only
async def add(request: web.Request) -> web.StreamResponse:
    services = request.config_dict[STAFF_SERVICES]
    form = await read_checked(request, ("email", "role", "reason"))
    try:
        await services.management.invite(
            form["email"],
            form["role"],
            actor=trail.signed_in_actor(request),
            origin=origin_of(request),
            reason=checked_reason(form["reason"]),
            lang=language(request),
        )
    except StaffError as exc:
        return await _page(
            request,
            status=_STATUS.get(exc.code, 422),
            error=f"staff.members.error.{exc.code}",
            form={key: form[key][:300] for key in ("email", "role", "reason")},
        )
    raise web.HTTPSeeOther(f"{urls.STAFF_MEMBERS}?notice=added")


async def _act(request: web.Request, action: str) -> web.StreamResponse:
    services = request.config_dict[STAFF_SERVICES]
    form = await read_checked(request, ("staff_id", "reason", "role"))
    actor, origin = trail.signed_in_actor(request), origin_of(request)
    management, member_id = services.management, form["staff_id"]
    try:
        reason = checked_reason(form["reason"])
        if action == "disable" or action == "enable":
            _, changed, _ = await management.set_disabled(
                member_id, action == "disable", actor=actor, origin=origin, reason=reason
            )
            notice = ("disabled" if action == "disable" else "enabled") if changed else "unchanged"
        elif action == "role":
            _, changed = await management.set_role(
                member_id, form["role"], actor=actor, origin=origin, reason=reason
            )
            notice = "role" if changed else "unchanged"
        else:
            await management.start_over(
                member_id, actor=actor, origin=origin, reason=reason, lang=language(request)
            )
            notice = "reset"
    except StaffError as exc:
        return await _page(
            request, status=_STATUS.get(exc.code, 422), error=f"staff.members.error.{exc.code}"
        )
    raise web.HTTPSeeOther(f"{urls.STAFF_MEMBERS}?notice={notice}")


@admin_only
async def disable(request: web.Request) -> web.StreamResponse:
    return await _act(request, "disable")


@admin_only
async def enable(request: web.Request) -> web.StreamResponse:
    return await _act(request, "enable")


@admin_only
async def change_role(request: web.Request) -> web.StreamResponse:
    return await _act(request, "role")


@admin_only
async def start_over(request: web.Request) -> web.StreamResponse:
    return await _act(request, "reset")


def add_routes(console: web.Application) -> None:
    for path, method, handler in (
        (urls.STAFF_MEMBERS, "GET", members_page),
        (urls.STAFF_MEMBERS_ADD, "POST", add),
        (urls.STAFF_MEMBERS_DISABLE, "POST", disable),
        (urls.STAFF_MEMBERS_ENABLE, "POST", enable),
        (urls.STAFF_MEMBERS_ROLE, "POST", change_role),
        (urls.STAFF_MEMBERS_RESET, "POST", start_over),
    ):
        console.router.add_route(method, path.removeprefix(urls.STAFF), handler)
