"""Reading a `require:` rule, the same on a route (routes.yaml) and on a client (clients.yaml):
`require: {institution: kb, types: [adult, student]}`, turned into an
`auth.memberships.Requirement`.

The institution must be one of the institutions in force (institutions.yaml beside the file,
or the one built in, `default`), and when that institution lists its membership types, every
type the rule names must be one of them: a rule naming an institution or a type nobody holds
would refuse every patron, which is never what the operator meant.
"""

from __future__ import annotations

from yaml.nodes import Node, ScalarNode

from auth.memberships import InstitutionTable, Requirement, word_problem
from gateway.config.yamlfile import STR, Reader, kind_of, line_of, show

_KEYS = ("institution", "types")


def read_requirement(
    reader: Reader, node: Node, institutions: InstitutionTable
) -> Requirement | None:
    """The rule in `node`; None, with every problem noted on `reader`, when it is refused."""
    fields = reader.mapping(node, _KEYS, "require")
    if fields is None:
        return None
    before = len(reader.problems)
    reader.require(node, fields, ("institution",), "require")
    institution_id = None
    if "institution" in fields:
        value_node = fields["institution"][1]
        institution_id = reader.string(value_node, "require institution")
        if institution_id is not None and institutions.get(institution_id) is None:
            known = ", ".join(i.id for i in institutions.institutions)
            reader.problem(
                value_node,
                f"require names the institution '{show(institution_id)}', which is not in "
                f"{institutions.source or 'the institutions in force'} (known: {known})",
            )
    types: dict[str, int] = {}
    if "types" in fields:
        items = reader.sequence(fields["types"][1], "require types", "membership types") or []
        institution = institutions.get(institution_id or "")
        for item in items:
            if not (isinstance(item, ScalarNode) and item.tag == STR):
                reader.problem(item, f"each of require types must be a word, not {kind_of(item)}")
                continue
            kind = str(item.value)
            reason = word_problem(kind, "type")
            listed = institution.types if institution is not None else ()
            if reason is None and listed and kind not in listed:
                reason = (
                    f"type '{show(kind)}' is not one of {institution_id}'s membership types "
                    f"({', '.join(listed)})"
                )
            if reason is None and kind in types:
                reason = f"require types lists '{kind}' twice (first on line {types[kind]})"
            if reason is not None:
                reader.problem(item, reason)
            types.setdefault(kind, line_of(item))
    if len(reader.problems) > before or institution_id is None:
        return None
    return Requirement(institution_id, frozenset(types))
