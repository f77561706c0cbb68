"""institutions.yaml read strictly (every problem with its line), its reload keeping the last
good list, and `require:` rules of routes and clients checked against it, in the library and
on the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from auth.memberships import DEFAULT_ID, Requirement
from gateway.config.clients_file import ClientsInvalid, parse_clients
from gateway.config.institutions_file import InstitutionsInvalid, parse_institutions
from gateway.config.reload import InstitutionMap, RouteMap
from gateway.config.routes_file import RoutesInvalid, parse_routes
from tests.helpers import cli

CONTRACT = """\
institutions:
  - id: kb                                  # short, unique; used in rules, headers, claims
    name: Koninklijke Bibliotheek
    pass_number_pattern: "^[0-9]{8}$"       # optional
    renew_url: https://www.kb.nl/lid-worden  # shown when a membership ran out
    default: true                           # the institution of today's accounts and imports
  - id: obs
    name: Bibliotheek Rivierenland
    types: [adult, youth]
    theme: {name: Rivierenland, colour: "#00704a", text_colour: "#ffffff"}
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(InstitutionsInvalid) as caught:
        parse_institutions(text)
    return [str(problem) for problem in caught.value.problems]


def test_the_contracts_example_is_read_with_every_field() -> None:
    table = parse_institutions(CONTRACT)
    kb, obs = table.institutions
    assert table.default is kb and kb.default and not obs.default
    assert kb.renew_url == "https://www.kb.nl/lid-worden" and kb.line == 2
    assert kb.takes_pass_number("12345678") and not kb.takes_pass_number("123456789")
    assert obs.types == ("adult", "youth") and obs.theme is not None
    assert obs.theme.colour == "#00704a" and table.get("obs") is obs


def test_a_single_institution_is_the_default_without_saying_so() -> None:
    table = parse_institutions("institutions:\n  - id: oba\n    name: OBA\n")
    assert table.default.id == "oba" and table.default.default


def test_several_institutions_need_exactly_one_default() -> None:
    two = "institutions:\n  - id: a\n    name: A\n  - id: b\n    name: B\n"
    assert problems_of(two) == [
        "institutions.yaml:2: no institution is the default: mark the one of today's "
        "accounts and imports with 'default: true'"
    ]
    both = two.replace("name: A", "name: A\n    default: true").replace(
        "name: B", "name: B\n    default: true"
    )
    assert problems_of(both) == [
        "institutions.yaml:5: only one institution can be the default (the first is on line 2)"
    ]


def test_every_mistake_is_reported_with_its_line() -> None:
    text = """\
institutions:
  - id: KB
    name: Koninklijke Bibliotheek
    default: yes
  - id: obs
    name: ""
    pass_number_pattern: "[0-9"
    renew_url: http://renew.example.nl/
    colour: "#fff"
  - id: obs
    name: Twice
    types: [adult, adult, "Ad Ult"]
    theme: {colour: "red"}
  - name: No id
"""
    assert problems_of(text) == [
        "institutions.yaml:2: id 'KB' must be 1-32 lowercase letters, digits, '-' or '_', "
        "starting with a letter or digit",
        "institutions.yaml:4: default must be true or false, not 'yes'",
        "institutions.yaml:6: name must be printable text, not empty: patrons are shown it",
        "institutions.yaml:7: pass_number_pattern '[0-9' is not a regular expression: "
        "unterminated character set at position 0",
        "institutions.yaml:8: renew_url 'http://renew.example.nl/' must start with https:// "
        "(http:// only for 127.0.0.1, [::1] or localhost)",
        "institutions.yaml:9: unknown key 'colour' (allowed: id, name, pass_number_pattern, "
        "renew_url, default, theme, types)",
        "institutions.yaml:10: duplicate institution id 'obs' (first on line 5)",
        "institutions.yaml:12: types lists 'adult' twice (first on line 12)",
        "institutions.yaml:12: type 'Ad Ult' must be 1-32 lowercase letters, digits, '-' or "
        "'_', starting with a letter or digit",
        "institutions.yaml:13: theme colour must be a hex colour like #1f4e79, not 'red'",
        "institutions.yaml:14: institution is missing 'id'",
    ]


def test_an_empty_list_and_http_on_loopback() -> None:
    assert problems_of("institutions: []\n") == [
        "institutions.yaml:1: 'institutions' must list at least one institution"
    ]
    local = "institutions:\n  - id: t\n    name: T\n    renew_url: http://127.0.0.1:8/renew\n"
    assert parse_institutions(local).default.renew_url == "http://127.0.0.1:8/renew"


# --- require: on routes and clients ------------------------------------------------------

ROUTE = """\
routes:
  - name: digital
    prefix: /digital
    backend: http://127.0.0.1:8103
    auth: {auth}
    require: {require}
"""


def route_problems(auth: str, require: str, institutions: str | None = CONTRACT) -> list[str]:
    table = None if institutions is None else parse_institutions(institutions)
    with pytest.raises(RoutesInvalid) as caught:
        parse_routes(ROUTE.format(auth=auth, require=require), "routes.yaml", table)
    return [str(problem) for problem in caught.value.problems]


def test_a_route_requirement_is_read_against_the_institutions() -> None:
    text = ROUTE.format(auth="required", require="{institution: obs, types: [youth]}")
    route = parse_routes(text, "routes.yaml", parse_institutions(CONTRACT)).routes[0]
    assert route.require == Requirement("obs", frozenset({"youth"}))
    # Without a file, the one built-in institution.
    built_in = parse_routes(ROUTE.format(auth="required", require=f"{{institution: {DEFAULT_ID}}}"))
    assert built_in.routes[0].require == Requirement(DEFAULT_ID)


