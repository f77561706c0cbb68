"""The admin listener (loopback by default): metrics for Prometheus, and the health probes."""

from __future__ import annotations

from aiohttp import web

from gateway import appkeys
from gateway.ops import health
from gateway.ops.metrics import metrics


def create_admin_app(gateway: web.Application) -> web.Application:
    admin = web.Application()
    # The probes read the gateway app's state, so share it.
    admin[appkeys.LIFECYCLE] = gateway[appkeys.LIFECYCLE]
    admin[appkeys.ROUTES] = gateway[appkeys.ROUTES]
    admin[appkeys.SETTINGS] = gateway[appkeys.SETTINGS]
    if appkeys.POOL in gateway:
        admin[appkeys.POOL] = gateway[appkeys.POOL]
    admin.router.add_get("/metrics", metrics)
    admin.router.add_get("/healthz", health.healthz)
    admin.router.add_get("/readyz", health.readyz)
    return admin
