"""Which institution an `accounts` command means: `--institution ID`, else the default one.

With `--institutions FILE` (the gateway's institutions.yaml) the id must be one of it, and
pass numbers and types are checked against it. Without it the command cannot know the
institutions in force, so it takes any well-formed id and leaves the default one to the
database (what the gateway last settled, `gateway_state`).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from auth.memberships import Institution, InstitutionTable, word_problem
from gateway.config.institutions_file import InstitutionsInvalid, load_institutions


class InstitutionUnknown(ValueError):
    """`--institution` names no institution the command may use; the message says why."""


@dataclass(frozen=True, slots=True)
class ChosenInstitution:
    id: str | None
    """None: the default institution, as the database knows it."""
    known: Institution | None = None
    """Its configuration, when the institutions in force are known."""


def institution_for(args: argparse.Namespace) -> ChosenInstitution:
    """The institution `args.institution` names (checked against `args.institutions`, the
    file, when given); ``InstitutionUnknown`` says why none."""
    table = None
    if args.institutions is not None:
        try:
            table = load_institutions(args.institutions)
        except InstitutionsInvalid as exc:
            raise InstitutionUnknown(str(exc)) from None
    return chosen(args.institution, table)


def chosen(given: str | None, table: InstitutionTable | None) -> ChosenInstitution:
    if given is not None:
        given = given.strip()
        problem = word_problem(given, "institution") if given else "institution is empty"
        if problem:
            raise InstitutionUnknown(problem)
    if table is None:
        return ChosenInstitution(given)
    if given is None:
        return ChosenInstitution(table.default.id, table.default)
    found = table.get(given)
    if found is None:
        known = ", ".join(i.id for i in table.institutions)
        raise InstitutionUnknown(f"no institution {given!r} in {table.source} (it has {known})")
    return ChosenInstitution(found.id, found)
