"""Reading routes.yaml: a file's text turned into a `RouteTable`, or every reason why not.

Every mistake in the file is reported at once with its file, line and a reason that says how
to fix it; `gateway.config.yamlfile` reads the YAML that strictly, this module adds what a
route must be: its keys, names, paths, backend URL, timeout and size.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import os
import re
from typing import TypeVar
from urllib.parse import urlsplit

from yaml.nodes import Node, ScalarNode

from auth.memberships import InstitutionTable, Requirement, single_institution
from gateway.config.requirements import read_requirement
from gateway.config.routes import (
    DEFAULT_PORTS,
    DEFAULT_TIMEOUT,
    RESERVED_PREFIXES,
    Auth,
    Backend,
    Route,
    RouteTable,
)
from gateway.config.yamlfile import (
    FLOAT,
    INT,
    STR,
    FileInvalid,
    Reader,
    kind_of,
    line_of,
    parsed,
    read_text,
    show,
)
from gateway.proxy.paths import BadPath, normalise

MAX_TIMEOUT = 3600.0


class RoutesInvalid(FileInvalid):
    """The routes file was refused; `problems` holds every reason found, not just the first."""


def parse_routes(
    text: str, filename: str = "routes.yaml", institutions: InstitutionTable | None = None
) -> RouteTable:
    """Build the route table from the text of a routes file, checking `require:` rules
    against `institutions` (None: the one built in); raises RoutesInvalid."""
    reader = _RoutesReader(filename, institutions or single_institution())
    routes = reader.read(text)
    if reader.problems:
        raise RoutesInvalid(reader.problems)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return RouteTable(tuple(routes), source=filename, digest=digest)


def load_routes(
    path: os.PathLike[str] | str, institutions: InstitutionTable | None = None
) -> RouteTable:
    """Read and parse a routes file; an unreadable file is a RoutesInvalid like any other."""
    filename = os.fspath(path)
    return parse_routes(read_text(filename, RoutesInvalid), filename, institutions)


_BAD_PORT = "has a malformed port (a number from 1 to 65535)"


def parse_backend_url(url: str) -> Backend:
    """The backend of `url`, or ValueError saying what is wrong with it."""
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ValueError("must not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ValueError("has a malformed host (an IPv6 address goes in [...])") from None
    try:
        port = parts.port
    except ValueError:
        raise ValueError(_BAD_PORT) from None
    if parts.scheme not in DEFAULT_PORTS or not url.lower().startswith(parts.scheme + "://"):
        raise ValueError("must start with http:// or https://")
    if "@" in parts.netloc:
        raise ValueError("must not contain a user name or password")
    if "?" in url:
        raise ValueError("must not have a query ('?')")
    if "#" in url:
        raise ValueError("must not have a fragment ('#')")
    host = parts.hostname or ""
    if not host:
        raise ValueError("has no host")
    if port == 0 or parts.netloc.endswith(":"):
        raise ValueError(_BAD_PORT)
    if parts.netloc.startswith("["):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"has a malformed IPv6 address '{host}'") from None
    elif not _HOSTNAME.fullmatch(host):
        raise ValueError(f"has a malformed host name '{host}'")
    base_path = ""
    if parts.path not in ("", "/"):
        try:
            base_path = normalise(parts.path)[0].rstrip("/")
        except BadPath as exc:
            raise ValueError(f"has a refused path: {exc}") from None
    return Backend(parts.scheme, host, port or DEFAULT_PORTS[parts.scheme], base_path)


# --- walking the node tree ---------------------------------------------------------------

_ROUTE_KEYS = ("name", "prefix", "backend", "auth", "public", "timeout", "max_body", "require")
_REQUIRED_KEYS = ("name", "prefix", "backend", "auth")
_AUTH_VALUES = tuple(auth.value for auth in Auth)
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?")
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_SIZE = re.compile(r"([0-9]+) ?(KiB|MiB|GiB|KB|MB|GB)")
_UNITS = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "KB": 10**3, "MB": 10**6, "GB": 10**9}

_T = TypeVar("_T")


def _path_problem(value: str) -> str | None:
    """Why `value` cannot be a prefix or public path, None when it can."""
    if not value.startswith("/"):
        return "must start with '/'"
    if "?" in value or "#" in value:
        return "must not contain '?' or '#' (it is a path, without query or fragment)"
    if "%" in value:
        return "must not contain '%'; write characters as they are, the gateway encodes them"
    if any(c.isspace() or not c.isprintable() for c in value):
        return "must not contain whitespace or control characters"
    if "\\" in value or ";" in value:
        return "must not contain a backslash or ';'"
    if "//" in value:
        return "must not contain '//'"
    if any(segment in (".", "..") for segment in value.split("/")):
        return "must not contain '.' or '..' segments"
    return None


def _reserved(path: str) -> str | None:
    for reserved in RESERVED_PREFIXES:
        if path == reserved or path.startswith(reserved + "/"):
            return reserved
    return None


def _inside(path: str, prefix: str) -> bool:
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")


class _RoutesReader(Reader):
    """The rules of routes.yaml; remembers each route's name and prefix to refuse a second."""

    def __init__(self, filename: str, institutions: InstitutionTable) -> None:
        super().__init__(filename)
        self._institutions = institutions
        self._names: dict[str, int] = {}
        self._prefixes: dict[str, tuple[str, int]] = {}

    def read(self, text: str) -> list[Route]:
        found = [self._route(item) for item in self.entries(text, "routes")]
        return [item for item in found if item is not None]

    def _route(self, node: Node) -> Route | None:
        fields = self.mapping(node, _ROUTE_KEYS, "each route")
        if fields is None:
            return None
        before = len(self.problems)
        self.require(node, fields, _REQUIRED_KEYS, "route")

        value = functools.partial(parsed, fields)

        name = value("name", self._name)
        prefix = value("prefix", lambda n: self._path(n, "prefix"))
        backend = value("backend", self._backend)
        auth = value("auth", self._auth)
        timeout = value("timeout", self._timeout)
        max_body = value("max_body", self._max_body)
        public = value("public", lambda n: self._public(n, prefix, auth)) or ()
        require = value("require", lambda n: self._require(n, auth))
        if name is not None:
            self._claim_name(name, fields["name"][1])
        if prefix is not None:
            self._claim_prefix(prefix, name, fields["prefix"][1])
        if len(self.problems) > before or not (name and prefix and backend and auth):
            return None
        return Route(
            name,
            prefix,
            backend,
            auth,
            public,
            DEFAULT_TIMEOUT if timeout is None else timeout,
            max_body,
            line_of(node),
            require,
        )

    def _name(self, node: Node) -> str | None:
        name = self.string(node, "name")
        if name is not None and not _NAME.fullmatch(name):
            self.problem(
                node,
                f"route name '{show(name)}' must be 1-63 lowercase letters, "
                "digits, '-' or '_', starting with a letter or digit",
            )
            return None
        return name

    def _path(self, node: Node, what: str) -> str | None:
        value = self.string(node, what)
        if value is None:
            return None
        reason = _path_problem(value)
        if reason is None:
            try:
                canonical = normalise(value)[0].rstrip("/") or "/"
            except BadPath as exc:
                reason = f"is refused: {exc}"
        if reason is not None:
            self.problem(node, f"{what} '{show(value)}' {reason}")
            return None
        reserved = _reserved(canonical)
        if reserved is not None:
            self.problem(
                node,
                f"{what} '{show(value)}' lies under {reserved}, which the "
                "gateway serves itself; choose another path",
            )
            return None
        return canonical

    def _backend(self, node: Node) -> Backend | None:
        url = self.string(node, "backend")
        if url is None:
            return None
        try:
            return parse_backend_url(url)
        except ValueError as exc:
            self.problem(node, f"backend '{show(url)}' {exc}")
            return None

    def _auth(self, node: Node) -> Auth | None:
        if isinstance(node, ScalarNode) and node.tag == STR:
            if node.value in _AUTH_VALUES:
                return Auth(node.value)
            given = f"'{show(node.value)}'"
        else:
            given = kind_of(node)
        self.problem(node, f"auth must be one of {', '.join(_AUTH_VALUES)}, not {given}")
        return None

    def _timeout(self, node: Node) -> float | None:
        if node.tag not in (INT, FLOAT):
            self.problem(node, f"timeout must be a number of seconds, not {kind_of(node)}")
            return None
        # Only plain decimals: YAML 1.1 also reads 0x1e, 1:30 and .inf as numbers.
        timeout = float(node.value) if _NUMBER.fullmatch(node.value) else 0.0
        if not 0 < timeout <= MAX_TIMEOUT:
            self.problem(node, f"timeout must be more than 0 and at most {MAX_TIMEOUT:.0f} seconds")
            return None
        return timeout

    def _max_body(self, node: Node) -> int | None:
        size = None
        if node.tag == INT and node.value.isdigit():
            size = int(node.value)
        elif node.tag == STR and (found := _SIZE.fullmatch(node.value)):
            size = int(found[1]) * _UNITS[found[2]]
        if not size:
            self.problem(
                node,
                "max_body must be a number of bytes above 0 or a size like "
                f"10MiB (units: {', '.join(_UNITS)})",
            )
            return None
        return size

    def _public(self, node: Node, prefix: str | None, auth: Auth | None) -> tuple[str, ...] | None:
        items = self.sequence(node, "public", "paths")
        if items is None:
            return None
        if items and auth is not None and auth is not Auth.REQUIRED:
            self.problem(
                node,
                "public sub-paths only make sense on auth: required "
                f"(this route is auth: {auth.value})",
            )
        paths: dict[str, int] = {}
        for item in items:
            path = self._path(item, "public path")
            if path is None:
                continue
            if path in paths:
                self.problem(
                    item, f"public path '{path}' is listed twice (first on line {paths[path]})"
                )
            elif path == prefix or (prefix is not None and not _inside(path, prefix)):
                self.problem(
                    item,
                    f"public path '{path}' must lie inside the route's prefix "
                    f"'{prefix}' (for the whole prefix, use auth: public)",
                )
            paths.setdefault(path, line_of(item))
        return tuple(paths)

    def _require(self, node: Node, auth: Auth | None) -> Requirement | None:
        requirement = read_requirement(self, node, self._institutions)
        if auth is not None and auth is not Auth.REQUIRED:
            self.problem(
                node,
                "require only makes sense on auth: required: a membership is checked once "
                f"the patron has logged in (this route is auth: {auth.value})",
            )
            return None
        return requirement

    def _claim_name(self, name: str, node: Node) -> None:
        if name in self._names:
            self.problem(node, f"duplicate route name '{name}' (first on line {self._names[name]})")
        self._names.setdefault(name, line_of(node))

    def _claim_prefix(self, prefix: str, name: str | None, node: Node) -> None:
        if prefix in self._prefixes:
            owner, first = self._prefixes[prefix]
            self.problem(
                node,
                f"duplicate prefix '{prefix}' (already used by route '{owner}' on line {first})",
            )
        self._prefixes.setdefault(prefix, (name or "?", line_of(node)))
