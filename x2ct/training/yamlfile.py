"""The one YAML reader of x2ct: small, plain configs only.

Configs are a few kB of mappings, lists and scalars, so anything else is
refused before it can cost time or memory: files over ``MAX_BYTES``, special
files (a FIFO would block), bytes that are not UTF-8, anchors and aliases
(an "alias bomb" of 752 bytes expands to 100 MB), nesting deeper than
``MAX_DEPTH`` (no RecursionError) and duplicate keys (PyYAML's SafeLoader
silently keeps the last one, so a second ``method:`` would train another
model). Every refusal is one ``InputError`` line naming the file, the line
and what to do.
"""

from __future__ import annotations


import yaml

from x2ct.errors import InputError
from x2ct.io.files import read_small_file

#: Largest config read (shipped configs are about 1 kB).
MAX_BYTES = 256 * 1024
#: Deepest nesting of mappings and lists (configs use 3).
MAX_DEPTH = 16


class _Refused(yaml.YAMLError):
    def __init__(self, problem: str, mark):
        super().__init__(problem)
        self.problem, self.problem_mark = problem, mark


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader without anchors, aliases, merge keys or duplicate keys, and with a depth limit."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Refused("anchors and aliases (&name, *name) are not allowed in a config; write the values out",
                           event.start_mark)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Refused(f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise _Refused("merge keys (<<) are not allowed in a config; write the values out",
                               key_node.start_mark)
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (list, dict)):
                raise _Refused("a key must be a plain value", key_node.start_mark)
            if key in seen:
                raise _Refused(f"duplicate key {str(key)[:80]!r} (only one may be given)", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def parse(text: str, source: str):
    """The content of YAML ``text`` (from ``source``, named in messages), strictly parsed."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or str(error).strip().splitlines()[0]
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise InputError(f"{source} is not a valid config: {problem}{where}.") from None


def read(path) -> object:
    """The content of a YAML file, after checking it is a small regular UTF-8 file."""
    raw = read_small_file(path, "The config", MAX_BYTES, "give a YAML file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputError(f"The config {path} is not UTF-8 text (byte 0x{raw[error.start]:02x} at offset "
                         f"{error.start}); save it as UTF-8.") from None
    return parse(text, str(path))
