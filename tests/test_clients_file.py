"""clients.yaml read strictly: the contract's example, every rule refused with its line and a
reason, every problem at once; and the client data it yields (`auth.oidc.clients`), whose
secret never shows itself and is compared in constant time. Plain asserts: nothing here does
I/O but reading a file."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from pathlib import Path

import pytest

from auth.oidc.clients import SCOPES, Client, ClientSecret, ClientTable
from auth.pages.theme import Theme
from gateway.config.clients_file import ClientsInvalid, load_clients, parse_clients
from gateway.config.routes_file import parse_routes
from tests.helpers import routes_for

SECRET = "0123456789abcdef" * 3
ENV = {"ONLINE_LIBRARY_SECRET": SECRET, "APP_SECRET": SECRET}

CONTRACT_EXAMPLE = """\
clients:
  - client_id: online-library            # unique
    name: De Online Bibliotheek           # shown on the login and consent pages
    redirect_uris: [https://online.example.nl/callback]          # exact match only
    post_logout_redirect_uris: [https://online.example.nl/]
    secret_env: ONLINE_LIBRARY_SECRET     # the secret's environment variable; absent: a public client
    backchannel_logout_uri: https://online.example.nl/logout/backchannel   # optional
    first_party: true                     # false: the patron is asked once to share their details
    subject: public                       # public (the account id) | pairwise (per client host)
    theme: {name: De Online Bibliotheek, colour: "#e4003b", text_colour: "#ffffff", logo_url: https://online.example.nl/logo.svg}
"""  # noqa: E501 (the contract's own lines)


def one_client(*extra: str, redirect: str = "https://app.example.org/callback") -> str:
    """A file with one client: client_id on line 2, name 3, redirect_uris 4, then `extra`
    from line 5 on."""
    lines = ["clients:", "  - client_id: app", "    name: App", f"    redirect_uris: [{redirect}]"]
    return "\n".join([*lines, *(f"    {line}" for line in extra)]) + "\n"


def parse(text: str, env: Mapping[str, str] = ENV, routes_text: str | None = None) -> ClientTable:
    routes = None if routes_text is None else parse_routes(routes_text, "routes.yaml")
    return parse_clients(text, "clients.yaml", env, routes)


def problems(text: str, env: Mapping[str, str] = ENV, routes_text: str | None = None) -> list[str]:
    with pytest.raises(ClientsInvalid) as refused:
        parse(text, env, routes_text)
    return [str(problem) for problem in refused.value.problems]


def refused_with(text: str, line: int, reason: str, env: Mapping[str, str] = ENV) -> None:
    found = problems(text, env)
    assert any(p.startswith(f"clients.yaml:{line}: {reason}") for p in found), found


# --- what a good file gives ----------------------------------------------------------------


def test_the_contracts_example_parses_into_its_client() -> None:
    table = parse(CONTRACT_EXAMPLE)

    assert table.source == "clients.yaml"
    assert table.digest == hashlib.sha256(CONTRACT_EXAMPLE.encode()).hexdigest()
    [client] = table.clients
    assert table.get("online-library") is client
    assert client == Client(
        client_id="online-library",
        name="De Online Bibliotheek",
        redirect_uris=("https://online.example.nl/callback",),
        post_logout_redirect_uris=("https://online.example.nl/",),
        secret=ClientSecret(SECRET),
        backchannel_logout_uri="https://online.example.nl/logout/backchannel",
        first_party=True,
        subject="public",
        theme=Theme(
            name="De Online Bibliotheek",
            colour="#e4003b",
            text_colour="#ffffff",
            logo_url="https://online.example.nl/logo.svg",
        ),
        id_token_signed_response_alg="RS256",
        scopes=SCOPES,
        line=2,
    )
    assert not client.public
    assert client.secret is not None and client.secret.matches(SECRET)
    assert client.sector() == "online.example.nl"


def test_a_client_without_secret_env_is_public_with_the_defaults() -> None:
    [client] = parse(one_client()).clients

    assert client.public and client.secret is None
    assert client.first_party is True
    assert client.subject == "public"
    assert client.id_token_signed_response_alg == "RS256"
    assert client.scopes == ("openid", "profile", "email", "library", "offline_access")
    assert client.post_logout_redirect_uris == ()
    assert client.backchannel_logout_uri is None
    assert client.theme is None


def test_the_extensions_are_read() -> None:
    [client] = parse(
        one_client(
            "id_token_signed_response_alg: EdDSA",
            "scopes: [openid, email]",
            "first_party: false",
            "subject: pairwise",
        )
    ).clients

    assert client.id_token_signed_response_alg == "EdDSA"
    assert client.scopes == ("openid", "email")
    assert client.first_party is False
    assert client.subject == "pairwise"


def test_lookups_are_by_exact_client_id_and_anything_else_is_no_client() -> None:
    table = parse(CONTRACT_EXAMPLE)

    assert table.get("Online-Library") is None
    assert table.get("") is None
    assert table.get(["online-library"]) is None  # type: ignore[arg-type]  # a repeated param


def test_an_empty_list_is_a_table_without_clients() -> None:
    assert parse("clients: []\n").clients == ()


@pytest.mark.parametrize(
    "uri",
    [
        "http://127.0.0.1:8400/callback",
        "http://127.8.9.10/cb",
        "http://localhost:3000/cb",
        '"http://[::1]:8080/cb"',
        '"https://App.Example.org/Call%20Back/?tenant=kb&x=1"',
    ],
)
def test_redirect_uris_are_kept_exactly_as_written(uri: str) -> None:
    [client] = parse(one_client(redirect=uri)).clients

    assert client.redirect_uris == (uri.strip('"'),)


def test_a_backchannel_logout_uri_may_point_anywhere_the_operator_says() -> None:
    for uri in ("http://10.0.0.5:8080/logout?from=gateway", "http://127.0.0.1:9000/bc"):
        [client] = parse(one_client(f"backchannel_logout_uri: {uri}")).clients
        assert client.backchannel_logout_uri == uri


# --- each rule, refused with its line and reason -------------------------------------------

REFUSALS = [
    pytest.param(
        one_client("secret_envv: APP_SECRET"),
        5,
        "unknown key 'secret_envv' (did you mean 'secret_env'?",
        id="unknown-key",
    ),
    pytest.param(
        "clients:\n  - client_id: app\n    name: App\n",
        2,
        "client is missing 'redirect_uris'",
        id="missing-key",
    ),
    pytest.param(
        one_client().replace("client_id: app", "client_id: my app"),
        2,
        "client_id 'my app' must be 1-64 letters, digits, '.', '_', '~' or '-'",
        id="client-id-characters",
    ),
    pytest.param(
        one_client().replace("client_id: app", "client_id: " + "a" * 65),
        2,
        "client_id 'aaaa",
        id="client-id-length",
    ),
    pytest.param(
        one_client().replace("name: App", 'name: "  "'),
        3,
        "name must be printable text, not empty",
        id="blank-name",
    ),
    pytest.param(
        one_client(redirect="https://*.example.org/callback"),
        4,
        "redirect_uris entry 'https://*.example.org/callback' must not contain a wildcard",
        id="wildcard",
    ),
    pytest.param(
        one_client(redirect="https://app.example.org/*"),
        4,
        "redirect_uris entry 'https://app.example.org/*' must not contain a wildcard",
        id="wildcard-path",
    ),
    pytest.param(
        one_client(redirect='"https://app.example.org/cb#done"'),
        4,
        "redirect_uris entry 'https://app.example.org/cb#done' must not have a fragment",
        id="fragment",
    ),
    pytest.param(
        one_client(redirect="http://app.example.org/callback"),
        4,
        "redirect_uris entry 'http://app.example.org/callback' must start with https:// "
        "(http:// only for 127.0.0.1, [::1] or localhost)",
        id="http-not-loopback",
    ),
    pytest.param(
        one_client(redirect="http://10.0.0.1/callback"),
        4,
        "redirect_uris entry 'http://10.0.0.1/callback' must start with https://",
        id="http-private-address",
    ),
    pytest.param(
        one_client(redirect="http://localhost.evil.example/callback"),
        4,
        "redirect_uris entry 'http://localhost.evil.example/callback' must start with https://",
        id="http-localhost-lookalike",
    ),
    pytest.param(
        one_client(redirect="https://app.example.org@evil.example/callback"),
        4,
        "redirect_uris entry 'https://app.example.org@evil.example/callback' must not "
        "contain a user name or password",
        id="userinfo",
    ),
    pytest.param(
        one_client(redirect="/callback"),
        4,
        "redirect_uris entry '/callback' must be an absolute URL starting with https://",
        id="relative",
    ),
    pytest.param(
        one_client(redirect="app.example:/callback"),
        4,
        "redirect_uris entry 'app.example:/callback' must be an absolute URL",
        id="custom-scheme",
    ),
    pytest.param(
        one_client(redirect="https://app.example.org:99999/cb"),
        4,
        "redirect_uris entry 'https://app.example.org:99999/cb' has a malformed port",
        id="port",
    ),
    pytest.param(
        one_client(redirect="https://app.example.org/cb, https://app.example.org/cb"),
        4,
        "redirect_uris lists 'https://app.example.org/cb' twice (first on line 4)",
        id="duplicate-uri",
    ),
    pytest.param(
        one_client(redirect=""),
        4,
        "redirect_uris must list at least one URL",
        id="no-redirect-uri",
    ),
    pytest.param(
        one_client("post_logout_redirect_uris: [http://app.example.org/]"),
        5,
        "post_logout_redirect_uris entry 'http://app.example.org/' must start with https://",
        id="post-logout-http",
    ),
    pytest.param(
        one_client('backchannel_logout_uri: "https://app.example.org/bc#x"'),
        5,
        "backchannel_logout_uri 'https://app.example.org/bc#x' must not have a fragment",
        id="backchannel-fragment",
    ),
    pytest.param(
        one_client("backchannel_logout_uri: ftp://app.example.org/bc"),
        5,
        "backchannel_logout_uri 'ftp://app.example.org/bc' must be an absolute URL "
        "starting with http(s)://",
        id="backchannel-scheme",
    ),
    pytest.param(
        one_client("secret_env: UNSET_CLIENT_SECRET"),
        5,
        "secret_env: the environment variable UNSET_CLIENT_SECRET is not set or is empty",
        id="secret-unset",
    ),
    pytest.param(
        one_client("secret_env: a-secret-pasted-here-by-mistake"),
        5,
        "secret_env must be the name of an environment variable",
        id="secret-in-the-file",
    ),
    pytest.param(
        one_client("subject: pairwise").replace(
            "[https://app.example.org/callback]",
            "[https://app.example.org/callback, https://other.example.org/callback]",
        ),
        4,
        "redirect_uris entry 'https://other.example.org/callback' is on host "
        "other.example.org, but a pairwise client's redirect URIs must all share one host "
        "(the first is on app.example.org)",
        id="pairwise-across-hosts",
    ),
    pytest.param(
        one_client("subject: anonymous"),
        5,
        "subject must be one of public, pairwise, not 'anonymous'",
        id="subject",
    ),
    pytest.param(
        one_client("first_party: yes"),
        5,
        "first_party must be true or false, not 'yes'",
        id="first-party-yes",
    ),
    pytest.param(
        one_client("id_token_signed_response_alg: none"),
        5,
        "id_token_signed_response_alg 'none' is refused: ID tokens are always signed "
        "(one of RS256, ES256, EdDSA)",
        id="alg-none",
    ),
    pytest.param(
        one_client("id_token_signed_response_alg: HS256"),
        5,
        "id_token_signed_response_alg must be one of RS256, ES256, EdDSA, not 'HS256'",
        id="alg-hs256",
    ),
    pytest.param(
        one_client("scopes: [openid, phone]"),
        5,
        "each scope must be one of openid, profile, email, library, offline_access, not 'phone'",
        id="scope-unknown",
    ),
    pytest.param(
        one_client("scopes: [profile, email]"),
        5,
        "scopes must include 'openid'",
        id="scope-without-openid",
    ),
    pytest.param(
        one_client("theme:", "  colour: red"),
        6,
        "theme colour must be a hex colour like #1f4e79, not 'red'",
        id="theme-colour",
    ),
    pytest.param(
        one_client("theme:", "  colour: #e4003b"),
        6,
        "theme colour is empty: YAML reads what follows '#' as a comment",
        id="theme-colour-unquoted",
    ),
    pytest.param(
        one_client("theme:", "  logo_url: http://app.example.org/logo.svg"),
        6,
        "theme logo must be an https:// URL or a path on this host",
        id="theme-logo",
    ),
    pytest.param(
        one_client("theme:", "  color: '#e4003b'"),
        6,
        "unknown key 'color' (did you mean 'colour'?",
        id="theme-unknown-key",
    ),
]


@pytest.mark.parametrize(("text", "line", "reason"), REFUSALS)
def test_each_rule_is_refused_with_its_line_and_reason(text: str, line: int, reason: str) -> None:
    refused_with(text, line, reason)


def test_a_secret_shorter_than_32_characters_is_refused_without_showing_it() -> None:
    short = "hunter2-but-longer"
    found = problems(one_client("secret_env: APP_SECRET"), {"APP_SECRET": short})

    assert found == [
        "clients.yaml:5: secret_env: the secret in APP_SECRET is too short to be a client "
        "secret (at least 32 characters; `openssl rand -hex 32` makes a good one)"
    ]
    assert short not in found[0]


@pytest.mark.parametrize(
    "pasted",
    [
        pytest.param("9f2c4be81d7a03e56c1f8b2a94d07e3c5a6b8d1e2f3a4b5c6d7e8f9a0b1c", id="hex"),
        pytest.param("d41d8cd98f00b204e9800998ecf8427ed41d8cd98f00b204e9800998ec", id="hex-a"),
        pytest.param("q8Zr0-KtX_3vWm9yLb2Nc7Hd5Fg1Jp4Sa6Ue8Io0Ry2T", id="token-urlsafe"),
        pytest.param("Qm9va3MgYXJlIGEgdW5pcXVlbHkgcG9ydGFibGUgbWFnaWM+/=", id="base64"),
        pytest.param("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", id="base32"),
    ],
)
def test_a_secret_pasted_into_secret_env_is_refused_without_showing_it(pasted: str) -> None:
    """The mistake the rule is there for: the secret itself where its variable's name goes.
    The problem is logged by a running gateway (a reload) and printed by `clients check`, so
    it points at the line and never quotes the value, not even cut short."""
    found = problems(one_client(f"secret_env: {pasted}"))

    assert len(found) == 1 and found[0].startswith("clients.yaml:5: secret_env"), found
    for piece in (pasted, pasted[:16], pasted[-16:]):
        assert piece not in found[0]


def test_a_secret_of_32_characters_is_enough() -> None:
    [client] = parse(one_client("secret_env: APP_SECRET"), {"APP_SECRET": "x" * 32}).clients
    assert client.secret is not None and client.secret.matches("x" * 32)


def test_an_empty_secret_variable_is_unset() -> None:
    refused_with(
        one_client("secret_env: APP_SECRET"),
        5,
        "secret_env: the environment variable APP_SECRET is not set or is empty",
        env={"APP_SECRET": ""},
    )


def test_a_client_id_given_twice_is_refused() -> None:
    text = one_client() + "  - client_id: app\n    name: Again\n    redirect_uris: [https://b/]\n"
    assert problems(text) == ["clients.yaml:5: duplicate client_id 'app' (first on line 2)"]


def test_a_client_id_that_is_a_route_name_is_refused() -> None:
    text = one_client().replace("client_id: app", "client_id: catalogue")

    found = problems(text, routes_text=routes_for(8101))

    assert found == [
        "clients.yaml:2: client_id 'catalogue' is the name of the route on line 2 of "
        "routes.yaml; tokens name their audience by it, so a client and a route must never "
        "share one: choose another client_id"
    ]
    # Without a route map there is nothing to collide with.
    assert parse(text).get("catalogue") is not None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "clients.yaml:1: the file is empty; expected 'clients:' with a list of clients"),
        ("routes: []\n", "clients.yaml:1: unknown key 'routes'"),
        ("clients: {app: 1}\n", "clients.yaml:1: 'clients' must be a list of clients, not"),
        ("clients: [\n", "clients.yaml:2: not valid YAML"),
    ],
)
def test_the_top_level_is_a_list_of_clients(text: str, reason: str) -> None:
    found = problems(text)
    assert found[0].startswith(reason), found


def test_every_problem_is_reported_at_once_in_file_order() -> None:
    text = """\
clients:
  - client_id: online-library
    name: De Online Bibliotheek
    redirect_uris:
      - https://online.example.nl/*
      - "https://online.example.nl/cb#x"
      - http://online.example.nl/cb
    secret_env: MISSING_SECRET
    subjekt: pairwise
    id_token_signed_response_alg: none
  - client_id: online-library
    name: Again
    redirect_uris: [https://again.example.nl/cb]
"""
    found = problems(text)

    expected = [
        (5, "redirect_uris entry 'https://online.example.nl/*' must not contain a wildcard"),
        (6, "redirect_uris entry 'https://online.example.nl/cb#x' must not have a fragment"),
        (7, "redirect_uris entry 'http://online.example.nl/cb' must start with https://"),
        (8, "secret_env: the environment variable MISSING_SECRET is not set"),
        (9, "unknown key 'subjekt' (did you mean 'subject'?"),
        (10, "id_token_signed_response_alg 'none' is refused"),
        (11, "duplicate client_id 'online-library' (first on line 2)"),
    ]
    assert len(found) == len(expected), found
    for got, (line, reason) in zip(found, expected, strict=True):
        assert got.startswith(f"clients.yaml:{line}: {reason}"), found


def test_an_unreadable_file_is_refused_with_line_0(tmp_path: Path) -> None:
    missing = tmp_path / "clients.yaml"
    with pytest.raises(ClientsInvalid) as refused:
        load_clients(missing)
    assert str(refused.value.problems[0]).startswith(f"{missing}:0: cannot read the file")


def test_load_reads_the_file_and_names_it(tmp_path: Path) -> None:
    path = tmp_path / "clients.yaml"
    path.write_text(CONTRACT_EXAMPLE, encoding="utf-8")

    table = load_clients(path, env=ENV)

    assert table.source == str(path)
    assert table.get("online-library") is not None


# --- the client data ------------------------------------------------------------------------


def test_a_client_secret_never_shows_itself() -> None:
    secret = ClientSecret(SECRET)
    table = parse(CONTRACT_EXAMPLE)

    for shown in (repr(secret), str(secret), repr(table), str(table.clients[0]), f"{secret}"):
        assert SECRET not in shown
    assert repr(secret) == "ClientSecret('**********')"


def test_a_client_secret_matches_only_itself() -> None:
    secret = ClientSecret(SECRET)

    assert secret.matches(SECRET)
    assert not secret.matches(SECRET[:-1])
    assert not secret.matches(SECRET + "0")
    assert not secret.matches(SECRET.upper())
    assert not secret.matches("")
    assert not secret.matches(None)  # type: ignore[arg-type]  # a form field that is absent
    assert not secret.matches(SECRET.encode())  # type: ignore[arg-type]
    assert ClientSecret("ö" * 32).matches("ö" * 32)  # compare_digest refuses non-ASCII str
    assert not ClientSecret("ö" * 32).matches("o" * 32)
    assert ClientSecret(SECRET) == secret and hash(ClientSecret(SECRET)) == hash(secret)
    assert ClientSecret(SECRET + "x") != secret


def test_a_client_secret_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    constant_time = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return constant_time(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)

    assert ClientSecret(SECRET).matches(SECRET)
    assert not ClientSecret(SECRET).matches("guess")
    assert compared == [(SECRET.encode(), SECRET.encode()), (b"guess", SECRET.encode())]


def test_a_pairwise_client_is_one_sector() -> None:
    client = Client("app", "App", ("https://App.example.org/a", "https://app.example.org:8443/b"))
    assert client.sector() == "app.example.org"

    with pytest.raises(ValueError, match="spans several hosts"):
        Client("app", "App", ("https://a.example/cb", "https://b.example/cb"), subject="pairwise")


def test_client_data_refuses_what_the_file_would_refuse() -> None:
    with pytest.raises(ValueError, match="no redirect URI"):
        Client("app", "App", ())
    with pytest.raises(ValueError, match="cannot be signed 'none'"):
        Client("app", "App", ("https://a/",), id_token_signed_response_alg="none")
    app = Client("app", "App", ("https://a/",))
    with pytest.raises(ValueError, match="share a client_id"):
        ClientTable((app, app))
