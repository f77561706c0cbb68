"""Whether this process should get traffic: ready once routes and database are up, not ready
while draining for a shutdown, so a load balancer stops sending before requests are cut."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Lifecycle:
    draining: bool = False
    database_ok: bool = False
