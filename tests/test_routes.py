"""routes.yaml: what an operator gets back for each mistake, and which route a path reaches."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config.routes import RESERVED_PREFIXES, Auth, Backend, Route, RouteTable
from gateway.config.routes_file import RoutesInvalid, load_routes, parse_backend_url, parse_routes
from gateway.config.yamlfile import Problem, format_problems
from gateway.proxy.paths import normalise

CONTRACT_EXAMPLE = """\
routes:
  - name: catalogue            # unique; used in logs, metrics and as JWT audience
    prefix: /catalogue         # matched on whole path segments, longest prefix wins
    backend: http://127.0.0.1:8101
    auth: optional             # public | optional | required
  - name: reservations
    prefix: /reservations
    backend: http://127.0.0.1:8102
    auth: required
    public: [/reservations/opening-hours]   # sub-paths that need no login
  - name: digital
    prefix: /digital
    backend: http://127.0.0.1:8103
    auth: required
    timeout: 120               # seconds for the backend to start answering
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(RoutesInvalid) as refused:
        parse_routes(text)
    return str(refused.value).splitlines()


def one_route(**fields: str) -> str:
    """A routes file with one route: valid defaults, overridden by `fields` (YAML text)."""
    values = {"name": "catalogue", "prefix": "/catalogue", "backend": "http://127.0.0.1:8101"}
    values["auth"] = "public"
    values.update(fields)
    lines = [f"    {key}: {value}" for key, value in values.items()]
    lines[0] = "  - " + lines[0].lstrip()
    return "routes:\n" + "\n".join(lines) + "\n"


# --- a valid file -------------------------------------------------------------------------


def test_the_contract_example_reads_as_written() -> None:
    table = parse_routes(CONTRACT_EXAMPLE)
    catalogue, reservations, digital = table.routes
    assert catalogue == Route(
        name="catalogue",
        prefix="/catalogue",
        backend=Backend("http", "127.0.0.1", 8101, ""),
        auth=Auth.OPTIONAL,
        public=(),
        timeout=30.0,
        max_body=None,
        line=2,
    )
    assert (reservations.auth, reservations.public, reservations.line) == (
        Auth.REQUIRED,
        ("/reservations/opening-hours",),
        6,
    )
    assert (digital.timeout, digital.line) == (120.0, 11)
    assert table.source == "routes.yaml"
    assert table.digest == hashlib.sha256(CONTRACT_EXAMPLE.encode()).hexdigest()


def test_an_empty_route_list_is_allowed_and_matches_nothing() -> None:
    table = parse_routes("routes: []\n")
    assert table.routes == ()
    assert table.match("/") is None


def test_a_trailing_slash_on_prefix_and_public_paths_is_dropped() -> None:
    text = one_route(prefix="/reservations/", auth="required", public="[/reservations/hours/]")
    (route,) = parse_routes(text).routes
    assert (route.prefix, route.public) == ("/reservations", ("/reservations/hours",))


def test_a_non_ascii_prefix_matches_the_normalised_spelling() -> None:
    (route,) = parse_routes(one_route(prefix="/bibliothèque")).routes
    assert route.prefix == "/biblioth%C3%A8que"
    path, _ = normalise("/biblioth%c3%a8que/x")
    assert parse_routes(one_route(prefix="/bibliothèque")).match(path) == route


@pytest.mark.parametrize(
    ("size", "expected"),
    [("1024", 1024), ("10MiB", 10 * 2**20), ("1 GB", 10**9), ("512KiB", 512 * 1024)],
)
def test_max_body_takes_bytes_or_a_size_with_unit(size: str, expected: int) -> None:
    (route,) = parse_routes(one_route(max_body=size)).routes
    assert route.max_body == expected


def test_routes_are_immutable() -> None:
    (route,) = parse_routes(one_route()).routes
    with pytest.raises(dataclasses.FrozenInstanceError):
        route.auth = Auth.PUBLIC  # type: ignore[misc]


