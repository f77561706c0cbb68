"""The patron's own list of sessions, as the account page shows it, and the sign-in notice.

Each live session of the patron is shown by the browser and system it was started from, when
it started, when it was last used, and the connected libraries it signed in to; never where
from. The sign-in notice (`GATEWAY_SIGNIN_NOTICES`) tells the patron by mail that a browser
they never logged in with before just did, in the same words.

Times are shown as the Netherlands' clocks show them (Europe/Amsterdam): the patron's own
time zone is not known without a script, and the library's patrons are Dutch.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from aiohttp import web

from auth import urls
from auth.clock import ZONE as ZONE  # (where the staff pages find it too)
from auth.identity import Identity
from auth.oidc.provider import PROVIDER
from auth.pages.i18n import translator
from auth.pages.render import language
from auth.services import SERVICES
from auth.sessions.browsers import describe
from auth.sessions.registry import MAX_USER_AGENT
from auth.store.accounts import Account


@dataclass(frozen=True, slots=True)
class SessionEntry:
    """One row of the list, in the page's language."""

    handle: str
    browser: str
    started: str
    started_iso: str
    last_active: str
    last_active_iso: str
    libraries: tuple[str, ...]
    current: bool


def when(moment: datetime, lang: str) -> str:
    """A moment as a patron reads it: "3 May 2026, 14:05" / "3 mei 2026 om 14:05"."""
    t = translator(lang)
    local = moment.astimezone(ZONE)
    return t["sessions.when"].format(
        day=local.day,
        month=t["sessions.months"].split()[local.month - 1],
        year=local.year,
        time=f"{local.hour:02d}:{local.minute:02d}",
    )


def browser_text(user_agent: str | None, lang: str) -> str:
    """The browser and its system ("Firefox 125 on Windows"), as far as the User-Agent
    tells them."""
    t = translator(lang)
    browser = describe(user_agent[:MAX_USER_AGENT] if user_agent else None)
    name = browser.name or t["sessions.unknown_browser"]
    if browser.system is None:
        return name
    return t["sessions.browser_on_system"].format(browser=name, system=browser.system)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


async def listing(request: web.Request, identity: Identity) -> list[SessionEntry]:
    """The patron's live sessions: this browser first, then the most recently used."""
    services = request.app[SERVICES]
    lang = language(request)
    t = translator(lang)
    provider = request.app.get(PROVIDER)
    clients = provider.clients.table if provider is not None else None

    def library(client_id: str) -> str:
        # A library no longer configured is still named, by its client_id.
        client = clients.get(client_id) if clients is not None else None
        return client.name if client is not None else client_id

    live = await services.registry.live_sessions(identity.user_id, idle=services.lifetimes.idle)
    entries = [
        SessionEntry(
            handle=session.handle,
            browser=browser_text(session.user_agent, lang),
            started=when(session.created_at, lang),
            started_iso=_iso(session.created_at),
            last_active=(
                t["sessions.now"]
                if session.handle == identity.session
                else when(session.last_seen_at, lang)
            ),
            last_active_iso=_iso(session.last_seen_at),
            libraries=tuple(library(client_id) for client_id in session.clients),
            current=session.handle == identity.session,
        )
        for session in live
    ]
    return sorted(entries, key=lambda entry: not entry.current)


async def send_signin_notice(request: web.Request, account: Account) -> None:
    """Mail the patron that a browser new to their account just logged in (the caller has
    decided it is new, and that notices are on)."""
    services = request.app[SERVICES]
    if not account.email:
        return
    lang = language(request)
    await services.outbox.send(
        services.composer.compose(
            "new_signin",
            lang,
            account.email,
            username=account.username,
            browser=browser_text(request.headers.get("User-Agent"), lang),
            when=when(datetime.now(UTC), lang),
            link=services.public_url + urls.ACCOUNT,
        ),
        account_id=account.id,
    )
