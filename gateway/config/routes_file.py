"""Reading routes.yaml: a file's text turned into a `RouteTable`, or every reason why not.

Every mistake in the file is reported at once with its file, line and a reason that says how
to fix it, because an operator who fixes one error only to be shown the next one learns to
distrust the tool. The file is read as a YAML node tree (`yaml.compose`) rather than as plain
Python data so that each value keeps its line, and so that what PyYAML would quietly accept
(a key given twice, aliases, tags) can be refused.
"""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import os
import re
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gateway.config.routes import (
    DEFAULT_PORTS,
    DEFAULT_TIMEOUT,
    RESERVED_PREFIXES,
    Auth,
    Backend,
    Problem,
    Route,
    RoutesInvalid,
    RouteTable,
)
from gateway.proxy.paths import BadPath, normalise

MAX_TIMEOUT = 3600.0


def parse_routes(text: str, filename: str = "routes.yaml") -> RouteTable:
    """Build the route table from the text of a routes file; raises RoutesInvalid."""
    reader = _Reader(filename)
    routes = reader.read(text)
    if reader.problems:
        raise RoutesInvalid(reader.problems)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return RouteTable(tuple(routes), source=filename, digest=digest)


def load_routes(path: os.PathLike[str] | str) -> RouteTable:
    """Read and parse a routes file; an unreadable file is a RoutesInvalid like any other."""
    filename = os.fspath(path)
    try:
        with open(filename, "rb") as file:
            data = file.read()
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise RoutesInvalid([Problem(filename, 0, f"cannot read the file: {reason}")]) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        problem = Problem(filename, line, "the file is not valid UTF-8")
        raise RoutesInvalid([problem]) from None
    return parse_routes(text, filename)


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

_ROUTE_KEYS = ("name", "prefix", "backend", "auth", "public", "timeout", "max_body")
_REQUIRED_KEYS = ("name", "prefix", "backend", "auth")
_AUTH_VALUES = tuple(auth.value for auth in Auth)
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?")
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_SIZE = re.compile(r"([0-9]+) ?(KiB|MiB|GiB|KB|MB|GB)")
_UNITS = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "KB": 10**3, "MB": 10**6, "GB": 10**9}

_TAG = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _SEQ, _MAP, _MERGE = (
    _TAG + t for t in ("str", "int", "float", "seq", "map", "merge")
)
_ALIAS = "!gateway/alias"
_KINDS = {
    _STR: "a string",
    _INT: "a number",
    _FLOAT: "a number",
    _TAG + "bool": "true/false",
    _TAG + "null": "empty (null)",
    _SEQ: "a list",
    _MAP: "a mapping",
}

_T = TypeVar("_T")


class _Loader(yaml.SafeLoader):
    """Composes aliases as opaque placeholder nodes, so they are refused where they appear
    (with their own line) and a nest of aliases can never be expanded."""

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.get_event()  # type: ignore[no-untyped-call]  # untyped in the stubs
            return ScalarNode(_ALIAS, event.anchor, event.start_mark, event.end_mark)
        return super().compose_node(parent, index)


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _show(value: str) -> str:
    return value if len(value) <= 60 else value[:57] + "..."


def _kind(node: Node) -> str:
    if node.tag == _ALIAS:
        return f"an alias (*{node.value}); aliases are not supported, write the value out"
    if node.tag in _KINDS:
        return _KINDS[node.tag]
    return "a value tagged " + str(node.tag).replace(_TAG, "!!")


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


