"""The route map's data: routes, their backends, and the lookup that runs per request.

Everything here is immutable and free of I/O, so a `RouteTable` can be swapped whole while
requests hold on to the one they started with. Reading and validating routes.yaml lives in
`gateway.config.routes_file`, which builds these types.

Matching walks the path's ancestors from longest to shortest through a dict keyed by prefix,
so a lookup costs O(path depth) whatever the number of routes or their order in the file.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from auth import urls
from auth.memberships import Requirement

DEFAULT_TIMEOUT = 30.0
DEFAULT_PORTS = {"http": 80, "https": 443}
# Paths the gateway answers itself: `auth`'s pages and keys, the probes, the metrics.
RESERVED_PREFIXES: tuple[str, ...] = (
    *urls.RESERVED_PREFIXES,
    "/healthz",
    "/readyz",
    "/metrics",
    "/_gateway",
)
_RESERVED_SEGMENTS = frozenset(prefix.strip("/") for prefix in RESERVED_PREFIXES)


def is_reserved(path: str) -> bool:
    """Whether a normalised path is the gateway's own (its pages, health, keys), never a
    backend's."""
    return path.split("/", 2)[1] in _RESERVED_SEGMENTS


class Auth(enum.Enum):
    PUBLIC = "public"
    OPTIONAL = "optional"
    REQUIRED = "required"


@dataclass(frozen=True, slots=True)
class Backend:
    """Where a route's requests go; `base_path` is '' or '/x', never with a trailing slash.

    `origin` and `host_header` are worked out once here: the proxy reads them per request."""

    scheme: str
    host: str
    port: int
    base_path: str = ""
    origin: str = field(init=False, repr=False, compare=False)
    host_header: str = field(init=False, repr=False, compare=False)
    """The Host header a client would send: the port only when not the scheme's default."""

    def __post_init__(self) -> None:
        literal = f"[{self.host}]" if ":" in self.host else self.host
        object.__setattr__(self, "origin", f"{self.scheme}://{literal}:{self.port}")
        default_port = self.port == DEFAULT_PORTS[self.scheme]
        object.__setattr__(
            self, "host_header", literal if default_port else f"{literal}:{self.port}"
        )


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    prefix: str
    backend: Backend
    auth: Auth
    public: tuple[str, ...] = ()
    timeout: float = DEFAULT_TIMEOUT
    max_body: int | None = None
    line: int = 0
    require: Requirement | None = None
    """A valid membership a patron must hold beyond the login (only with auth: required;
    the public sub-paths need neither)."""

    def needs_login(self, path: str) -> bool:
        """True when `path` (normalised) may only be seen by a logged-in patron.

        A public sub-path covers itself and what lies below it on whole segments. The
        comparison is on the path exactly as forwarded: `/x/open;v=1` is not inside `/x/open`
        for a backend that keeps path parameters, so it stays behind the login.
        """
        if self.auth is not Auth.REQUIRED:
            return False
        return not any(path == p or path.startswith(p + "/") for p in self.public)

    def upstream_path(self, path: str) -> str:
        return self.backend.base_path + path


@dataclass(frozen=True, slots=True)
class RouteTable:
    """The routes of one file, immutable, with the per-request lookup.

    `source` names the file and `digest` is the SHA-256 of its text, so a reload can tell
    whether anything changed.
    """

    routes: tuple[Route, ...] = ()
    source: str = ""
    digest: str = ""
    _by_prefix: Mapping[str, Route] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "routes", tuple(self.routes))
        by_prefix = {route.prefix: route for route in self.routes}
        if len(by_prefix) != len(self.routes):
            raise ValueError("two routes share a prefix")
        object.__setattr__(self, "_by_prefix", by_prefix)

    def match(self, path: str) -> Route | None:
        """The route with the longest prefix that covers `path` on whole segments.

        `path` must come from `gateway.proxy.paths.normalise`. Path parameters (`;v=1`) are
        ignored for matching, the way servlet containers read them: `/catalogue;x/y` is
        served by whoever owns `/catalogue`, so it must get that route's access rules.
        """
        if ";" in path:
            path = "/".join(segment.split(";", 1)[0] for segment in path.split("/"))
        by_prefix = self._by_prefix
        candidate = path.rstrip("/")
        while candidate:
            route = by_prefix.get(candidate)
            if route is not None:
                return route
            candidate = candidate[: candidate.rfind("/")]
        return by_prefix.get("/")