# --- backends -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "origin", "host_header", "base_path"),
    [
        ("http://127.0.0.1:8101", "http://127.0.0.1:8101", "127.0.0.1:8101", ""),
        ("http://catalogue.internal", "http://catalogue.internal:80", "catalogue.internal", ""),
        ("https://Cat.Internal:443/", "https://cat.internal:443", "cat.internal", ""),
        (
            "https://cat.internal:8443/api/v2/",
            "https://cat.internal:8443",
            "cat.internal:8443",
            "/api/v2",
        ),
        ("http://[::1]:8101/app", "http://[::1]:8101", "[::1]:8101", "/app"),
        ("HTTP://[::1]", "http://[::1]:80", "[::1]", ""),
    ],
)
def test_backend_urls_give_origin_host_header_and_base_path(
    url: str, origin: str, host_header: str, base_path: str
) -> None:
    backend = parse_backend_url(url)
    assert (backend.origin, backend.host_header, backend.base_path) == (
        origin,
        host_header,
        base_path,
    )


def test_the_upstream_path_is_the_base_path_plus_the_whole_request_path() -> None:
    (route,) = parse_routes(one_route(backend="http://127.0.0.1:8101/legacy")).routes
    assert route.upstream_path("/catalogue/item/1") == "/legacy/catalogue/item/1"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://127.0.0.1", "must start with http:// or https://"),
        ("127.0.0.1:8101", "must start with http:// or https://"),
        ("http:/127.0.0.1", "must start with http:// or https://"),
        ("http://", "has no host"),
        ("http://:8101", "has no host"),
        ("http://user:secret@127.0.0.1", "must not contain a user name or password"),
        ("http://127.0.0.1/?a=1", "must not have a query ('?')"),
        ("http://127.0.0.1/#top", "must not have a fragment ('#')"),
        ("http://127.0.0.1:http", "has a malformed port (a number from 1 to 65535)"),
        ("http://127.0.0.1:65536", "has a malformed port (a number from 1 to 65535)"),
        ("http://127.0.0.1:0", "has a malformed port (a number from 1 to 65535)"),
        ("http://127.0.0.1:", "has a malformed port (a number from 1 to 65535)"),
        ("http://[::1", "has a malformed host (an IPv6 address goes in [...])"),
        ("http://[nonsense]:80", "has a malformed host (an IPv6 address goes in [...])"),
        ("http://[v1.fe]:80", "has a malformed IPv6 address 'v1.fe'"),
        ("http://cata$logue", "has a malformed host name 'cata$logue'"),
        ("http://127.0.0.1 :8101", "must not contain whitespace or control characters"),
        ("http://127.0.0.1/a%2fb", "has a refused path: the path contains an encoded slash (%2F)"),
        ("http://127.0.0.1/a/../b", "has a refused path: the path contains a '.' or '..' segment"),
    ],
)
def test_bad_backend_urls_are_refused_with_the_reason(url: str, reason: str) -> None:
    assert problems_of(one_route(backend=f'"{url}"')) == [
        f"routes.yaml:4: backend '{url}' {reason}"
    ]


# --- what the operator is told ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ["routes.yaml:1: the file is empty; expected 'routes:' with a list of routes"]),
        ("- catalogue\n", ["routes.yaml:1: the top level must be a mapping, not a list"]),
        (
            "routes:\n  - name: a\n   prefix: /x\n",
            [
                "routes.yaml:3: not valid YAML: while parsing a block collection, "
                "expected <block end>, but found '<block mapping start>'"
            ],
        ),
        (
            "routes: []\n---\nroutes: []\n",
            [
                "routes.yaml:2: not valid YAML: expected a single document in the stream, "
                "but found another document"
            ],
        ),
        (
            "routes: [\x07]\n",
            ["routes.yaml:1: not valid YAML: a control character is not allowed here"],
        ),
        (
            "route: []\n",
            [
                "routes.yaml:1: unknown key 'route' (did you mean 'routes'? allowed: routes)",
                "routes.yaml:1: missing 'routes' (a list of routes; 'routes: []' for none)",
            ],
        ),
        ("routes:\n", ["routes.yaml:1: 'routes' must be a list of routes, not empty (null)"]),
        ("routes:\n  - catalogue\n", ["routes.yaml:2: each route must be a mapping, not a string"]),
        (
            "routes: []\nroutes: []\n",
            ["routes.yaml:2: duplicate key 'routes' (first on line 1)"],
        ),
    ],
)
def test_file_level_mistakes_are_reported_with_their_line(text: str, expected: list[str]) -> None:
    assert problems_of(text) == expected