class _Reader:
    """Walks the node tree of one file, collecting every problem on the way."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.problems: list[Problem] = []
        self._names: dict[str, int] = {}
        self._prefixes: dict[str, tuple[str, int]] = {}

    def problem(self, where: Node | int, reason: str) -> None:
        line = where if isinstance(where, int) else _line(where)
        self.problems.append(Problem(self.filename, line, reason))

    def read(self, text: str) -> list[Route]:
        root = self._compose(text)
        if root is None:
            return []
        top = self._mapping(root, ("routes",), "the top level")
        if top is None:
            return []
        if "routes" not in top:
            self.problem(root, "missing 'routes' (a list of routes; 'routes: []' for none)")
            return []
        items = top["routes"][1]
        if not isinstance(items, SequenceNode) or items.tag != _SEQ:
            self.problem(items, f"'routes' must be a list of routes, not {_kind(items)}")
            return []
        routes = [self._route(item) for item in items.value]
        return [route for route in routes if route is not None]

    def _compose(self, text: str) -> Node | None:
        try:
            root = yaml.compose(text, Loader=_Loader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = int(mark.line) + 1 if mark is not None else 1
            what = ", ".join(part for part in (exc.context, exc.problem) if part)
            self.problem(line, f"not valid YAML: {what}")
            return None
        except yaml.reader.ReaderError as exc:
            line = text[: exc.position].count("\n") + 1
            self.problem(line, "not valid YAML: a control character is not allowed here")
            return None
        except RecursionError:
            self.problem(1, "not valid YAML: nested too deeply")
            return None
        if root is None:
            self.problem(1, "the file is empty; expected 'routes:' with a list of routes")
        return root

    def _mapping(
        self, node: Node, allowed: tuple[str, ...], what: str
    ) -> dict[str, tuple[Node, Node]] | None:
        if not isinstance(node, MappingNode) or node.tag != _MAP:
            self.problem(node, f"{what} must be a mapping, not {_kind(node)}")
            return None
        found: dict[str, tuple[Node, Node]] = {}
        for key, value in node.value:
            if key.tag == _MERGE:
                self.problem(key, "merge keys ('<<') are not supported; write the keys out")
                continue
            if not isinstance(key, ScalarNode) or key.tag != _STR:
                self.problem(key, f"a key must be a plain word, not {_kind(key)}")
                continue
            name = key.value
            if name in found:
                first = _line(found[name][0])
                self.problem(key, f"duplicate key '{_show(name)}' (first on line {first})")
                continue
            found[name] = (key, value)
            if name not in allowed:
                self.problem(key, _unknown_key(name, allowed))
        return found

    def _route(self, node: Node) -> Route | None:
        fields = self._mapping(node, _ROUTE_KEYS, "each route")
        if fields is None:
            return None
        before = len(self.problems)
        missing = [repr(key) for key in _REQUIRED_KEYS if key not in fields]
        if missing:
            self.problem(node, f"route is missing {', '.join(missing)}")

        def value(key: str, parse: Callable[[Node], _T | None]) -> _T | None:
            return parse(fields[key][1]) if key in fields else None

        name = value("name", self._name)
        prefix = value("prefix", lambda n: self._path(n, "prefix"))
        backend = value("backend", self._backend)
        auth = value("auth", self._auth)
        timeout = value("timeout", self._timeout)
        max_body = value("max_body", self._max_body)
        public = value("public", lambda n: self._public(n, prefix, auth)) or ()
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
            _line(node),
        )

    def _string(self, node: Node, what: str) -> str | None:
        if isinstance(node, ScalarNode) and node.tag == _STR:
            return str(node.value)
        self.problem(node, f"'{what}' must be a string, not {_kind(node)}")
        return None

    def _name(self, node: Node) -> str | None:
        name = self._string(node, "name")
        if name is not None and not _NAME.fullmatch(name):
            self.problem(
                node,
                f"route name '{_show(name)}' must be 1-63 lowercase letters, "
                "digits, '-' or '_', starting with a letter or digit",
            )
            return None
        return name

    def _path(self, node: Node, what: str) -> str | None:
        value = self._string(node, what)
        if value is None:
            return None
        reason = _path_problem(value)
        if reason is None:
            try:
                canonical = normalise(value)[0].rstrip("/") or "/"
            except BadPath as exc:
                reason = f"is refused: {exc}"
        if reason is not None:
            self.problem(node, f"{what} '{_show(value)}' {reason}")
            return None
        reserved = _reserved(canonical)
        if reserved is not None:
            self.problem(
                node,
                f"{what} '{_show(value)}' lies under {reserved}, which the "
                "gateway serves itself; choose another path",
            )
            return None
        return canonical

    def _backend(self, node: Node) -> Backend | None:
        url = self._string(node, "backend")
        if url is None:
            return None
        try:
            return parse_backend_url(url)
        except ValueError as exc:
            self.problem(node, f"backend '{_show(url)}' {exc}")
            return None

    def _auth(self, node: Node) -> Auth | None:
        if isinstance(node, ScalarNode) and node.tag == _STR:
            if node.value in _AUTH_VALUES:
                return Auth(node.value)
            given = f"'{_show(node.value)}'"
        else:
            given = _kind(node)
        self.problem(node, f"auth must be one of {', '.join(_AUTH_VALUES)}, not {given}")
        return None

    def _timeout(self, node: Node) -> float | None:
        if node.tag not in (_INT, _FLOAT):
            self.problem(node, f"timeout must be a number of seconds, not {_kind(node)}")
            return None
        # Only plain decimals: YAML 1.1 also reads 0x1e, 1:30 and .inf as numbers.
        timeout = float(node.value) if _NUMBER.fullmatch(node.value) else 0.0
        if not 0 < timeout <= MAX_TIMEOUT:
            self.problem(node, f"timeout must be more than 0 and at most {MAX_TIMEOUT:.0f} seconds")
            return None
        return timeout

    def _max_body(self, node: Node) -> int | None:
        size = None
        if node.tag == _INT and node.value.isdigit():
            size = int(node.value)
        elif node.tag == _STR and (found := _SIZE.fullmatch(node.value)):
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
        if not isinstance(node, SequenceNode) or node.tag != _SEQ:
            self.problem(node, f"'public' must be a list of paths, not {_kind(node)}")
            return None
        if node.value and auth is not None and auth is not Auth.REQUIRED:
            self.problem(
                node,
                "public sub-paths only make sense on auth: required "
                f"(this route is auth: {auth.value})",
            )
        paths: dict[str, int] = {}
        for item in node.value:
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
            paths.setdefault(path, _line(item))
        return tuple(paths)

    def _claim_name(self, name: str, node: Node) -> None:
        if name in self._names:
            self.problem(node, f"duplicate route name '{name}' (first on line {self._names[name]})")
        self._names.setdefault(name, _line(node))

    def _claim_prefix(self, prefix: str, name: str | None, node: Node) -> None:
        if prefix in self._prefixes:
            owner, line = self._prefixes[prefix]
            self.problem(
                node,
                f"duplicate prefix '{prefix}' (already used by route '{owner}' on line {line})",
            )
        self._prefixes.setdefault(prefix, (name or "?", _line(node)))


def _unknown_key(key: str, allowed: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"unknown key '{_show(key)}' ({hint}allowed: {', '.join(allowed)})"
