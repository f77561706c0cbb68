"""Reading a console form: strictly (`auth.pages.forms.read_form`: urlencoded, bounded, each
field once), and refused with the same 403 page when its CSRF token is not this browser's,
before the handler sees any of it."""

from __future__ import annotations

from aiohttp import web

from auth.pages.forms import FormError, read_form
from auth.staff import csrf
from auth.staff.render import form_ok, refusal


async def read_checked(request: web.Request, fields: tuple[str, ...]) -> dict[str, str]:
    try:
        form = await read_form(request, (csrf.FIELD, *fields))
    except FormError as exc:
        raise exc.as_http() from None
    if not form_ok(request, form[csrf.FIELD]):
        raise await refusal(request, web.HTTPForbidden, "csrf.title", "csrf.text")
    return form
