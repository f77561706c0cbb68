"""The helpdesk's patron pages: the search results, one patron's page, and one small form per
action, all through `auth.helpdesk.Helpdesk` (what it finds, shows and does is exactly what
these pages offer).

The search lists its matches even when there is one: searching is not recorded and shows a
match's username, address and state only, so the desk confirms the caller is that patron
before opening their page, which is recorded (`helpdesk_viewed`) every time it is shown.

Each action is a POST with the console's CSRF token and a required reason, answered the
post/redirect/get way: `303` back to the patron's page, which says what was done. A refusal
answers with the page itself, the message next to the field to fix, and the status
`auth.helpdesk.errors` names (422, 409; 404 for a patron who is not there). A malformed
account id is 404 before anything is read. Any staff member may use these pages.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from aiohttp import web

from auth import urls
from auth.audit import origin_of
from auth.helpdesk.errors import EmailRejected, NoSuchPatron, NotApplicable, ReasonRequired
from auth.helpdesk.lookup import MAX_QUERY, account_id_of
from auth.helpdesk.model import REASON_MAX
from auth.helpdesk.service import HELPDESK, Helpdesk
from auth.pages import i18n, passes
from auth.pages.i18n import translator
from auth.pages.render import language
from auth.pages.sessions_list import ZONE
from auth.services import INSTITUTIONS
from auth.staff import patron_view as view
from auth.staff.forms import read_checked
from auth.staff.guard import StaffHandler, signed_in
from auth.staff.render import page, refusal
from auth.staff.trail import signed_in_actor

ECHOED_QUERY = 200  # the search box's maxlength
KEPT_FIELD = 320  # what a refused form's field is shown again with, at most

_FIELDS: dict[str, tuple[str, ...]] = {
    "reset": (view.REASON, view.MAIL_LANG),
    "activation": (view.REASON, view.MAIL_LANG),
    "unblock": (view.REASON,),
    "end_sessions": (view.REASON,),
    "disable": (view.REASON,),
    "enable": (view.REASON,),
    "email": (view.NEW_EMAIL, view.REASON, view.MAIL_LANG),
}
assert set(_FIELDS) == set(view.ACTIONS)

_DONE = {
    "reset": "staff.patron.done.reset",
    "activation": "staff.patron.done.activation",
    "unblocked": "staff.patron.done.unblocked",
    "not_blocked": "staff.patron.done.not_blocked",
    "sessions_ended": "staff.patron.done.sessions_ended",
    "disabled": "staff.patron.done.disabled",
    "enabled": "staff.patron.done.enabled",
    "email": "staff.patron.done.email",
}


def patron_url(account_id: str) -> str:
    return f"{urls.STAFF_PATRONS}/{account_id}"


@signed_in
async def search(request: web.Request) -> web.StreamResponse:
    """The matches of `q`, as a list (one match too)."""
    query = request.query.get("q", "")
    if not query.strip():
        raise web.HTTPSeeOther(urls.STAFF_HOME)
    matches = await request.config_dict[HELPDESK].find(query[:MAX_QUERY])
    return await page(
        request,
        "patrons.html",
        q=query[:ECHOED_QUERY],
        matches=matches,
        word=functools.partial(view.word, translator(language(request))),
    )


async def _not_there(request: web.Request) -> web.HTTPException:
    return await refusal(
        request, web.HTTPNotFound, "staff.patron.missing.title", "staff.patron.missing.text"
    )


async def _account_id(request: web.Request) -> str:
    """The id in the URL, in its canonical form; a malformed one is 404."""
    account_id = account_id_of(request.match_info["account_id"])
    if account_id is None:
        raise await _not_there(request)
    return account_id


@signed_in
async def patron_page(request: web.Request) -> web.StreamResponse:
    account_id = await _account_id(request)
    return await _show(request, account_id, notice=_DONE.get(request.query.get("done", "")))


async def _show(
    request: web.Request, account_id: str, *, status: int = 200, **context: Any
) -> web.Response:
    """The patron's page (recorded as looked at by the helpdesk), or the 404 page."""
    desk: Helpdesk = request.config_dict[HELPDESK]
    overview = await desk.overview(
        account_id, actor=signed_in_actor(request), origin=origin_of(request)
    )
    if overview is None:
        raise await _not_there(request)
    lang = language(request)
    t = translator(lang)
    institutions = request.config_dict[INSTITUTIONS].table

    def institution(institution_id: str) -> str:
        found = institutions.get(institution_id)
        return found.name if found is not None else institution_id

    offered = view.offered(overview)
    context.setdefault("failed", None)
    context.setdefault("form", {})
    if context["failed"] not in offered and context.get("errors"):
        # A form the page does not show (the state changed, or it was never offered): its
        # message goes to the top of the page instead.
        context["error"] = next(iter(context.pop("errors").values()))
    return await page(
        request,
        "patron.html",
        status=status,
        p=overview,
        offered=offered,
        live_passes=passes.entries(
            overview.memberships, institutions, datetime.now(ZONE).date(), lang
        ),
        institution=institution,
        at=functools.partial(view.at, lang=lang),
        iso=view.iso,
        browser=functools.partial(view.browser_text, lang=lang),
        word=functools.partial(view.word, t),
        patron_url=patron_url(overview.account_id),
        mail_languages=i18n.LANGUAGES,
        reason_max=REASON_MAX,
        **context,
    )


