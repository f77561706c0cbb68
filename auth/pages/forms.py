"""Reading the body of an /auth/* form, strictly.

Only `application/x-www-form-urlencoded`, at most `MAX_FORM_BYTES` (refused by Content-Length
before reading, and again while reading), each field at most once, valid UTF-8. Anything else
is a clean 400 or 413, never a half-parsed login. A POST with no body at all is the empty
form (a logout's form has no field but its token), so it is refused for that missing token.

Every form's CSRF token is checked here, and a missing or wrong one is refused here, with the
same 403 page for every form: the handlers never see a form that failed the check.
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qsl

from aiohttp import web
from aiohttp_session import get_session

from auth.pages import csrf
from auth.pages.render import refusal

MAX_FORM_BYTES = 16 * 1024
FORM_READ_TIMEOUT = 10.0


class FormError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason

    def as_http(self) -> web.HTTPException:
        if self.status == 413:
            return web.HTTPRequestEntityTooLarge(
                max_size=MAX_FORM_BYTES, actual_size=MAX_FORM_BYTES + 1, text=self.reason
            )
        if self.status == 408:
            return web.HTTPRequestTimeout(text=self.reason)
        return web.HTTPBadRequest(text=self.reason)


async def read_checked_form(request: web.Request, fields: tuple[str, ...]) -> dict[str, str]:
    """Read the form and check its CSRF token against the session; a form that cannot be
    read is refused with 400, 408 or 413, one without this session's token with 403."""
    session = await get_session(request)
    try:
        form = await read_form(request, (csrf.FIELD, *fields))
    except FormError as exc:
        raise exc.as_http() from None
    if not csrf.valid(session, form[csrf.FIELD]):
        raise await refusal(request, web.HTTPForbidden, "csrf.title", "csrf.text")
    return form


async def read_form(request: web.Request, fields: tuple[str, ...]) -> dict[str, str]:
    """Return the named fields (missing ones as ''); unknown fields are ignored."""
    if not request.body_exists:
        return dict.fromkeys(fields, "")
    content_type = request.headers.get("Content-Type", "")
    if content_type.split(";", 1)[0].strip().lower() != "application/x-www-form-urlencoded":
        raise FormError(400, "This form must be sent as a web form.")
    length = request.content_length
    if length is not None and length > MAX_FORM_BYTES:
        raise FormError(413, "The form is too large.")
    body = bytearray()
    try:
        # A form is a few hundred bytes; a client dripping it byte by byte is holding a
        # handler hostage, not filling in a form.
        async with asyncio.timeout(FORM_READ_TIMEOUT):
            async for chunk in request.content.iter_chunked(4096):
                body += chunk
                if len(body) > MAX_FORM_BYTES:
                    raise FormError(413, "The form is too large.")
    except TimeoutError:
        raise FormError(408, "The form took too long to arrive.") from None
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=False,
            encoding="utf-8",
            errors="strict",
            max_num_fields=50,
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormError(400, "The form could not be read.") from exc
    values: dict[str, str] = {}
    for name, value in pairs:
        if name not in fields:
            continue
        if name in values:
            raise FormError(400, "The form could not be read.")
        if "\x00" in value:
            raise FormError(400, "The form could not be read.")
        values[name] = value
    return {name: values.get(name, "") for name in fields}
