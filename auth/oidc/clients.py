"""The services that log patrons in through the gateway (OpenID Connect clients), as data.

clients.yaml is read and checked by `gateway.config.clients_file` and watched like routes.yaml;
what it yields is a `ClientTable`, immutable and swapped whole on a reload, so a request reads
the table once and keeps it. The endpoints take a `ClientSource` (anything with a `table`),
because `auth` never imports the gateway that owns the file. Nothing here does I/O.

A client's secret is a `ClientSecret`: it never shows itself in `repr()`, logs or tracebacks,
and is compared in constant time.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol
from urllib.parse import urlsplit

from auth.memberships import Requirement
from auth.pages.theme import Theme

Subject = Literal["public", "pairwise"]
SUBJECTS: tuple[Subject, ...] = ("public", "pairwise")
# RS256 first: the default, because every client library can check it.
SIGNING_ALGORITHMS = ("RS256", "ES256", "EdDSA")
SCOPES = ("openid", "profile", "email", "library", "offline_access")


class ClientSecret:
    """A confidential client's secret: hidden from `repr()`, compared in constant time."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def __repr__(self) -> str:
        return "ClientSecret('**********')"

    __str__ = __repr__

    def matches(self, presented: str) -> bool:
        """Whether `presented` is this secret; an empty or non-string one never is."""
        if not isinstance(presented, str) or not presented:
            return False
        # Bytes, because compare_digest refuses strings with non-ASCII characters.
        return hmac.compare_digest(presented.encode("utf-8"), self._value.encode("utf-8"))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ClientSecret) and other.matches(self._value)

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class Client:
    """One service allowed to log patrons in; `line` is where clients.yaml declares it."""

    client_id: str
    name: str
    redirect_uris: tuple[str, ...]
    post_logout_redirect_uris: tuple[str, ...] = ()
    secret: ClientSecret | None = None
    """None: a public client (an app or a page's script), which must use PKCE."""
    backchannel_logout_uri: str | None = None
    first_party: bool = True
    """False: the patron is asked once to share their details with it."""
    subject: Subject = "public"
    theme: Theme | None = None
    id_token_signed_response_alg: str = "RS256"  # noqa: S105 (an algorithm, not a password)
    scopes: tuple[str, ...] = SCOPES
    """The scopes it may ask for; what it gets is what it asks within these."""
    line: int = 0
    require: Requirement | None = None
    """A valid membership a patron must hold to be logged in to it (else access_denied)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "redirect_uris", tuple(self.redirect_uris))
        object.__setattr__(self, "post_logout_redirect_uris", tuple(self.post_logout_redirect_uris))
        object.__setattr__(self, "scopes", tuple(self.scopes))
        if not self.redirect_uris:
            raise ValueError(f"client {self.client_id!r} has no redirect URI")
        if self.subject not in SUBJECTS:
            raise ValueError(f"client {self.client_id!r}: unknown subject {self.subject!r}")
        if self.id_token_signed_response_alg not in SIGNING_ALGORITHMS:
            raise ValueError(
                f"client {self.client_id!r}: ID tokens cannot be signed "
                f"{self.id_token_signed_response_alg!r}"
            )
        if self.subject == "pairwise" and len(_hosts(self.redirect_uris)) > 1:
            raise ValueError(f"pairwise client {self.client_id!r} spans several hosts")

    @property
    def public(self) -> bool:
        """True for a client without a secret."""
        return self.secret is None

    def sector(self) -> str:
        """The host of its redirect URIs: what a pairwise subject is computed for (OpenID
        Connect Core 8.1). A pairwise client's redirect URIs all share it."""
        return _hosts(self.redirect_uris[:1])[0]


def _hosts(uris: tuple[str, ...]) -> list[str]:
    """The distinct hosts of `uris`, lower-case, in order."""
    return list(dict.fromkeys(urlsplit(uri).hostname or "" for uri in uris))


@dataclass(frozen=True, slots=True)
class ClientTable:
    """The clients of one file, immutable, looked up by `client_id`.

    `source` names the file and `digest` is the SHA-256 of its text, so a reload can tell
    whether anything changed.
    """

    clients: tuple[Client, ...] = ()
    source: str = ""
    digest: str = ""
    _by_id: Mapping[str, Client] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "clients", tuple(self.clients))
        by_id = {client.client_id: client for client in self.clients}
        if len(by_id) != len(self.clients):
            raise ValueError("two clients share a client_id")
        object.__setattr__(self, "_by_id", by_id)

    def get(self, client_id: str) -> Client | None:
        """The client registered as `client_id`; None for any other value, whatever its type."""
        if not isinstance(client_id, str):
            return None
        return self._by_id.get(client_id)


class ClientSource(Protocol):
    """Where the endpoints find the clients in force: the gateway's `ClientMap`, reloaded
    with the file, or anything else holding a table. Read `table` once per request."""

    @property
    def table(self) -> ClientTable: ...
