"""Reading a YAML configuration file strictly, with every problem's file and line.

An operator who fixes one mistake only to be shown the next learns to distrust the tool, so a
reader collects every problem in the file and reports them at once, each with its file, line
and a reason that says how to fix it. The file is read as a YAML node tree (`yaml.compose`)
rather than as plain Python data so that each value keeps its line, and so that what PyYAML
would quietly accept (a key given twice, aliases, merge keys, tags) can be refused.

`Reader` holds what every such file shares: the node tree, mappings with their allowed keys,
strings and lists. A file's own reader (`gateway.config.routes_file`,
`gateway.config.clients_file`) subclasses it and adds the rules of its values; its exception
subclasses `FileInvalid`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

_TAG = "tag:yaml.org,2002:"
STR, INT, FLOAT, BOOL, NULL, SEQ, MAP = (
    _TAG + t for t in ("str", "int", "float", "bool", "null", "seq", "map")
)
_MERGE = _TAG + "merge"
_ALIAS = "!gateway/alias"
_KINDS = {
    STR: "a string",
    INT: "a number",
    FLOAT: "a number",
    BOOL: "true/false",
    NULL: "empty (null)",
    SEQ: "a list",
    MAP: "a mapping",
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a file; `line` is 1-based, 0 when the file itself failed."""

    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


def format_problems(problems: Iterable[Problem]) -> str:
    """One problem a line, in file order."""
    return "\n".join(str(p) for p in sorted(problems, key=lambda p: (p.file, p.line)))


class FileInvalid(Exception):
    """A file was refused; `problems` holds every reason found, not just the first."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__(format_problems(self.problems))


def read_text(filename: str, invalid: type[FileInvalid]) -> str:
    """The text of the file; raises `invalid` when it cannot be read or is not UTF-8."""
    try:
        with open(filename, "rb") as file:
            data = file.read()
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise invalid([Problem(filename, 0, f"cannot read the file: {reason}")]) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise invalid([Problem(filename, line, "the file is not valid UTF-8")]) from None


class _Loader(yaml.SafeLoader):
    """Composes aliases as opaque placeholder nodes, so they are refused where they appear
    (with their own line) and a nest of aliases can never be expanded."""

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.get_event()  # type: ignore[no-untyped-call]  # untyped in the stubs
            return ScalarNode(_ALIAS, event.anchor, event.start_mark, event.end_mark)
        return super().compose_node(parent, index)


def line_of(node: Node) -> int:
    return int(node.start_mark.line) + 1


def show(value: str) -> str:
    """A value from the file as a problem quotes it: cut short when long."""
    return value if len(value) <= 60 else value[:57] + "..."


def kind_of(node: Node) -> str:
    """What the node is, as in "must be a string, not a list"."""
    if node.tag == _ALIAS:
        return f"an alias (*{node.value}); aliases are not supported, write the value out"
    if node.tag in _KINDS:
        return _KINDS[node.tag]
    return "a value tagged " + str(node.tag).replace(_TAG, "!!")


def unknown_key(key: str, allowed: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"unknown key '{show(key)}' ({hint}allowed: {', '.join(allowed)})"


class Reader:
    """Walks the node tree of one file, collecting every problem on the way."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.problems: list[Problem] = []

    def problem(self, where: Node | int, reason: str) -> None:
        at = where if isinstance(where, int) else line_of(where)
        self.problems.append(Problem(self.filename, at, reason))

    def compose(self, text: str, expected: str) -> Node | None:
        """The file's root node; None, with the problem noted, when the text is not YAML or
        is empty (`expected` says what the file should hold)."""
        try:
            root = yaml.compose(text, Loader=_Loader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            at = int(mark.line) + 1 if mark is not None else 1
            what = ", ".join(part for part in (exc.context, exc.problem) if part)
            self.problem(at, f"not valid YAML: {what}")
            return None
        except yaml.reader.ReaderError as exc:
            at = text[: exc.position].count("\n") + 1
            self.problem(at, "not valid YAML: a control character is not allowed here")
            return None
        except RecursionError:
            self.problem(1, "not valid YAML: nested too deeply")
            return None
        if root is None:
            self.problem(1, f"the file is empty; expected {expected}")
        return root

    def entries(self, text: str, key: str) -> list[Node]:
        """The items of the file's one top-level list, `key:` (a list of `key`), with every
        problem on the way to it noted."""
        root = self.compose(text, f"'{key}:' with a list of {key}")
        if root is None:
            return []
        top = self.mapping(root, (key,), "the top level")
        if top is None:
            return []
        if key not in top:
            self.problem(root, f"missing '{key}' (a list of {key}; '{key}: []' for none)")
            return []
        return self.sequence(top[key][1], key, key) or []

    def mapping(
        self, node: Node, allowed: tuple[str, ...], what: str
    ) -> dict[str, tuple[Node, Node]] | None:
        """The mapping's keys and their (key, value) nodes; a key given twice counts once, a
        key not `allowed` is a problem but still returned."""
        if not isinstance(node, MappingNode) or node.tag != MAP:
            self.problem(node, f"{what} must be a mapping, not {kind_of(node)}")
            return None
        found: dict[str, tuple[Node, Node]] = {}
        for key, value in node.value:
            if key.tag == _MERGE:
                self.problem(key, "merge keys ('<<') are not supported; write the keys out")
                continue
            if not isinstance(key, ScalarNode) or key.tag != STR:
                self.problem(key, f"a key must be a plain word, not {kind_of(key)}")
                continue
            name = key.value
            if name in found:
                first = line_of(found[name][0])
                self.problem(key, f"duplicate key '{show(name)}' (first on line {first})")
                continue
            found[name] = (key, value)
            if name not in allowed:
                self.problem(key, unknown_key(name, allowed))
        return found

    def require(
        self, node: Node, found: dict[str, tuple[Node, Node]], keys: tuple[str, ...], what: str
    ) -> None:
        """Note the `keys` missing from a mapping `found` in `node`."""
        missing = [repr(key) for key in keys if key not in found]
        if missing:
            self.problem(node, f"{what} is missing {', '.join(missing)}")

    def sequence(self, node: Node, what: str, items: str) -> list[Node] | None:
        if not isinstance(node, SequenceNode) or node.tag != SEQ:
            self.problem(node, f"'{what}' must be a list of {items}, not {kind_of(node)}")
            return None
        return list(node.value)

    def string(self, node: Node, what: str) -> str | None:
        if isinstance(node, ScalarNode) and node.tag == STR:
            return str(node.value)
        self.problem(node, f"'{what}' must be a string, not {kind_of(node)}")
        return None


_P = TypeVar("_P")


def parsed(
    fields: Mapping[str, tuple[Node, Node]], key: str, parse: Callable[[Node], _P | None]
) -> _P | None:
    """A mapping's `key` read with `parse`, None when the key is absent (`Reader.mapping`'s
    `fields`; a reader binds it once per entry: `value = functools.partial(parsed, fields)`)."""
    return parse(fields[key][1]) if key in fields else None
