"""Reads a job file as the API server would accept it, refusing what PyYAML lets through.

`yaml.safe_load` keeps the last of two equal keys (a silently dropped setting), expands
aliases into values whose size grows exponentially with the file (the "billion laughs":
a 1 KiB file becomes 10^9 list items as soon as anything walks it) and builds Python-only
values (timestamps, bytes, sets) that JSON, and therefore Kubernetes, has not got. This
loader refuses all three with the line, and bounds the file and its expanded size before
any validation walks it. Pure PyYAML, no torch: the operator's admission webhook may use it.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

MAX_BYTES = 1 << 20  # a ConfigMap (how the job reaches the pod) holds at most 1 MiB
MAX_NODES = 100_000  # scalars, lists and mappings after expanding aliases
MAX_DEPTH = 64  # nesting; a FinetuneJob needs about 8


class YamlProblem(ValueError):
    """Where (1-based line, 0 for the file as a whole) and what."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(line, message)
        self.line = line
        self.message = message

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


class _Loader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no stubs here
    """The pure-Python safe loader (its recursion ends in RecursionError, which we catch;
    libyaml's C composer has no depth limit) with duplicate keys refused."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        # Bounded here, while composing: Python's recursion limit would stop it only after
        # ~1000 levels and seconds of work.
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise YamlProblem(self.peek_event().start_mark.line + 1,
                                  f"nested too deeply (more than {MAX_DEPTH} levels)")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults` merges; later explicit keys may override it
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key (`? [a, b]`); the constructor explains it
                continue
            if first != key_node.start_mark.line + 1:
                raise YamlProblem(key_node.start_mark.line + 1,
                                  f"duplicate key {key!r} (first on line {first}); YAML keeps only the last")
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]


def load(text: bytes | str) -> Any:
    """One YAML document as plain JSON-like values; raises YamlProblem."""
    if len(text) > MAX_BYTES:
        raise YamlProblem(0, f"larger than {MAX_BYTES} bytes; a job file holds at most 1 MiB (a ConfigMap's limit)")
    if isinstance(text, bytes):
        raw = text
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            line = raw[: error.start].count(b"\n") + 1
            raise YamlProblem(line, f"not UTF-8 (byte 0x{raw[error.start]:02x} at offset {error.start})") from None
    _check_flow_depth(text)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_size(node)
        return loader.construct_document(node)
    except YamlProblem:
        raise
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark else 0
        raise YamlProblem(line, " ".join(str(error.problem or error.context or error).split())) from None
    except yaml.YAMLError as error:
        raise YamlProblem(0, " ".join(str(error).split())) from None
    except RecursionError:
        raise YamlProblem(0, f"nested too deeply (at most {MAX_DEPTH} levels)") from None
    finally:
        loader.dispose()


_QUOTED_OR_BRACKET = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"\\]|\\.)*\"|#[^\n]*|[\[\]{}\n]")


def _check_flow_depth(text: str) -> None:
    """`[[[[...` in flow style: PyYAML's scanner looks up to 1024 characters ahead for a
    simple key at every bracket (about a second of work), so deep flow nesting is refused
    from the brackets alone, skipping quoted strings and comments."""
    depth = line = 0
    for match in _QUOTED_OR_BRACKET.finditer(text):
        token = match.group()
        if token == "\n":
            line += 1
        elif token in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise YamlProblem(line + 1, f"nested too deeply (more than {MAX_DEPTH} levels)")
        elif token in "]}":
            depth = max(0, depth - 1)
        else:
            line += token.count("\n")


def _check_size(root: yaml.Node) -> None:
    """Counts the nodes the document has once aliases are expanded, without expanding them:
    each node's expanded size is computed once (memoised by identity), children first."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, children_done = stack.pop()
        if id(node) in sizes:
            continue
        if depth > MAX_DEPTH:
            raise YamlProblem(node.start_mark.line + 1, f"nested too deeply (more than {MAX_DEPTH} levels)")
        children = _children(node)
        if children_done or not children:
            total = 1 + sum(sizes.get(id(child), 0) for child in children)
            if total > MAX_NODES:
                raise YamlProblem(node.start_mark.line + 1,
                                  f"expands to more than {MAX_NODES} values (YAML aliases repeat what they name)")
            sizes[id(node)] = total
            continue
        stack.append((node, depth, True))
        stack.extend((child, depth + 1, False) for child in children if id(child) not in sizes)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []
