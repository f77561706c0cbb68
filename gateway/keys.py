"""Every typed key the gateway stores on its application and requests, in one place."""

from __future__ import annotations

import weakref
from typing import NamedTuple

import asyncpg
from aiohttp import web

from auth import throttle
from auth.gate import Authenticator
from auth.mail import OutboxWorker
from gateway.reload import RouteMap
from gateway.settings import Settings
from gateway.state import Lifecycle
from gateway.upstream import Upstream


class Target(NamedTuple):
    """The normalised request target: what is matched and what the backend receives."""

    path: str
    query: str


SETTINGS = web.AppKey("settings", Settings)
ROUTES = web.AppKey("routes", RouteMap)
AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
UPSTREAM = web.AppKey("upstream", Upstream)
POOL = web.AppKey("pool", asyncpg.Pool)
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
OUTBOX_WORKER = web.AppKey("outbox_worker", OutboxWorker)
WEBSOCKETS = web.AppKey("websockets", weakref.WeakSet[web.WebSocketResponse])

TARGET = web.RequestKey("target", Target)
REQUEST_ID = web.RequestKey("request_id", str)
FORWARDED_FOR = web.RequestKey("forwarded_for", str)
CLIENT_ADDRESS = throttle.CLIENT_ADDRESS  # auth reads it, so auth defines it
ROUTE = web.RequestKey("route", str)
USER_ID = web.RequestKey("user_id", str)
STARTED = web.RequestKey("started", float)