async def _perform(request: web.Request, action: str, account_id: str, form: dict[str, str]) -> str:
    """Do `action`; what was done, as the patron page's `done` names it."""
    desk: Helpdesk = request.config_dict[HELPDESK]
    actor, origin = signed_in_actor(request), origin_of(request)
    reason, lang = form[view.REASON], form.get(view.MAIL_LANG, "")
    mail_lang = lang if lang in i18n.LANGUAGES else i18n.DEFAULT
    if action == "reset":
        await desk.send_reset(account_id, actor=actor, origin=origin, reason=reason, lang=mail_lang)
        return "reset"
    if action == "activation":
        await desk.resend_activation(
            account_id, actor=actor, origin=origin, reason=reason, lang=mail_lang
        )
        return "activation"
    if action == "unblock":
        blocked = await desk.lift_block(account_id, actor=actor, origin=origin, reason=reason)
        return "unblocked" if blocked else "not_blocked"
    if action == "end_sessions":
        await desk.end_sessions(account_id, actor=actor, origin=origin, reason=reason)
        return "sessions_ended"
    if action == "disable":
        await desk.disable(account_id, actor=actor, origin=origin, reason=reason)
        return "disabled"
    if action == "enable":
        await desk.enable(account_id, actor=actor, origin=origin, reason=reason)
        return "enabled"
    await desk.correct_email(
        account_id,
        form[view.NEW_EMAIL],
        actor=actor,
        origin=origin,
        reason=reason,
        lang=mail_lang,
    )
    return "email"


def _action(action: str) -> StaffHandler:
    """The handler of one action's form."""

    @signed_in
    async def act(request: web.Request) -> web.StreamResponse:
        account_id = await _account_id(request)
        form = await read_checked(request, _FIELDS[action])
        try:
            done = await _perform(request, action, account_id, form)
        except (ReasonRequired, EmailRejected, NotApplicable, NoSuchPatron) as exc:
            answer = view.refusal(exc)
            if answer.status == 404:
                raise await _not_there(request) from None
            return await _show(
                request,
                account_id,
                status=answer.status,
                failed=action,
                errors={answer.field: answer.message} if answer.field else {},
                error=None if answer.field else answer.message,
                form={name: form[name][:KEPT_FIELD] for name in _FIELDS[action]},
            )
        raise web.HTTPSeeOther(f"{patron_url(account_id)}?done={done}")

    return act


@signed_in
async def to_patron_page(request: web.Request) -> web.StreamResponse:
    """An action's URL opened as a page (the language switch of a refused form's page): the
    patron's page, in the language asked for."""
    account_id = await _account_id(request)
    lang = request.query.get("lang")
    query = f"?lang={lang}" if lang in i18n.LANGUAGES else ""
    raise web.HTTPSeeOther(patron_url(account_id) + query)


def add_routes(console: web.Application) -> None:
    base = urls.STAFF_PATRONS.removeprefix(urls.STAFF)
    console.router.add_get(base, search)
    console.router.add_get(base + "/{account_id}", patron_page)
    for action in view.ACTIONS:
        console.router.add_post(f"{base}/{{account_id}}/{action}", _action(action))
        console.router.add_get(f"{base}/{{account_id}}/{action}", to_patron_page)