def test_an_unknown_route_key_names_the_allowed_ones_and_the_likely_typo() -> None:
    text = one_route(auth="required", publik="[/catalogue/help]")
    assert problems_of(text) == [
        "routes.yaml:6: unknown key 'publik' (did you mean 'public'? allowed: "
        "name, prefix, backend, auth, public, timeout, max_body, require)"
    ]


def test_an_unknown_key_without_a_near_match_only_lists_the_allowed_ones() -> None:
    assert problems_of(one_route(colour="blue")) == [
        "routes.yaml:6: unknown key 'colour' (allowed: "
        "name, prefix, backend, auth, public, timeout, max_body, require)"
    ]


def test_a_key_given_twice_is_refused_instead_of_silently_keeping_the_last() -> None:
    text = one_route(auth="required") + "    auth: public\n"
    assert problems_of(text) == ["routes.yaml:6: duplicate key 'auth' (first on line 5)"]


def test_missing_required_keys_are_named_at_the_route() -> None:
    text = "routes:\n  - name: catalogue\n    timeout: 5\n"
    assert problems_of(text) == ["routes.yaml:2: route is missing 'prefix', 'backend', 'auth'"]


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("name", "[a, b]", "'name' must be a string, not a list"),
        ("name", "2024", "'name' must be a string, not a number"),
        (
            "name",
            "Catalogue",
            "route name 'Catalogue' must be 1-63 lowercase letters, digits, "
            "'-' or '_', starting with a letter or digit",
        ),
        (
            "name",
            "-x",
            "route name '-x' must be 1-63 lowercase letters, digits, "
            "'-' or '_', starting with a letter or digit",
        ),
        ("prefix", "{a: 1}", "'prefix' must be a string, not a mapping"),
        ("backend", "", "'backend' must be a string, not empty (null)"),
        ("auth", "maybe", "auth must be one of public, optional, required, not 'maybe'"),
        ("auth", "yes", "auth must be one of public, optional, required, not true/false"),
        ("timeout", '"120"', "timeout must be a number of seconds, not a string"),
        ("timeout", "[120]", "timeout must be a number of seconds, not a list"),
        ("timeout", "0", "timeout must be more than 0 and at most 3600 seconds"),
        ("timeout", "-5", "timeout must be more than 0 and at most 3600 seconds"),
        ("timeout", "3600.5", "timeout must be more than 0 and at most 3600 seconds"),
        ("timeout", ".inf", "timeout must be more than 0 and at most 3600 seconds"),
        ("timeout", "1:30", "timeout must be more than 0 and at most 3600 seconds"),
        (
            "max_body",
            "0",
            "max_body must be a number of bytes above 0 or a size like 10MiB "
            "(units: KiB, MiB, GiB, KB, MB, GB)",
        ),
        (
            "max_body",
            "10 mb",
            "max_body must be a number of bytes above 0 or a size like 10MiB "
            "(units: KiB, MiB, GiB, KB, MB, GB)",
        ),
        (
            "max_body",
            "!!str 1024",
            "max_body must be a number of bytes above 0 or a size like "
            "10MiB (units: KiB, MiB, GiB, KB, MB, GB)",
        ),
        (
            "backend",
            "!!python/object:os.system x",
            "'backend' must be a string, not a value tagged !!python/object:os.system",
        ),
        ("backend", "!local x", "'backend' must be a string, not a value tagged !local"),
    ],
)
def test_wrong_values_are_refused_with_the_reason(field: str, value: str, reason: str) -> None:
    line = {"name": 2, "prefix": 3, "backend": 4, "auth": 5}.get(field, 6)
    assert problems_of(one_route(**{field: value})) == [f"routes.yaml:{line}: {reason}"]


