"""Liveness and readiness, for load balancers and Kubernetes probes."""

from __future__ import annotations

from aiohttp import web

from gateway import appkeys


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"}, headers={"Cache-Control": "no-store"})


async def readyz(request: web.Request) -> web.Response:
    lifecycle = request.app[appkeys.LIFECYCLE]
    checks = {
        "routes": bool(request.app[appkeys.ROUTES].table is not None),
        "database": False,
        "draining": lifecycle.draining,
    }
    pool = request.app.get(appkeys.POOL)
    if pool is not None and not lifecycle.draining:
        try:
            async with pool.acquire(timeout=2) as conn:
                checks["database"] = await conn.fetchval("SELECT true", timeout=2)
        except Exception:  # any failure to reach the database means "not ready"
            checks["database"] = False
    ready = checks["routes"] and checks["database"] and not lifecycle.draining
    return web.json_response(
        {"status": "ready" if ready else "not ready", **checks},
        status=200 if ready else 503,
        headers={"Cache-Control": "no-store"},
    )
