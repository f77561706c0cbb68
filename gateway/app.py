"""Assembling the gateway: `create_app` wires injected parts into one aiohttp application.

The application serves only the gateway's own pages: every request enters through
`gateway.server.front` (the one way in, installed by `gateway.server.runner.GatewayRunner`),
which hands proxied requests to the proxy itself. Order of things a page request meets
(outermost first): the `pages` middleware (errors, metrics), aiohttp-session's cookie
middleware, then the page. Every long-lived resource (database pool, LISTEN connection,
upstream client, route watcher) is opened and closed in a cleanup_ctx.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import asyncpg
from aiohttp import WSCloseCode, web
from aiohttp_session import session_middleware
from cryptography.fernet import MultiFernet

from auth import notify, urls
from auth.credentials.devices import DeviceCodec
from auth.credentials.mail_limits import MailLimits
from auth.credentials.passwords import PasswordHasher
from auth.credentials.throttle import Throttle
from auth.helpdesk.service import HELPDESK, Helpdesk
from auth.mail import CHANNEL as MAIL_CHANNEL
from auth.mail import Composer, Outbox, OutboxWorker, Transport, transport_for
from auth.memberships import single_institution
from auth.oidc import authorize as oidc_authorize
from auth.oidc import endsession as oidc_endsession
from auth.oidc import token as oidc_token
from auth.oidc.backchannel import BackchannelQueue, BackchannelTiming, BackchannelWorker
from auth.oidc.grants import Grants
from auth.oidc.logout import CHANNEL as BACKCHANNEL_CHANNEL
from auth.oidc.provider import PROVIDER, Provider
from auth.oidc.tokens import OidcSigner
from auth.pages import account, activation, linking, recovery, static_files
from auth.pages import login as auth_login
from auth.pages.theme import Theme
from auth.services import (
    INSTITUTIONS,
    SERVICES,
    TEMPLATES,
    AuthServices,
    FixedInstitutions,
    InstitutionSource,
    template_environment,
)
from auth.sessions.authenticator import Authenticator
from auth.sessions.cookies import SessionCookieStorage
from auth.sessions.lifetimes import Lifetimes
from auth.sessions.registry import CHANNEL as SESSIONS_CHANNEL
from auth.sessions.registry import SessionRegistry
from auth.signing import IdentitySigner, KeyStore
from auth.staff import console as staff_console
from auth.staff.services import STAFF_SERVICES, StaffServices
from auth.staff.sessions import Lifetimes as StaffLifetimes
from auth.store.accounts import Accounts
from auth.store.audit import AuditTrail
from auth.store.links import Links
from auth.store.memberships import Memberships
from auth.store.staff import StaffMembers
from auth.store.staff_sessions import StaffSessions
from gateway import appkeys, database, middleware
from gateway.config.reload import ClientMap, InstitutionMap, RouteMap, watcher
from gateway.config.settings import Settings
from gateway.ops import health, metrics
from gateway.ops.lifecycle import Lifecycle
from gateway.ops.tracing import Tracing
from gateway.proxy.handler import Proxy
from gateway.proxy.upstream import Upstream

KEYS_CHANNEL = "library_gateway_keys"


async def _drain(app: web.Application) -> None:
    """Runs once the listener is closed: report not-ready, and close WebSockets politely
    while in-flight HTTP requests get the grace period to finish."""
    app[appkeys.LIFECYCLE].draining = True
    live = app[appkeys.WEBSOCKETS]
    await asyncio.gather(
        *(
            ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")
            for ws in tuple(live)
        ),
        return_exceptions=True,
    )


async def _sample_gauges(
    pool: asyncpg.Pool, outbox: Outbox, logouts: BackchannelQueue, every: float = 5.0
) -> None:
    while True:
        size, idle = pool.get_size(), pool.get_idle_size()
        metrics.POOL_CONNECTIONS.labels("in_use").set(size - idle)
        metrics.POOL_CONNECTIONS.labels("idle").set(idle)
        with contextlib.suppress(Exception):
            metrics.OUTBOX_DEPTH.set(await outbox.pending())
        with contextlib.suppress(Exception):
            metrics.BACKCHANNEL_PENDING.set(await logouts.pending())
        await asyncio.sleep(every)


async def _housekeeping(
    purges: Sequence[Callable[[], Awaitable[object]]], every: float = 3600.0
) -> None:
    """Drop what is long past use (session records, failure counters, recovery mail counts,
    old mail, spent codes and expired token records, finished back-channel logouts), once an
    hour."""
    while True:
        try:
            for purge in purges:
                await purge()
        except Exception:
            logging.getLogger("gateway").exception("session housekeeping failed")
        await asyncio.sleep(every)


def _closing(tracing: Tracing) -> Callable[[web.Application], AsyncIterator[None]]:
    """The cleanup context that sends the last spans and stops tracing's thread."""

    async def ctx(_app: web.Application) -> AsyncIterator[None]:
        yield
        await tracing.close()

    return ctx