def test_aliases_and_merge_keys_are_refused_where_they_appear() -> None:
    text = """\
routes:
  - &base
    name: catalogue
    prefix: /catalogue
    backend: &url http://127.0.0.1:8101
    auth: public
  - <<: *base
    name: copy
  - name: digital
    prefix: /digital
    backend: *url
    auth: public
"""
    assert problems_of(text) == [
        "routes.yaml:7: merge keys ('<<') are not supported; write the keys out",
        "routes.yaml:7: route is missing 'prefix', 'backend', 'auth'",
        "routes.yaml:11: 'backend' must be a string, not an alias (*url); "
        "aliases are not supported, write the value out",
    ]


def test_an_alias_bomb_is_refused_without_being_expanded() -> None:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 12)]
    text = "\n".join(levels) + "\nroutes: *a11\n"
    problems = problems_of(text)
    assert problems[-1] == (
        "routes.yaml:13: 'routes' must be a list of routes, not an alias (*a11); "
        "aliases are not supported, write the value out"
    )


@pytest.mark.parametrize(
    ("prefix", "reason"),
    [
        ("catalogue", "must start with '/'"),
        ("/catalogue?x=1", "must not contain '?' or '#' (it is a path, without query or fragment)"),
        ("/catalogue#top", "must not contain '?' or '#' (it is a path, without query or fragment)"),
        (
            "/caf%C3%A9",
            "must not contain '%'; write characters as they are, the gateway encodes them",
        ),
        ("/cata logue", "must not contain whitespace or control characters"),
        ("/catalogue/../x", "must not contain '.' or '..' segments"),
        ("/catalogue/.", "must not contain '.' or '..' segments"),
        ("//catalogue", "must not contain '//'"),
        ("/catalogue;v=1", "must not contain a backslash or ';'"),
        ("/\uff0e\uff0e", "is refused: the path contains a '.' or '..' segment"),
    ],
)
def test_bad_prefixes_are_refused_with_the_reason(prefix: str, reason: str) -> None:
    assert problems_of(one_route(prefix=f'"{prefix}"')) == [
        f"routes.yaml:3: prefix '{prefix}' {reason}"
    ]


@pytest.mark.parametrize("prefix", [*RESERVED_PREFIXES, "/auth/login", "/metrics/x"])
def test_prefixes_the_gateway_serves_itself_are_refused(prefix: str) -> None:
    reserved = "/" + prefix.split("/")[1]
    assert problems_of(one_route(prefix=prefix)) == [
        f"routes.yaml:3: prefix '{prefix}' lies under {reserved}, which the gateway serves "
        "itself; choose another path"
    ]


def test_reserved_prefixes_cover_whole_segments_only() -> None:
    (route,) = parse_routes(one_route(prefix="/authors")).routes
    assert route.prefix == "/authors"


def test_duplicate_names_and_prefixes_point_at_the_first_one() -> None:
    text = (
        CONTRACT_EXAMPLE
        + """\
  - name: catalogue
    prefix: /digital/
    backend: http://127.0.0.1:8104
    auth: public
"""
    )
    assert problems_of(text) == [
        "routes.yaml:16: duplicate route name 'catalogue' (first on line 2)",
        "routes.yaml:17: duplicate prefix '/digital' (already used by route 'digital' on line 12)",
    ]


@pytest.mark.parametrize(
    ("public", "reason"),
    [
        (
            "[/reservationsx/a]",
            "public path '/reservationsx/a' must lie inside the route's "
            "prefix '/reservations' (for the whole prefix, use auth: public)",
        ),
        (
            "[/catalogue]",
            "public path '/catalogue' must lie inside the route's "
            "prefix '/reservations' (for the whole prefix, use auth: public)",
        ),
        (
            "[/reservations]",
            "public path '/reservations' must lie inside the route's "
            "prefix '/reservations' (for the whole prefix, use auth: public)",
        ),
        ("[reservations/a]", "public path 'reservations/a' must start with '/'"),
        (
            "[/reservations/%2e%2e]",
            "public path '/reservations/%2e%2e' must not contain '%'; "
            "write characters as they are, the gateway encodes them",
        ),
        (
            "[/reservations/a, /reservations/a/]",
            "public path '/reservations/a' is listed twice (first on line 6)",
        ),
        ("/reservations/a", "'public' must be a list of paths, not a string"),
    ],
)
def test_bad_public_paths_are_refused(public: str, reason: str) -> None:
    text = one_route(name="reservations", prefix="/reservations", auth="required", public=public)
    assert problems_of(text) == [f"routes.yaml:6: {reason}"]


