"""Every typed key the gateway stores on its application and requests, in one place."""

from __future__ import annotations

import weakref
from typing import NamedTuple

import asyncpg
from aiohttp import web

from auth import throttle
from auth.mail import OutboxWorker
from gateway.reload import RouteMap
from gateway.settings import Settings
from gateway.state import Lifecycle


class Target(NamedTuple):
    """The normalised request target: what is matched and what the backend receives."""

    path: str
    query: str


SETTINGS = web.AppKey("settings", Settings)
ROUTES = web.AppKey("routes", RouteMap)
POOL = web.AppKey("pool", asyncpg.Pool)
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
OUTBOX_WORKER = web.AppKey("outbox_worker", OutboxWorker)
WEBSOCKETS = web.AppKey("websockets", weakref.WeakSet[web.WebSocketResponse])



class Exchange:
    """What the gateway learns about one request on its way through, kept in one object
    (one request key instead of seven: the proxy path reads and writes these constantly)."""

    __slots__ = ("client_address", "forwarded_for", "request_id", "route", "started",
                 "target", "user_id")

    def __init__(self, started: float, request_id: str, client_address: str,
                 forwarded_for: str) -> None:
        self.started = started
        self.request_id = request_id
        self.client_address = client_address
        self.forwarded_for = forwarded_for
        self.target: Target | None = None
        self.route: str | None = None
        self.user_id: str | None = None


EXCHANGE = web.RequestKey("exchange", Exchange)
CLIENT_ADDRESS = throttle.CLIENT_ADDRESS  # auth reads it, so auth defines it
