"""A staff member's own security: the "my security" page (their second factors, how many
recovery codes are left), removing a factor (never the last one), a new set of recovery
codes; and, for a member still enrolling, the choice of a first factor.

Every change here asks for the member's password again, so a session left open on a desk
cannot be used to plant a factor of somebody else's or to read out new recovery codes.
Wrong passwords count like failed sign-ins.
"""

from __future__ import annotations

from aiohttp import web

from auth import urls
from auth.credentials.passwords import HasherBusy
from auth.staff import attempts, recovery, trail
from auth.staff.forms import read_checked
from auth.staff.guard import at_stage
from auth.staff.identity import SESSION
from auth.staff.render import page
from auth.staff.services import STAFF_SERVICES
from auth.store.staff_factors import LastFactor

MAX_PASSWORD = 1024
_NOTICES = {
    "factor_added": "staff.security.factor_added",
    "factor_removed": "staff.security.factor_removed",
    "recovery_used": "staff.security.recovery_used",
    "has_totp": "staff.security.has_totp",
}


class Refused(Exception):
    """A form refused before its change: the status and the words of why."""

    def __init__(self, status: int, error: str, retry_after: int | None = None) -> None:
        super().__init__(error)
        self.status, self.error, self.retry_after = status, error, retry_after


async def confirm_password(request: web.Request, password: str) -> None:
    """The signed-in member's password, asked again before a change (`Refused` if wrong)."""
    services = request.config_dict[STAFF_SERVICES]
    session = request[SESSION]
    key = attempts.member_key(session.staff_id)
    if wait := await attempts.wait(request, key):
        raise Refused(429, "staff.login.throttled", wait)
    member = await services.members.by_id(session.staff_id)
    stored = member.password_hash if member is not None else None
    try:
        verdict = await services.hasher.verify(
            stored, password if len(password) <= MAX_PASSWORD else ""
        )
    except HasherBusy:
        raise Refused(503, "staff.login.busy", 5) from None
    if not verdict.ok or stored is None:
        await attempts.failed(request, key)
        raise Refused(403, "staff.security.wrong_password")


@at_stage("enrol", "full")
async def security_page(request: web.Request) -> web.StreamResponse:
    return await _page(request, notice=_NOTICES.get(request.query.get("notice", "")))


async def _page(
    request: web.Request,
    *,
    status: int = 200,
    notice: str | None = None,
    error: str | None = None,
) -> web.Response:
    services = request.config_dict[STAFF_SERVICES]
    session = request[SESSION]
    factors = await services.factors.of(session.staff_id)
    return await page(
        request,
        "security.html",
        status=status,
        notice=notice,
        error=error,
        enrolling=session.stage == "enrol",
        factors=factors,
        has_totp=any(factor.kind == "totp" for factor in factors),
        codes_left=await services.factors.codes_left(session.staff_id),
    )


async def _refused(request: web.Request, refused: Refused) -> web.Response:
    response = await _page(request, status=refused.status, error=refused.error)
    if refused.retry_after is not None:
        response.headers["Retry-After"] = str(refused.retry_after)
    return response


@at_stage("full")
async def remove_factor(request: web.Request) -> web.StreamResponse:
    services = request.config_dict[STAFF_SERVICES]
    session = request[SESSION]
    form = await read_checked(request, ("factor", "password"))
    try:
        await confirm_password(request, form["password"])
    except Refused as refused:
        return await _refused(request, refused)
    factor_id = int(form["factor"]) if form["factor"].isascii() and form["factor"].isdigit() else 0
    try:
        async with services.members.transaction() as conn:
            removed = await services.factors.remove(session.staff_id, factor_id, conn=conn)
            if removed is not None:
                await trail.record(
                    request,
                    trail.event(
                        request,
                        "staff_factor_removed",
                        by=trail.actor(session.staff_id, session.email),
                        kind=removed.kind,
                        name=removed.name,
                    ),
                    conn=conn,
                )
    except LastFactor:
        return await _page(request, status=409, error="staff.security.last_factor")
    if removed is None:
        return await _page(request, status=404, error="staff.security.no_such_factor")
    raise web.HTTPSeeOther(f"{urls.STAFF_SECURITY}?notice=factor_removed")


@at_stage("full")
async def new_codes(request: web.Request) -> web.StreamResponse:
    form = await read_checked(request, ("password",))
    try:
        await confirm_password(request, form["password"])
    except Refused as refused:
        return await _refused(request, refused)
    session = request[SESSION]
    codes = await issue_codes(
        request, session.staff_id, session.email, "staff_recovery_codes_renewed"
    )
    return await page(request, "codes.html", codes=codes, activated=False)


async def issue_codes(
    request: web.Request, staff_id: str, email: str, action: str, *, conn: object = None
) -> list[str]:
    """A new set of recovery codes for the member (the old ones stop working), with its row;
    in `conn`'s transaction when given."""
    services = request.config_dict[STAFF_SERVICES]
    codes = recovery.new_codes()
    hashes = [recovery.code_hash(staff_id, code) for code in codes]
    row = trail.event(request, action, by=trail.actor(staff_id, email))
    if conn is not None:
        await services.factors.replace_codes(staff_id, hashes, conn=conn)
        await trail.record(request, row, conn=conn)
    else:
        async with services.members.transaction() as own:
            await services.factors.replace_codes(staff_id, hashes, conn=own)
            await trail.record(request, row, conn=own)
    return codes


def add_routes(console: web.Application) -> None:
    for path, method, handler in (
        (urls.STAFF_SECURITY, "GET", security_page),
        (urls.STAFF_SECURITY_REMOVE, "POST", remove_factor),
        (urls.STAFF_SECURITY_CODES, "POST", new_codes),
    ):
        console.router.add_route(method, path.removeprefix(urls.STAFF), handler)