@pytest.mark.parametrize("auth", ["optional", "public"])
def test_public_sub_paths_are_refused_unless_login_is_required(auth: str) -> None:
    text = one_route(auth=auth, public="[/catalogue/help]")
    assert problems_of(text) == [
        "routes.yaml:6: public sub-paths only make sense on auth: required "
        f"(this route is auth: {auth})"
    ]


def test_every_problem_in_the_file_is_reported_at_once() -> None:
    text = """\
routes:
  - name: Catalogue
    prefix: catalogue
    backend: ftp://x
    auth: maybe
    timeout: soon
  - name: ok
    prefix: /ok
    backend: http://127.0.0.1:1
    auth: public
  - name: ok
"""
    assert problems_of(text) == [
        "routes.yaml:2: route name 'Catalogue' must be 1-63 lowercase letters, digits, "
        "'-' or '_', starting with a letter or digit",
        "routes.yaml:3: prefix 'catalogue' must start with '/'",
        "routes.yaml:4: backend 'ftp://x' must start with http:// or https://",
        "routes.yaml:5: auth must be one of public, optional, required, not 'maybe'",
        "routes.yaml:6: timeout must be a number of seconds, not a string",
        "routes.yaml:11: route is missing 'prefix', 'backend', 'auth'",
        "routes.yaml:11: duplicate route name 'ok' (first on line 7)",
    ]


def test_problems_keep_their_parts_and_print_as_file_line_reason() -> None:
    with pytest.raises(RoutesInvalid) as refused:
        parse_routes("routes: 5\n", filename="conf/routes.yaml")
    assert refused.value.problems == (
        Problem("conf/routes.yaml", 1, "'routes' must be a list of routes, not a number"),
    )
    assert format_problems(refused.value.problems) == str(refused.value)
    assert (
        str(refused.value) == "conf/routes.yaml:1: 'routes' must be a list of routes, not a number"
    )


# --- loading from disk --------------------------------------------------------------------


def test_load_routes_names_the_file_and_fingerprints_its_contents(tmp_path: Path) -> None:
    file = tmp_path / "routes.yaml"
    file.write_text(CONTRACT_EXAMPLE, encoding="utf-8")
    first = load_routes(file)
    assert first.source == str(file)
    assert [r.name for r in first.routes] == ["catalogue", "reservations", "digital"]
    file.write_text(CONTRACT_EXAMPLE.replace("120", "60"), encoding="utf-8")
    assert load_routes(file).digest != first.digest
    file.write_text(CONTRACT_EXAMPLE.replace("120", "60"), encoding="utf-8")
    assert load_routes(str(file)).digest == load_routes(file).digest


