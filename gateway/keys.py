"""Every typed key the gateway stores on its application and requests, in one place."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, NamedTuple

from aiohttp import web

if TYPE_CHECKING:
    import asyncpg

    from auth.gate import Authenticator
    from gateway.reload import RouteMap
    from gateway.settings import Settings
    from gateway.state import Lifecycle
    from gateway.upstream import Upstream


class Target(NamedTuple):
    """The normalised request target: what is matched and what the backend receives."""

    path: str
    query: str


SETTINGS = web.AppKey["Settings"]("settings")
ROUTES = web.AppKey["RouteMap"]("routes")
AUTHENTICATOR = web.AppKey["Authenticator"]("authenticator")
UPSTREAM = web.AppKey["Upstream"]("upstream")
POOL = web.AppKey["asyncpg.Pool"]("pool")
LIFECYCLE = web.AppKey["Lifecycle"]("lifecycle")
WEBSOCKETS = web.AppKey["weakref.WeakSet[web.WebSocketResponse]"]("websockets")

TARGET = web.RequestKey[Target]("target")
REQUEST_ID = web.RequestKey[str]("request_id")
FORWARDED_CHAIN = web.RequestKey[list[str]]("forwarded_chain")
CLIENT_ADDRESS = web.RequestKey[str]("client_address")
ROUTE = web.RequestKey[str]("route")
USER_ID = web.RequestKey[str]("user_id")