def test_a_route_requirement_naming_an_unknown_institution_or_type_is_refused() -> None:
    assert route_problems("required", "{institution: oba}") == [
        "routes.yaml:6: require names the institution 'oba', which is not in "
        "institutions.yaml (known: kb, obs)"
    ]
    assert route_problems("required", "{institution: kb}", None) == [
        "routes.yaml:6: require names the institution 'kb', which is not in (built in) "
        "(known: default)"
    ]
    assert route_problems("required", "{institution: obs, types: [student]}") == [
        "routes.yaml:6: type 'student' is not one of obs's membership types (adult, youth)"
    ]
    assert route_problems("required", "{types: [adult], kind: x}") == [
        "routes.yaml:6: unknown key 'kind' (allowed: institution, types)",
        "routes.yaml:6: require is missing 'institution'",
    ]


def test_a_requirement_needs_auth_required() -> None:
    assert route_problems("optional", "{institution: kb}") == [
        "routes.yaml:6: require only makes sense on auth: required: a membership is checked "
        "once the patron has logged in (this route is auth: optional)"
    ]


def test_a_client_requirement_is_checked_too() -> None:
    text = """\
clients:
  - client_id: study
    name: Study
    redirect_uris: [https://study.example.nl/cb]
    require: {institution: kb, types: [adult]}
"""
    table = parse_institutions(CONTRACT)
    client = parse_clients(text.replace(", types: [adult]", ""), institutions=table).clients[0]
    assert client.require == Requirement("kb")
    with pytest.raises(ClientsInvalid) as caught:
        parse_clients(text.replace("kb", "nope"), institutions=table)
    assert [str(p) for p in caught.value.problems] == [
        "clients.yaml:5: require names the institution 'nope', which is not in "
        "institutions.yaml (known: kb, obs)"
    ]


# --- reloading -----------------------------------------------------------------------------


def test_a_reload_keeps_the_last_good_list_and_never_drops_what_a_rule_needs(
    tmp_path: Path,
) -> None:
    path = tmp_path / "institutions.yaml"
    path.write_text(CONTRACT)
    institutions = InstitutionMap(parse_institutions(CONTRACT), path)
    routes_text = ROUTE.format(auth="required", require="{institution: obs, types: [youth]}")
    route_map = RouteMap(
        parse_routes(routes_text, "routes.yaml", institutions.table), institutions=institutions
    )
    institutions.routes = route_map
    before = institutions.table
    failures: list[InstitutionsInvalid] = []
    institutions.on_failure.append(failures.append)

    path.write_text("institutions:\n  - id: BAD\n")
    assert not institutions.reload() and institutions.table is before
    assert "institutions.yaml:2:" in str(failures[-1])

    path.write_text(CONTRACT.replace("types: [adult, youth]", "types: [adult]"))
    assert not institutions.reload() and institutions.table is before
    assert "route digital requires the membership type(s) youth of 'obs'" in str(failures[-1])

    path.write_text(CONTRACT.replace("Bibliotheek Rivierenland", "Rivierenland"))
    assert institutions.reload()
    assert institutions.table.get("obs") is not None
    assert institutions.table.get("obs").name == "Rivierenland"  # type: ignore[union-attr]


# --- the command line ----------------------------------------------------------------------


def test_institutions_check_lists_the_institutions_or_every_problem(tmp_path: Path) -> None:
    good = tmp_path / "institutions.yaml"
    good.write_text(CONTRACT)
    result = cli("institutions", "check", str(good))
    assert result.returncode == 0, result.stderr
    assert "2 institutions OK" in result.stdout and "kb" in result.stdout
    assert "(default)" in result.stdout and "types: adult, youth" in result.stdout
    single = tmp_path / "single.yaml"
    single.write_text("institutions:\n  - id: kb\n    name: KB\n")
    alone = cli("institutions", "check", str(single))
    assert alone.returncode == 0, alone.stderr
    assert alone.stdout.splitlines()[0] == f"{single}: 1 institution OK"
    bad = tmp_path / "bad.yaml"
    bad.write_text("institutions:\n  - id: x\n    name: X\n    tone: loud\n")
    refused = cli("institutions", "check", str(bad))
    assert refused.returncode == 1 and refused.stderr.startswith(f"{bad}:4: unknown key 'tone'")


def test_routes_and_clients_check_use_the_institutions_beside_them(tmp_path: Path) -> None:
    (tmp_path / "institutions.yaml").write_text(CONTRACT)
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTE.format(auth="required", require="{institution: oba}"))
    result = cli("routes", "check", str(routes))
    assert result.returncode == 1
    assert "routes.yaml:6: require names the institution 'oba'" in result.stderr
    routes.write_text(ROUTE.format(auth="required", require="{institution: obs}"))
    assert cli("routes", "check", str(routes)).returncode == 0
    clients = tmp_path / "clients.yaml"
    clients.write_text(
        "clients:\n  - client_id: s\n    name: S\n    redirect_uris: [https://s.example/cb]\n"
        "    require: {institution: kb, types: [student]}\n"
    )
    assert cli("clients", "check", str(clients)).returncode == 0  # kb lists no types
    clients.write_text(clients.read_text().replace("kb", "obs"))
    refused = cli("clients", "check", str(clients))
    assert refused.returncode == 1
    assert "clients.yaml:5: type 'student' is not one of obs's membership types" in refused.stderr