def test_a_missing_file_is_a_problem_on_line_0(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(RoutesInvalid) as refused:
        load_routes(missing)
    assert str(refused.value) == f"{missing}:0: cannot read the file: No such file or directory"


def test_a_file_that_is_not_utf8_is_reported_at_the_line(tmp_path: Path) -> None:
    file = tmp_path / "routes.yaml"
    file.write_bytes(b"routes:\n  - name: caf\xe9\n")
    with pytest.raises(RoutesInvalid) as refused:
        load_routes(file)
    assert str(refused.value) == f"{file}:2: the file is not valid UTF-8"


def test_mistakes_in_a_loaded_file_carry_its_name(tmp_path: Path) -> None:
    file = tmp_path / "routes.yaml"
    file.write_text("routes:\n  - name: x\n", encoding="utf-8")
    with pytest.raises(RoutesInvalid) as refused:
        load_routes(file)
    assert str(refused.value) == f"{file}:2: route is missing 'prefix', 'backend', 'auth'"


# --- matching -----------------------------------------------------------------------------

MATCHING = """\
routes:
  - {name: catalogue, prefix: /catalogue, backend: "http://127.0.0.1:1", auth: optional}
  - {name: rare, prefix: /catalogue/rare, backend: "http://127.0.0.1:2", auth: required}
  - {name: reservations, prefix: /reservations, backend: "http://127.0.0.1:3", auth: required,
     public: [/reservations/opening-hours]}
  - {name: root, prefix: /, backend: "http://127.0.0.1:4", auth: public}
"""


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/catalogue", "catalogue"),
        ("/catalogue/", "catalogue"),
        ("/catalogue/search/advanced", "catalogue"),
        ("/catalogues", "root"),
        ("/catalogue/rare", "rare"),
        ("/catalogue/rare/", "rare"),
        ("/catalogue/rare/item/7", "rare"),
        ("/catalogue/rarely", "catalogue"),
        ("/Catalogue/rare", "root"),
        ("/", "root"),
        ("/anything/else", "root"),
        ("/catalogue;jsessionid=1/rare/item", "rare"),
        ("/catalogue/rare;v=2", "rare"),
        ("/reservations/opening-hours", "reservations"),
    ],
)
def test_the_longest_whole_segment_prefix_wins(path: str, name: str) -> None:
    route = parse_routes(MATCHING).match(path)
    assert route is not None and route.name == name


def test_without_a_catch_all_an_unknown_path_matches_nothing() -> None:
    table = parse_routes(CONTRACT_EXAMPLE)
    assert table.match("/") is None
    assert table.match("/catalogues") is None
    assert table.match("/digitalx/a") is None


def test_file_order_does_not_change_which_route_matches() -> None:
    routes = parse_routes(MATCHING).routes
    paths = ["/", "/x", "/catalogue", "/catalogue/rare/x", "/catalogue/x", "/reservations/a"]
    expected = [RouteTable(routes).match(p) for p in paths]
    for order in itertools.permutations(routes):
        assert [RouteTable(order).match(p) for p in paths] == expected


@pytest.mark.parametrize(
    ("path", "needs_login"),
    [
        ("/reservations", True),
        ("/reservations/mine", True),
        ("/reservations/opening-hours", False),
        ("/reservations/opening-hours/", False),
        ("/reservations/opening-hours/today", False),
        ("/reservations/opening-hours-staff", True),
        ("/reservations/opening-hours;x", True),
    ],
)
def test_public_sub_paths_are_whole_segments(path: str, needs_login: bool) -> None:
    route = parse_routes(MATCHING).match(path)
    assert route is not None and route.needs_login(path) is needs_login


@pytest.mark.parametrize(("path", "name"), [("/catalogue/x", "catalogue"), ("/x", "root")])
def test_only_auth_required_needs_a_login(path: str, name: str) -> None:
    route = parse_routes(MATCHING).match(path)
    assert route is not None and route.name == name and not route.needs_login(path)


_segments = st.sampled_from(["a", "b", "ab", "a;x", "b;"])


@settings(database=None, max_examples=300, deadline=None)
@given(
    st.sets(
        st.lists(st.sampled_from(["a", "b", "ab"]), max_size=3).map(lambda s: "/" + "/".join(s))
    ),
    st.lists(_segments, max_size=5),
    st.booleans(),
)
def test_match_agrees_with_a_scan_of_every_prefix(
    prefixes: set[str], segments: list[str], trailing_slash: bool
) -> None:
    backend = Backend("http", "127.0.0.1", 1)
    routes = [Route(f"r{i}", p, backend, Auth.PUBLIC) for i, p in enumerate(sorted(prefixes))]
    path = "/" + "/".join(segments) + ("/" if trailing_slash and segments else "")
    bare = [s.split(";")[0] for s in segments]

    def covers(prefix: str) -> bool:
        wanted = [s for s in prefix.split("/") if s]
        return bare[: len(wanted)] == wanted

    covering = [r for r in routes if covers(r.prefix)]
    longest = max(covering, key=lambda r: len(r.prefix), default=None)
    assert RouteTable(tuple(routes)).match(path) == longest
