"""Whether a client may see the console at all: GATEWAY_STAFF_NETWORKS. Pure.

The address is the one the gateway already trusts (`auth.credentials.throttle.CLIENT_ADDRESS`:
the socket's peer, or the client a configured trusted proxy names), never a header a client
sends on its own. No networks configured: everyone may see the sign-in page.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def allowed(address: str | None, networks: Sequence[Network]) -> bool:
    if not networks:
        return True
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == network.version and ip in network for network in networks)
