"""Linking a pass of another library: `POST /auth/account/link`, two accounts made one.

The patron proves the pass the way it logs in: with its account's password. The check is a
login's in every way that matters to an attacker: throttled on the pass's account and on the
client's address (429 with Retry-After), argon2 in the hasher's thread pool, the same work and
the same answer (403, one message) for a wrong password, an unknown pass and a pass of an
account without a password. A pass nobody holds is never created here: only the password of
its account proves a pass.

Once proved, the pass's account goes into the patron's in one transaction
(`auth.store.merges`), unless its password changed since it was checked (then 403, as for a
wrong one: the old password proves nothing): its live memberships move, it is disabled and
marked merged, its username is freed, every session, token, device cookie and mailed link of
it dies, both accounts are re-read on every instance, and both addresses get a notice. Every
pass number then logs in to the one account left. Both accounts' audit trails tell of it; a
wrong password for a pass's account is on that account's trail as a failed login
(`auth.pages.trail`).
"""

from __future__ import annotations

import math

from aiohttp import web
from aiohttp_session import get_session

from auth import urls
from auth.audit import Event, patron
from auth.credentials import throttle
from auth.credentials.passwords import HasherBusy
from auth.credentials.usernames import canonical
from auth.mail import Outbox
from auth.pages import trail
from auth.pages.account import account_page_with, current_patron
from auth.pages.forms import read_checked_form
from auth.pages.i18n import translator
from auth.pages.render import language
from auth.services import INSTITUTIONS, SERVICES
from auth.store import merges
from auth.store.accounts import Account, canonical_email

MAX_PASS_NUMBER = 64
MAX_PASSWORD = 1024


async def link_pass(request: web.Request) -> web.StreamResponse:
    _, account = await current_patron(request)
    services = request.app[SERVICES]
    form = await read_checked_form(request, ("institution", "pass_number", "password"))
    t = translator(language(request))
    institution = request.app[INSTITUTIONS].table.get(form["institution"])
    number, password = form["pass_number"].strip(), form["password"]

    async def refuse(status: int, field: str, key: str) -> web.Response:
        return await account_page_with(
            request,
            account,
            status=status,
            errors={field: t[key]},
            link_institution=form["institution"],
            link_pass_number=number[:MAX_PASS_NUMBER],
        )

    if institution is None:
        return await refuse(422, "link_institution", "error.link.institution")
    if not number or not password or len(number) > MAX_PASS_NUMBER or len(password) > MAX_PASSWORD:
        return await refuse(403, "link_password", "error.link.failed")

    async with services.accounts.transaction() as conn:
        holder = await merges.pass_holder(conn, institution.id, number)
    if holder is not None and holder.id == account.id:
        return await refuse(409, "link_pass_number", "error.link.own")

    account_key = throttle.account_key(holder.id if holder else None, canonical(number))
    address_key = throttle.address_key(request.get(throttle.CLIENT_ADDRESS, "unknown"))
    wait = await services.throttle.retry_after(account_key, address_key)
    if wait > 0:
        response = await refuse(429, "link_password", "login.throttled")
        response.headers["Retry-After"] = str(math.ceil(wait))
        return response
    proved = holder.password_hash if holder is not None else None
    try:
        # An unknown pass costs the same argon2 work as a real one (a dummy hash).
        verdict = await services.hasher.verify(proved, password)
    except HasherBusy:
        response = await refuse(503, "link_password", "login.busy")
        response.headers["Retry-After"] = "5"
        return response
    if holder is None or proved is None or not verdict.ok:
        blocked = await services.throttle.failed(account_key, address_key)
        if holder is not None:  # a wrong password for that account, on its trail
            trail.record_after_answer(
                request,
                trail.failed_attempt(
                    request,
                    holder.id,
                    blocked,
                    form="link",
                    actor=patron(account.id, account.username),
                ),
            )
        return await refuse(403, "link_password", "error.link.failed")
    await services.throttle.succeeded(account_key)

    async with services.accounts.transaction() as conn:
        outcome = await merges.merge(
            conn, account.id, holder.id, institution.id, number, proved=proved
        )
        if outcome is merges.Refusal.UNPROVED:  # its password changed since it was checked
            return await refuse(403, "link_password", "error.link.failed")
        if isinstance(outcome, merges.Refusal):
            key = "error.link.own" if outcome is merges.Refusal.OWN else "error.link.elsewhere"
            if outcome is merges.Refusal.BLOCKED:
                key = "error.link.blocked"
            return await refuse(409, "link_pass_number", key)
        absorbed = outcome.absorbed.id
        await services.registry.revoke_account(absorbed, conn=conn, credentials=True)
        await services.accounts.void_devices(absorbed, conn=conn)
        await services.links.void_all(conn, absorbed)
        await services.registry.account_changed(account.id, conn)
        await _mail_both(request, conn, account, outcome)
        await services.audit.record_all(_rows(request, account, outcome), conn=conn)
    (await get_session(request))["notice"] = "account.saved.linked"
    raise web.HTTPSeeOther(urls.ACCOUNT)


def _rows(request: web.Request, account: Account, merged: merges.Merged) -> list[Event]:
    """The merge on both accounts' trails: the passes added to the patron's, the other
    account gone into it."""
    absorbed = merged.absorbed
    passes = list(merged.passes)
    return [
        trail.event(
            request,
            "account_merged",
            account.id,
            account.username,
            absorbed=absorbed.id,
            absorbed_username=absorbed.username,
            passes=passes,
        ),
        trail.event(request, "pass_linked", account.id, account.username, passes=passes),
        trail.event(
            request,
            "account_absorbed",
            absorbed.id,
            actor=patron(account.id, account.username),
            merged_into=account.id,
            passes=passes,
        ),
    ]


async def _mail_both(
    request: web.Request, conn: object, account: Account, merged: merges.Merged
) -> None:
    """The notice to both addresses (one mail when they are the same, none to a missing one),
    queued with the merge itself."""
    services = request.app[SERVICES]
    recipients: dict[str, str] = {}
    for address in (account.email, merged.absorbed.email):
        if address:
            recipients.setdefault(canonical_email(address), address)
    for address in recipients.values():
        await Outbox.put(
            conn,
            services.composer.compose(
                "account_merged",
                language(request),
                address,
                username=account.username,
                absorbed_username=merged.absorbed.username,
                passes=", ".join(merged.passes),
            ),
            account_id=account.id,  # the one account both are now
        )


def add_routes(app: web.Application) -> None:
    app.router.add_post(urls.ACCOUNT_LINK, link_pass)
