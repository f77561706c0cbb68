"""A new staff member's activation: the mailed link opens a page where they choose a
password (the same rules as patrons'), and then enrol a second factor (`auth.staff.enrol`).

The link is single use: choosing the password spends it and starts a session at stage
`enrol`, which opens only the enrolment pages. The member is activated (and can sign in)
once a factor is enrolled and the recovery codes shown; a member who left before that signs
in with the password and lands on the enrolment again.
"""

from __future__ import annotations

from aiohttp import hdrs, web

from auth import urls
from auth.credentials.password_policy import PasswordRejected
from auth.credentials.throttle import CLIENT_ADDRESS
from auth.pages.i18n import translator
from auth.pages.render import language
from auth.staff.forms import read_checked
from auth.staff.model import StaffMember
from auth.staff.render import message, page, set_session_cookie
from auth.staff.services import STAFF_SERVICES


async def _live(request: web.Request, token: str) -> StaffMember | None:
    services = request.config_dict[STAFF_SERVICES]
    holder = await services.members.link_holder(token)
    member = await services.members.by_id(holder) if holder else None
    if member is None or member.disabled or member.password_hash is not None:
        return None
    return member


async def _dead(request: web.Request) -> web.Response:
    return await message(
        request,
        410,
        "staff.activate.invalid.title",
        "staff.activate.invalid.text",
        link=urls.STAFF_LOGIN,
        link_key="staff.to_login",
    )


async def activate_form(request: web.Request) -> web.StreamResponse:
    token = request.query.get("token", "")
    member = await _live(request, token)
    if member is None:
        return await _dead(request)
    return await page(request, "activate.html", token=token, email=member.email)


async def activate(request: web.Request) -> web.StreamResponse:
    services = request.config_dict[STAFF_SERVICES]
    form = await read_checked(request, ("token", "password"))
    token, password = form["token"], form["password"]
    member = await _live(request, token)
    if member is None:
        return await _dead(request)
    try:
        services.policy.check(password, username=member.email, pass_number="")
    except PasswordRejected as exc:
        t = translator(language(request))
        return await page(
            request,
            "activate.html",
            status=422,
            token=token,
            email=member.email,
            errors={"password": t[f"error.password.{exc.code}"]},
        )
    new_hash = await services.hasher.hash(password)
    async with services.members.transaction() as conn:
        if await services.members.spend_link(token, conn=conn) != member.id:
            return await _dead(request)
        await services.members.set_password_hash(member.id, new_hash, conn=conn)
        session = await services.sessions.create(
            member.id,
            "enrol",
            user_agent=request.headers.get(hdrs.USER_AGENT),
            remote=request.get(CLIENT_ADDRESS),
            conn=conn,
        )
    onward = web.HTTPSeeOther(urls.STAFF_SECURITY)
    set_session_cookie(request, onward, session)
    raise onward


def add_routes(console: web.Application) -> None:
    path = urls.STAFF_ACTIVATE.removeprefix(urls.STAFF)
    console.router.add_get(path, activate_form)
    console.router.add_post(path, activate)
