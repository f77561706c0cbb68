"""The admin listener (loopback by default): metrics for Prometheus, and the health probes."""

from __future__ import annotations

from aiohttp import web

from gateway import appkeys
from gateway.ops import health
from gateway.ops.metrics import metrics
from gateway.proxy.headers import stamp_response


async def _stamp(_request: web.Request, response: web.StreamResponse) -> None:
    # The public port's banner (no version) and nosniff. No HSTS: the listener is plain
    # HTTP inside the operator's network, scraped and probed, never a patron's browser's.
    stamp_response(response.headers, None, False)


def create_admin_app(gateway: web.Application) -> web.Application:
    admin = web.Application()
    # The probes read the gateway app's state, so share it.
    admin[appkeys.LIFECYCLE] = gateway[appkeys.LIFECYCLE]
    admin[appkeys.ROUTES] = gateway[appkeys.ROUTES]
    admin[appkeys.SETTINGS] = gateway[appkeys.SETTINGS]
    if appkeys.POOL in gateway:
        admin[appkeys.POOL] = gateway[appkeys.POOL]
    admin.on_response_prepare.append(_stamp)
    admin.router.add_get("/metrics", metrics)
    admin.router.add_get("/healthz", health.healthz)
    admin.router.add_get("/readyz", health.readyz)
    return admin
