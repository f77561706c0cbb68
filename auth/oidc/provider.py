"""The OpenID Connect provider assembled: its clients, signer and tables, kept on the app.

Federation is on when the operator gave a clients file: `create_app` then stores a `Provider`
under `PROVIDER` and registers the endpoints (`auth.oidc.authorize`, `auth.oidc.token`);
without one, none of the endpoints exists and each answers 404.

The gateway's browser session is the provider's session: the authorization endpoint asks the
same `Authenticator` the proxy asks, so a patron logged in at a proxied service is logged in
at every client, and a login started from a client logs the patron in at the proxy too.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from aiohttp import web

from auth import urls
from auth.oidc.clients import Client, ClientSource
from auth.oidc.grants import Grants
from auth.oidc.requests import pairwise_subject
from auth.oidc.tokens import OidcSigner
from auth.store.memberships import Memberships

ACCESS_TOKEN_TTL = 300
ID_TOKEN_TTL = 300


@dataclass
class Provider:
    clients: ClientSource
    signer: OidcSigner
    grants: Grants
    issuer: str
    pairwise_secret: bytes = b""
    memberships: Memberships | None = None
    """Where UserInfo reads the patron's memberships (the `library` scope); None: none."""

    def subject(self, client: Client, account_id: str) -> str:
        """The `sub` this client sees for the account: the account id, or a pairwise value
        stable per client host (the same wherever the client sees it)."""
        if client.subject == "pairwise":
            return pairwise_subject(client.sector(), account_id, self.pairwise_secret)
        return account_id

    def client_of_login(self, next_path: str) -> tuple[Client, dict[str, str]] | None:
        """The registered client a login page was opened for (its `next` is this provider's
        authorization endpoint), with that request's parameters. A theme or a name can only
        come from clients.yaml this way, never from a parameter of the login page itself.
        A request giving a parameter twice names no client: the authorization endpoint
        refuses it, so no page may wear one of its clients' colours."""
        parts = urlsplit(next_path)
        if parts.path != urls.OIDC_AUTHORIZE:
            return None
        pairs = parse_qsl(parts.query)
        params = dict(pairs)
        if len(params) != len(pairs):
            return None
        client = self.clients.table.get(params.get("client_id", ""))
        return (client, params) if client is not None else None


PROVIDER = web.AppKey[Provider]("auth.oidc.provider")
