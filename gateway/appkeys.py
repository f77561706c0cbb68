"""Every typed key the gateway stores on its application, in one place.

`auth` keeps its own two (`auth.services.SERVICES`, `TEMPLATES`); the request's `Exchange`
lives with its class in `gateway.exchange`, and the client address the pages' throttle reads is
`auth.credentials.throttle.CLIENT_ADDRESS`.
"""

from __future__ import annotations

import weakref

import asyncpg
from aiohttp import web

from auth.mail import OutboxWorker
from gateway.config.reload import ClientMap, RouteMap
from gateway.config.settings import Settings
from gateway.ops.lifecycle import Lifecycle
from gateway.ops.tracing import Tracing
from gateway.proxy.handler import Proxy

SETTINGS = web.AppKey("settings", Settings)
ROUTES = web.AppKey("routes", RouteMap)
# None: no clients file, federation off (the OpenID Connect endpoints answer 404).
CLIENTS: web.AppKey[ClientMap | None] = web.AppKey("clients")
POOL = web.AppKey("pool", asyncpg.Pool)
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
OUTBOX_WORKER = web.AppKey("outbox_worker", OutboxWorker)
WEBSOCKETS = web.AppKey("websockets", weakref.WeakSet[web.WebSocketResponse])
PROXY = web.AppKey("proxy", Proxy)
# None: no OTLP endpoint set, no spans made (gateway.ops.tracing).
TRACING: web.AppKey[Tracing | None] = web.AppKey("tracing")
