"""Reading clients.yaml: the services that log patrons in through the gateway (OpenID Connect
clients), turned into a `ClientTable`, or every reason why not.

Like routes.yaml, every mistake is reported at once as `FILE:LINE: reason`
(`gateway.config.yamlfile` reads the YAML strictly); this module adds what a client must be.
Redirect URIs are kept exactly as written, because the provider compares them as exact
strings: no wildcards, no fragments, no user names, and https everywhere but on the patron's
own machine. A client's secret never appears in the file, only the name of the environment
variable that holds it, read when the file is loaded.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import os
import re
from collections.abc import Mapping
from typing import TypeVar

from yaml.nodes import Node, ScalarNode

from auth.memberships import InstitutionTable, single_institution
from auth.oidc.clients import (
    SCOPES,
    SIGNING_ALGORITHMS,
    SUBJECTS,
    Client,
    ClientSecret,
    ClientTable,
    Subject,
)
from auth.pages.theme import Theme, ThemeError
from gateway.config.requirements import read_requirement
from gateway.config.routes import Backend, RouteTable
from gateway.config.routes_file import parse_backend_url
from gateway.config.yamlfile import (
    BOOL,
    NULL,
    STR,
    FileInvalid,
    Reader,
    kind_of,
    line_of,
    parsed,
    read_text,
    show,
)

MIN_SECRET_LENGTH = 32


class ClientsInvalid(FileInvalid):
    """The clients file was refused; `problems` holds every reason found, not just the first."""


def parse_clients(
    text: str,
    filename: str = "clients.yaml",
    env: Mapping[str, str] = os.environ,
    routes: RouteTable | None = None,
    institutions: InstitutionTable | None = None,
) -> ClientTable:
    """Build the client table from the text of a clients file, taking secrets from `env`,
    refusing a client_id that is also a route's name in `routes` and checking `require:`
    rules against `institutions` (None: the one built in); raises ClientsInvalid."""
    reader = _ClientsReader(filename, env, routes, institutions or single_institution())
    clients = reader.read(text)
    if reader.problems:
        raise ClientsInvalid(sorted(reader.problems, key=lambda problem: problem.line))
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return ClientTable(tuple(clients), source=filename, digest=digest)


def load_clients(
    path: os.PathLike[str] | str,
    *,
    env: Mapping[str, str] = os.environ,
    routes: RouteTable | None = None,
    institutions: InstitutionTable | None = None,
) -> ClientTable:
    """Read and parse a clients file; an unreadable file is a ClientsInvalid like any other."""
    filename = os.fspath(path)
    return parse_clients(read_text(filename, ClientsInvalid), filename, env, routes, institutions)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv4Address):
        return address.is_loopback
    return address == ipaddress.IPv6Address("::1")


def _origin(uri: str) -> Backend:
    """The scheme, host and port of `uri`, checked by the same rules as a backend's (no user
    name, a well-formed host and port); ValueError says what is wrong."""
    scheme, _, rest = uri.partition("://")
    return parse_backend_url(f"{scheme}://{re.split(r'[/?]', rest, maxsplit=1)[0]}")


def uri_problem(uri: str, *, https: bool) -> str | None:
    """Why `uri` cannot be registered, None when it can. With `https`, plain http is allowed
    only on a loopback host (a desktop app's redirect, RFC 8252 7.3)."""
    if any(c.isspace() or not c.isprintable() for c in uri):
        return "must not contain whitespace or control characters"
    if "*" in uri:
        return "must not contain a wildcard ('*'): URIs match exactly, list each one"
    if "#" in uri:
        return "must not have a fragment ('#')"
    scheme, separator, _ = uri.partition("://")
    if not separator or scheme.lower() not in ("http", "https"):
        return "must be an absolute URL starting with " + ("https://" if https else "http(s)://")
    try:
        origin = _origin(uri)
    except ValueError as exc:
        return str(exc)
    if https and origin.scheme == "http" and not _is_loopback(origin.host):
        return "must start with https:// (http:// only for 127.0.0.1, [::1] or localhost)"
    return None


def read_uri(reader: Reader, node: Node, key: str, *, https: bool) -> str | None:
    """A URL-valued key (`uri_problem`'s rules), or None with the problem noted."""
    uri = reader.string(node, key)
    if uri is None:
        return None
    reason = uri_problem(uri, https=https)
    if reason is not None:
        reader.problem(node, f"{key} '{show(uri)}' {reason}")
        return None
    return uri


def read_theme(reader: Reader, node: Node) -> Theme | None:
    """A `theme:` mapping (a client's, an institution's) checked by the rules of the
    gateway's own theme settings; None, with the problems noted, when it is refused."""
    fields = reader.mapping(node, _THEME_KEYS, "theme")
    if fields is None:
        return None
    values: dict[str, str] = {}
    for key, (_, value_node) in fields.items():
        if key not in _THEME_KEYS:
            continue  # refused by mapping() already
        if value_node.tag == NULL and key.endswith("colour"):
            reader.problem(
                value_node,
                f"theme {key} is empty: YAML reads what follows '#' as a comment, so "
                'quote a colour: "#1f4e79"',
            )
            continue
        text = reader.string(value_node, f"theme {key}")
        if text is None:
            continue
        try:
            Theme(**{key: text})  # the gateway's own theme settings' rules
        except ThemeError as exc:
            reader.problem(value_node, str(exc))
            continue
        values[key] = text
    if len(values) < len(fields):
        return None
    return Theme(**values)


# --- walking the node tree ---------------------------------------------------------------

_CLIENT_KEYS = (
    "client_id",
    "name",
    "redirect_uris",
    "post_logout_redirect_uris",
    "secret_env",
    "backchannel_logout_uri",
    "first_party",
    "subject",
    "theme",
    "id_token_signed_response_alg",
    "scopes",
    "require",
)
_REQUIRED_KEYS = ("client_id", "name", "redirect_uris")
_THEME_KEYS = ("name", "colour", "text_colour", "logo_url")
_CLIENT_ID = re.compile(r"[A-Za-z0-9._~-]{1,64}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CONVENTIONAL_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")


def _shown_name(name: str) -> bool:
    """Whether a secret_env value may be quoted: a name as variables are spelled (capitals,
    digits, '_'), with a '_' or shorter than a secret may be. A pasted hex, base64 or
    base32 secret is none of these."""
    return bool(_CONVENTIONAL_NAME.fullmatch(name)) and (
        "_" in name or len(name) < MIN_SECRET_LENGTH
    )


_T = TypeVar("_T")


class _ClientsReader(Reader):
    """The rules of clients.yaml; remembers each client_id to refuse a second."""

    def __init__(
        self,
        filename: str,
        env: Mapping[str, str],
        routes: RouteTable | None,
        institutions: InstitutionTable,
    ) -> None:
        super().__init__(filename)
        self._env = env
        self._routes = routes
        self._institutions = institutions
        self._ids: dict[str, int] = {}

    def read(self, text: str) -> list[Client]:
        found = [self._client(item) for item in self.entries(text, "clients")]
        return [item for item in found if item is not None]

    def _client(self, node: Node) -> Client | None:
        fields = self.mapping(node, _CLIENT_KEYS, "each client")
        if fields is None:
            return None
        before = len(self.problems)
        self.require(node, fields, _REQUIRED_KEYS, "client")

        value = functools.partial(parsed, fields)

        client_id = value("client_id", self._client_id)
        name = value("name", self._name)
        redirect_uris = value("redirect_uris", lambda n: self._uris(n, "redirect_uris"))
        post_logout = value(
            "post_logout_redirect_uris", lambda n: self._uris(n, "post_logout_redirect_uris")
        )
        secret = value("secret_env", self._secret)
        backchannel = value("backchannel_logout_uri", self._backchannel)
        first_party = value("first_party", lambda n: self._flag(n, "first_party"))
        subject: Subject | None = value("subject", self._subject)
        theme = value("theme", self._theme)
        algorithm = value("id_token_signed_response_alg", self._algorithm)
        scopes = value("scopes", self._scopes)
        require = value("require", lambda n: read_requirement(self, n, self._institutions))
        if client_id is not None:
            self._claim_id(client_id, fields["client_id"][1])
        if subject == "pairwise" and redirect_uris:
            self._one_host(redirect_uris)
        if len(self.problems) > before or not (client_id and name and redirect_uris):
            return None
        return Client(
            client_id=client_id,
            name=name,
            redirect_uris=tuple(redirect_uris),
            post_logout_redirect_uris=tuple(post_logout or ()),
            secret=secret,
            backchannel_logout_uri=backchannel,
            first_party=True if first_party is None else first_party,
            subject="public" if subject is None else subject,
            theme=theme,
            id_token_signed_response_alg=algorithm or SIGNING_ALGORITHMS[0],
            scopes=scopes or SCOPES,
            line=line_of(node),
            require=require,
        )

    def _client_id(self, node: Node) -> str | None:
        client_id = self.string(node, "client_id")
        if client_id is not None and not _CLIENT_ID.fullmatch(client_id):
            self.problem(
                node,
                f"client_id '{show(client_id)}' must be 1-64 letters, digits, '.', '_', '~' or '-'",
            )
            return None
        return client_id

    def _name(self, node: Node) -> str | None:
        name = self.string(node, "name")
        if name is not None and (not name.strip() or not name.isprintable()):
            self.problem(
                node,
                "name must be printable text, not empty: the login page shows it to patrons",
            )
            return None
        return name

    def _uris(self, node: Node, what: str, *, https: bool = True) -> dict[str, Node] | None:
        """The URIs of a list, each with its node, in the file's order."""
        items = self.sequence(node, what, "URLs")
        if items is None:
            return None
        if not items and what == "redirect_uris":
            self.problem(node, "redirect_uris must list at least one URL")
            return None
        uris: dict[str, Node] = {}
        for item in items:
            if not (isinstance(item, ScalarNode) and item.tag == STR):
                self.problem(item, f"each of {what} must be a URL, not {kind_of(item)}")
                continue
            uri = str(item.value)
            reason = uri_problem(uri, https=https)
            if reason is not None:
                self.problem(item, f"{what} entry '{show(uri)}' {reason}")
            elif uri in uris:
                first = line_of(uris[uri])
                self.problem(item, f"{what} lists '{show(uri)}' twice (first on line {first})")
            else:
                uris[uri] = item
        return uris

    def _backchannel(self, node: Node) -> str | None:
        # The operator's own configuration: it may name any host, loopback and http included.
        return read_uri(self, node, "backchannel_logout_uri", https=False)

    def _secret(self, node: Node) -> ClientSecret | None:
        name = self.string(node, "secret_env")
        if name is None:
            return None
        # The value is quoted only when it reads as a variable's name: the mistake this
        # rule is for is the secret itself pasted here, and the problem is logged.
        if not _ENV_NAME.fullmatch(name):
            self.problem(
                node,
                "secret_env must be the name of an environment variable (letters, digits and "
                "'_'), never the secret itself (what is there is not shown, in case it is one)",
            )
            return None
        secret = self._env.get(name, "")
        if not secret:
            shown = name if _shown_name(name) else "it names (not shown: it may be the secret)"
            self.problem(
                node,
                f"secret_env: the environment variable {shown} is not set or is empty; set it "
                "to the client's secret, or remove secret_env for a public client",
            )
            return None
        if len(secret) < MIN_SECRET_LENGTH:
            self.problem(
                node,
                f"secret_env: the secret in {name} is too short to be a client secret (at least "
                f"{MIN_SECRET_LENGTH} characters; `openssl rand -hex 32` makes a good one)",
            )
            return None
        return ClientSecret(secret)

    def _flag(self, node: Node, what: str) -> bool | None:
        if node.tag == BOOL and node.value.lower() in ("true", "false"):
            return bool(node.value.lower() == "true")
        given = f"'{show(node.value)}'" if isinstance(node, ScalarNode) and node.value else None
        given = given or kind_of(node)
        self.problem(node, f"{what} must be true or false, not {given}")
        return None

    def _subject(self, node: Node) -> Subject | None:
        value = self._choice(node, "subject", SUBJECTS)
        # Narrowed for the type checker: _choice returned one of SUBJECTS.
        return "pairwise" if value == "pairwise" else "public" if value else None

    def _algorithm(self, node: Node) -> str | None:
        if node.tag == STR and node.value.lower() == "none":
            self.problem(
                node,
                "id_token_signed_response_alg 'none' is refused: ID tokens are always signed "
                f"(one of {', '.join(SIGNING_ALGORITHMS)})",
            )
            return None
        return self._choice(node, "id_token_signed_response_alg", SIGNING_ALGORITHMS)

    def _choice(self, node: Node, what: str, choices: tuple[str, ...]) -> str | None:
        if isinstance(node, ScalarNode) and node.tag == STR:
            if node.value in choices:
                return str(node.value)
            given = f"'{show(node.value)}'"
        else:
            given = kind_of(node)
        self.problem(node, f"{what} must be one of {', '.join(choices)}, not {given}")
        return None

    def _scopes(self, node: Node) -> tuple[str, ...] | None:
        items = self.sequence(node, "scopes", "scopes")
        if items is None:
            return None
        scopes: dict[str, int] = {}
        for item in items:
            scope = self._choice(item, "each scope", SCOPES)
            if scope is None:
                continue
            if scope in scopes:
                self.problem(item, f"scopes lists '{scope}' twice (first on line {scopes[scope]})")
            scopes.setdefault(scope, line_of(item))
        if "openid" not in scopes:
            self.problem(node, "scopes must include 'openid': without it there is no login")
            return None
        return tuple(scopes)

    def _theme(self, node: Node) -> Theme | None:
        return read_theme(self, node)

    def _claim_id(self, client_id: str, node: Node) -> None:
        if client_id in self._ids:
            self.problem(
                node, f"duplicate client_id '{client_id}' (first on line {self._ids[client_id]})"
            )
        self._ids.setdefault(client_id, line_of(node))
        if self._routes is None:
            return
        for route in self._routes.routes:
            if route.name == client_id:
                self.problem(
                    node,
                    f"client_id '{client_id}' is the name of the route on line {route.line} of "
                    f"{self._routes.source}; tokens name their audience by it, so a client "
                    "and a route must never share one: choose another client_id",
                )

    def _one_host(self, uris: dict[str, Node]) -> None:
        """A pairwise client's subjects are computed for one host: its redirect URIs must
        all be on it (OpenID Connect Core 8.1)."""
        sector = ""
        for uri, node in uris.items():
            host = _origin(uri).host
            if not sector:
                sector = host
            elif host != sector:
                self.problem(
                    node,
                    f"redirect_uris entry '{show(uri)}' is on host {host}, but a pairwise "
                    f"client's redirect URIs must all share one host (the first is on {sector})",
                )