def create_app(
    settings: Settings,
    route_map: RouteMap,
    *,
    database_url: str,
    cookie_keys: MultiFernet,
    theme: Theme | None = None,
    hasher: PasswordHasher | None = None,
    mail_transport: Transport | None = None,
    client_map: ClientMap | None = None,
    backchannel_timing: BackchannelTiming | None = None,
    institution_map: InstitutionSource | None = None,
    session_ttl: float = 30.0,
    tracing: Tracing | None = None,
) -> web.Application:
    """The gateway's application. `backchannel_timing`: the back-channel logout worker's
    retry delays and timeout (tests make them short); its give-up time is always the
    setting's. `session_ttl`: seconds a session record read from the database is trusted
    without asking again (`SessionRegistry`; tests make it short). `tracing`: spans exported
    (`gateway.ops.tracing.from_environment`), sent off and stopped when the app is cleaned up;
    None, none are made."""
    storage = SessionCookieStorage(
        cookie_keys, secure=settings.https, cache_size=settings.session_cache_size
    )
    theme = theme or Theme(
        name=settings.theme_name,
        colour=settings.theme_colour,
        text_colour=settings.theme_text_colour,
        logo_url=settings.theme_logo_url,
    )
    app = web.Application(
        middlewares=[middleware.pages, session_middleware(storage)],
        client_max_size=64 * 1024,
        handler_args={
            "max_field_size": 8190,
            "max_line_size": 8190,
            "max_headers": 100,
            # aiohttp's keep-alive timer runs from the moment a connection opens or a
            # response ends until the next request's headers are complete, so it is also
            # the header-read timeout that stops slowloris clients.
            "keepalive_timeout": settings.idle_timeout,
        },
    )
    app[appkeys.SETTINGS] = settings
    app[appkeys.ROUTES] = route_map
    app[appkeys.CLIENTS] = client_map
    app[INSTITUTIONS] = institution_map or FixedInstitutions(
        single_institution(settings.theme_name or "De Bibliotheek")
    )
    app[appkeys.LIFECYCLE] = Lifecycle()
    app[appkeys.WEBSOCKETS] = weakref.WeakSet()
    app[appkeys.TRACING] = tracing
    app[TEMPLATES] = template_environment()
    lifetimes = Lifetimes(idle=settings.session_idle_timeout, absolute=settings.session_lifetime)
    staff_lifetimes = StaffLifetimes(
        idle=settings.staff_idle_timeout, absolute=settings.staff_session_lifetime
    )

    async def resources_ctx(app: web.Application) -> AsyncIterator[None]:
        # Requests wait for the database at most GATEWAY_DATABASE_TIMEOUT at each step; the
        # background workers (mail, back-channel logouts, housekeeping) have a small pool of
        # their own with longer deadlines. The migrations (their lock is the session's) and
        # LISTEN take direct connections: behind a transaction pooler, over
        # GATEWAY_DATABASE_LISTEN_URL, while the pools keep nothing prepared.
        direct_url = database.direct_url(settings, database_url)
        pooler = settings.database_pooler
        await database.migrate(direct_url)
        pool = await database.create_pool(
            database_url, deadline=settings.database_timeout, pooler=pooler
        )
        background_pool = await database.create_pool(
            database_url, min_size=0, max_size=3, pooler=pooler
        )
        key_store = KeyStore(pool, cookie_keys)
        await key_store.load()
        registry = SessionRegistry(
            pool,
            ttl=session_ttl,
            grace=settings.database_grace,
            max_entries=settings.session_cache_size,
        )
        authenticator = Authenticator(
            storage,
            registry,
            IdentitySigner(key_store, settings.public_url, max_entries=settings.session_cache_size),
            lifetimes,
        )
        own_hasher = hasher or PasswordHasher(
            max_workers=settings.argon2_workers,
            memory_cost=settings.argon2_memory_kib,
            time_cost=settings.argon2_time_cost,
        )
        app[appkeys.POOL] = pool
        upstream = Upstream()
        app[appkeys.PROXY] = Proxy(
            settings,
            route_map,
            authenticator,
            upstream,
            app[appkeys.WEBSOCKETS],
            institutions=app[INSTITUTIONS],
            templates=app[TEMPLATES],
            theme=theme,
        )
        services = AuthServices(
            accounts=Accounts(pool),
            hasher=own_hasher if tracing is None else tracing.hasher(own_hasher),
            registry=registry,
            authenticator=authenticator,
            keys=key_store,
            lifetimes=lifetimes,
            theme=theme,
            public_url=settings.public_url,
            links=Links(pool),
            outbox=Outbox(pool),
            composer=Composer(app[TEMPLATES], settings.theme_name or "De Bibliotheek"),
            pass_number_pattern=settings.pass_number_pattern,
            throttle=Throttle(pool),
            mail_limits=MailLimits(pool),
            devices=DeviceCodec(cookie_keys, secure=settings.https),
            reset_ttl=settings.reset_token_ttl,
            activation_ttl=settings.activation_token_ttl,
            personal_data_url=settings.personal_data_url,
            signin_notices=settings.signin_notices,
            audit=AuditTrail(pool),
        )
        app[SERVICES] = services
        app[HELPDESK] = Helpdesk(pool, services, clients=client_map)
        app[STAFF_SERVICES] = StaffServices.assemble(
            pool,
            cookie_keys=cookie_keys,
            hasher=services.hasher,
            throttle=services.throttle,
            audit=services.audit,
            composer=services.composer,
            public_url=settings.public_url,
            library_name=settings.theme_name or "De Bibliotheek",
            lifetimes=staff_lifetimes,
            link_ttl=settings.activation_token_ttl,
        )
        await Memberships(pool).settle_default(app[INSTITUTIONS].table.default.id)
        grants = Grants(pool)
        if client_map is not None:
            app[PROVIDER] = Provider(
                clients=client_map,
                signer=OidcSigner(key_store, settings.public_url),
                grants=grants,
                issuer=settings.public_url,
                pairwise_secret=await grants.pairwise_secret(),
                memberships=Memberships(pool),
            )
        worker = OutboxWorker(
            background_pool,
            mail_transport or transport_for(settings.smtp_url.reveal(), settings.data_dir),
            settings.sender,
        )
        app[appkeys.OUTBOX_WORKER] = worker

        def keys_changed(_payload: str) -> None:
            asyncio.get_running_loop().create_task(key_store.refresh())

        handlers = {
            SESSIONS_CHANNEL: registry.on_notification,
            KEYS_CHANNEL: keys_changed,
            MAIL_CHANNEL: worker.wake,
        }
        logouts = BackchannelQueue(background_pool)
        background = [
            asyncio.create_task(worker.run()),
            # The sessions' last activity, written in batches (and once more at shutdown).
            asyncio.create_task(registry.record_activity()),
            asyncio.create_task(
                _housekeeping(
                    (
                        SessionRegistry(background_pool).purge_expired,
                        Throttle(background_pool).purge,
                        Outbox(background_pool).purge,
                        MailLimits(background_pool).purge,
                        Grants(background_pool).purge,
                        logouts.purge,
                        functools.partial(
                            StaffSessions(background_pool).purge, staff_lifetimes.absolute
                        ),
                        StaffMembers(background_pool).purge_links,
                    )
                )
            ),
            asyncio.create_task(_sample_gauges(pool, services.outbox, logouts)),
        ]
        if client_map is not None:
            backchannel = BackchannelWorker(
                background_pool,
                client_map,
                app[PROVIDER].signer,
                timing=dataclasses.replace(
                    backchannel_timing or BackchannelTiming(),
                    give_up_after=settings.backchannel_give_up_after,
                ),
            )
            handlers[BACKCHANNEL_CHANNEL] = backchannel.wake
            background.append(asyncio.create_task(backchannel.run()))
        try:
            async with notify.listening(
                direct_url,
                handlers,
                registry.listening_up,
                on_lost=registry.listening_lost,
                proven_by=background_pool,
            ):
                app[appkeys.LIFECYCLE].database_ok = True
                yield
                # Forgot-password work queued by the last requests still gets done.
                await asyncio.gather(*services.background, return_exceptions=True)
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await upstream.close()
            if hasher is None:
                own_hasher.close()
            await pool.close()
            await background_pool.close()

    route_map.on_change.append(lambda _table: metrics.RELOADS.labels("ok").inc())
    route_map.on_failure.append(lambda _problems: metrics.RELOADS.labels("failed").inc())
    app.on_shutdown.append(_drain)
    if tracing is not None:
        # Before the resources, so closed after them: the spans of their last work go out too.
        app.cleanup_ctx.append(_closing(tracing))
    app.cleanup_ctx.append(resources_ctx)
    # institutions.yaml first: a SIGHUP reloads the files in this order, and the routes and
    # clients are checked against the institutions.
    watched_institutions = institution_map if isinstance(institution_map, InstitutionMap) else None
    app.cleanup_ctx.append(watcher(watched_institutions, route_map, client_map))
    app.cleanup_ctx.append(metrics.flushing)
    app.on_response_prepare.append(middleware.response_stamp(settings))

    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    for module in (auth_login, account, linking, recovery, activation):
        module.add_routes(app)
    static_files.add_routes(app)
    if settings.staff_console:  # the staff console: on by default, absent (404) when off
        app.add_subapp(urls.STAFF, staff_console.application(settings.staff_networks))
    if client_map is not None:  # federation: on with a clients file, absent (404) without
        oidc_authorize.add_routes(app)
        oidc_token.add_routes(app)
        oidc_endsession.add_routes(app)
    return app
