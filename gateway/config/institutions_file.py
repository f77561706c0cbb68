"""Reading institutions.yaml: the libraries whose passes an account may hold, turned into an
`InstitutionTable`, or every reason why not.

Read as strictly as routes.yaml and clients.yaml (`gateway.config.yamlfile`), every problem
reported at once as `FILE:LINE: reason`. An institution's id is what rules, headers and
claims name it by, so it is short and plain; exactly one institution is the default (the
one of the accounts made by `accounts add` and imports without `--institution`), and a file
with a single institution needs not say so. Without a file there is one built-in
institution, `default` (`auth.memberships.single_institution`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import re
from typing import TypeVar

from yaml.nodes import Node, ScalarNode

from auth.memberships import Institution, InstitutionTable, word_problem
from gateway.config.clients_file import read_theme, read_uri
from gateway.config.yamlfile import (
    BOOL,
    STR,
    FileInvalid,
    Reader,
    kind_of,
    line_of,
    parsed,
    read_text,
    show,
)


class InstitutionsInvalid(FileInvalid):
    """The institutions file was refused; `problems` holds every reason found."""


def parse_institutions(text: str, filename: str = "institutions.yaml") -> InstitutionTable:
    """Build the institution table from the text of an institutions file; raises
    InstitutionsInvalid."""
    reader = _InstitutionsReader(filename)
    institutions = reader.read(text)
    if reader.problems:
        raise InstitutionsInvalid(sorted(reader.problems, key=lambda problem: problem.line))
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return InstitutionTable(tuple(institutions), source=filename, digest=digest)


def load_institutions(path: os.PathLike[str] | str) -> InstitutionTable:
    """Read and parse an institutions file; an unreadable file is an InstitutionsInvalid
    like any other."""
    filename = os.fspath(path)
    return parse_institutions(read_text(filename, InstitutionsInvalid), filename)


_KEYS = ("id", "name", "pass_number_pattern", "renew_url", "default", "theme", "types")
_REQUIRED_KEYS = ("id", "name")

_T = TypeVar("_T")


class _InstitutionsReader(Reader):
    """The rules of institutions.yaml; remembers each id to refuse a second."""

    def __init__(self, filename: str) -> None:
        super().__init__(filename)
        self._ids: dict[str, int] = {}

    def read(self, text: str) -> list[Institution]:
        nodes = self.entries(text, "institutions")
        found = [self._institution(node) for node in nodes]
        institutions = [item for item in found if item is not None]
        if not nodes:
            if not self.problems:
                self.problem(1, "'institutions' must list at least one institution")
            return institutions
        defaults = [
            (node, item) for node, item in zip(nodes, found, strict=True) if item and item.default
        ]
        if len(defaults) > 1:
            first = line_of(defaults[0][0])
            for node, _ in defaults[1:]:
                self.problem(
                    node, f"only one institution can be the default (the first is on line {first})"
                )
        elif not defaults and len(nodes) > 1 and len(institutions) == len(nodes):
            self.problem(
                nodes[0],
                "no institution is the default: mark the one of today's accounts and imports "
                "with 'default: true'",
            )
        elif not defaults and len(institutions) == 1:
            institutions = [dataclasses.replace(institutions[0], default=True)]
        return institutions

    def _institution(self, node: Node) -> Institution | None:
        fields = self.mapping(node, _KEYS, "each institution")
        if fields is None:
            return None
        before = len(self.problems)
        self.require(node, fields, _REQUIRED_KEYS, "institution")

        value = functools.partial(parsed, fields)

        institution_id = value("id", self._id)
        name = value("name", self._name)
        pattern = value("pass_number_pattern", self._pattern)
        renew_url = value("renew_url", self._renew_url)
        default = value("default", self._default)
        theme = value("theme", lambda n: read_theme(self, n))
        types = value("types", self._types)
        if institution_id is not None:
            self._claim_id(institution_id, fields["id"][1])
        if len(self.problems) > before or not (institution_id and name):
            return None
        return Institution(
            id=institution_id,
            name=name,
            pass_number_pattern=pattern,
            renew_url=renew_url,
            default=bool(default),
            theme=theme,
            types=types or (),
            line=line_of(node),
        )

    def _id(self, node: Node) -> str | None:
        value = self.string(node, "id")
        if value is None:
            return None
        reason = word_problem(value, "id")
        if reason is not None:
            self.problem(node, reason)
            return None
        return value

    def _name(self, node: Node) -> str | None:
        name = self.string(node, "name")
        if name is not None and (not name.strip() or not name.isprintable()):
            self.problem(node, "name must be printable text, not empty: patrons are shown it")
            return None
        return name

    def _pattern(self, node: Node) -> re.Pattern[str] | None:
        text = self.string(node, "pass_number_pattern")
        if text is None:
            return None
        try:
            return re.compile(text)
        except re.error as exc:
            self.problem(
                node,
                f"pass_number_pattern '{show(text)}' is not a regular expression: {exc}",
            )
            return None

    def _renew_url(self, node: Node) -> str | None:
        return read_uri(self, node, "renew_url", https=True)

    def _default(self, node: Node) -> bool | None:
        if node.tag == BOOL and node.value.lower() in ("true", "false"):
            return bool(node.value.lower() == "true")
        given = f"'{show(node.value)}'" if isinstance(node, ScalarNode) and node.value else None
        self.problem(node, f"default must be true or false, not {given or kind_of(node)}")
        return None

    def _types(self, node: Node) -> tuple[str, ...] | None:
        items = self.sequence(node, "types", "membership types")
        if items is None:
            return None
        seen: dict[str, int] = {}
        for item in items:
            if not (isinstance(item, ScalarNode) and item.tag == STR):
                self.problem(item, f"each of types must be a word, not {kind_of(item)}")
                continue
            reason = word_problem(str(item.value), "type")
            if reason is not None:
                self.problem(item, reason)
            elif item.value in seen:
                first = seen[item.value]
                self.problem(item, f"types lists '{item.value}' twice (first on line {first})")
            else:
                seen[str(item.value)] = line_of(item)
        return tuple(seen)

    def _claim_id(self, institution_id: str, node: Node) -> None:
        if institution_id in self._ids:
            first = self._ids[institution_id]
            self.problem(
                node, f"duplicate institution id '{institution_id}' (first on line {first})"
            )
        self._ids.setdefault(institution_id, line_of(node))
