"""The admin listener (loopback by default): metrics for Prometheus, and the health probes."""

from __future__ import annotations

from aiohttp import web

from gateway import health, keys
from gateway.metrics import metrics


def create_admin_app(gateway: web.Application) -> web.Application:
    admin = web.Application()
    # The probes read the gateway app's state, so share it.
    admin[keys.LIFECYCLE] = gateway[keys.LIFECYCLE]
    admin[keys.ROUTES] = gateway[keys.ROUTES]
    admin[keys.SETTINGS] = gateway[keys.SETTINGS]
    if keys.POOL in gateway:
        admin[keys.POOL] = gateway[keys.POOL]
    admin.router.add_get("/metrics", metrics)
    admin.router.add_get("/healthz", health.healthz)
    admin.router.add_get("/readyz", health.readyz)
    return admin
