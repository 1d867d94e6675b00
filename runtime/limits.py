"""Limits on what a user hands over, shared by the compiler (playbook YAML) and ``gxo`` (``--var``,
``--vars-file``, plans, YAML and JSON read at run time, ``printf``): past them a value or a file
is refused with a coded error or a ``LimitExceeded`` naming the limit, never a RecursionError,
Python's own digit-limit ValueError or gigabytes allocated from a short input.  A file's size
is checked before it is read (``gxo.runtime.files``).

``load_yaml`` and ``load_json`` read a document at run time (``data:parse``, ``fromJson``)
under the playbook loader's limits: size, nesting, nodes after alias expansion, integer digits.
docs/runtime.md's *Limits* lists every value here.
"""

from __future__ import annotations

import math
from typing import Any

MAX_NESTING = 64  # lists and maps inside each other
MAX_INT_DIGITS = 4300  # decimal digits of an integer (Python's int/str conversion limit)
MAX_INT_BITS = int(MAX_INT_DIGITS * math.log2(10))  # the same, for hex, octal and binary spellings
MAX_YAML_BYTES = 10 * 1024 * 1024  # a YAML document: a playbook, or one read at run time
MAX_YAML_NODES = 250_000  # nodes of a YAML document after alias and merge-key expansion
MAX_FORMAT_WIDTH = 10_000  # printf: a verb's width or precision (`%10000s`, `%.10000f`)


class LimitExceeded(ValueError):
    """A value past one of these limits (the message names the limit)."""


def yaml_expanded_size(node: Any, memo: dict[int, int]) -> int:
    """The node count of a composed YAML node with every alias expanded, computed on the shared
    graph (memoised; stops counting past ``MAX_YAML_NODES``).  A recursive alias (``&a [*a]``)
    expands forever: past the limit too.  Recursion is as deep as the document: check its
    nesting first."""
    key = id(node)
    if key in memo:
        size = memo[key]
        return MAX_YAML_NODES + 1 if size < 0 else size  # < 0: inside itself
    memo[key] = -1
    kind = node.id  # "mapping", "sequence" or "scalar"
    if kind == "mapping":
        size = 1 + sum(yaml_expanded_size(k, memo) + yaml_expanded_size(v, memo) for k, v in node.value)
    elif kind == "sequence":
        size = 1 + sum(yaml_expanded_size(v, memo) for v in node.value)
    else:
        size = 1
    memo[key] = min(size, MAX_YAML_NODES + 1)
    return memo[key]


_yaml_loader: Any = None


def _loader() -> Any:
    global _yaml_loader
    if _yaml_loader is None:
        import yaml  # lazily: only YAML read at run time needs it

        base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

        class Loader(base):  # type: ignore[misc, valid-type]
            """``yaml.safe_load``'s rules, with integers bounded like the playbook's."""

            def construct_yaml_int(self, node: Any) -> int:
                if len(node.value) > MAX_INT_DIGITS + 8:  # a sign, a base prefix, `_` separators
                    raise LimitExceeded(f"integer too large: more than {MAX_INT_DIGITS:,} digits "
                                        f"(line {node.start_mark.line + 1})")
                value = super().construct_yaml_int(node)
                if value.bit_length() > MAX_INT_BITS:
                    raise LimitExceeded(f"integer too large: more than {MAX_INT_DIGITS:,} digits "
                                        f"(line {node.start_mark.line + 1})")
                return value

        Loader.add_constructor("tag:yaml.org,2002:int", Loader.construct_yaml_int)
        _yaml_loader = Loader
    return _yaml_loader


def load_yaml(text: str) -> Any:
    """The value of the YAML document ``text`` (``yaml.safe_load``'s rules) within the playbook
    loader's limits; ``LimitExceeded`` past one, ``yaml.YAMLError`` when it is not YAML."""
    import yaml

    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_YAML_BYTES:
        raise LimitExceeded(f"the document is {size:,} bytes; YAML is read up to {MAX_YAML_BYTES:,} bytes")
    loader_cls = _loader()
    depth = 0
    for event in yaml.parse(text, Loader=loader_cls):  # nesting first: composing recurses
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_NESTING:
                raise LimitExceeded(f"nesting deeper than {MAX_NESTING} levels "
                                    f"(line {event.start_mark.line + 1})")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
    loader = loader_cls(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if yaml_expanded_size(node, {}) > MAX_YAML_NODES:
            raise LimitExceeded(f"the document expands to more than {MAX_YAML_NODES:,} nodes through "
                                "aliases and merge keys (or holds an alias inside its own anchor)")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _json_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise LimitExceeded(f"integer too large: more than {MAX_INT_DIGITS:,} digits")
    return int(text)


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def load_json(text: str | bytes, *, constants: bool = False) -> Any:
    """The value of the JSON text nested at most ``MAX_NESTING`` levels, with integers of at
    most ``MAX_INT_DIGITS`` digits; ``LimitExceeded`` past one, ``ValueError`` when it is not
    JSON (``NaN`` and ``Infinity`` too, unless ``constants``)."""
    import json

    try:
        value = json.loads(text, parse_int=_json_int, parse_constant=None if constants else _no_constant)
    except RecursionError:
        raise LimitExceeded(f"nesting deeper than {MAX_NESTING} levels") from None
    if nests_deeper(value, MAX_NESTING - 1):  # counted as in YAML: `[[]]` is 2 levels
        raise LimitExceeded(f"nesting deeper than {MAX_NESTING} levels")
    return value

# -- files, by size (checked before reading) -----------------------------------------------------
MAX_PLAYBOOK_BYTES = MAX_YAML_BYTES  # a playbook (gxoc check/build/graph/diff, gxo run, gxo test)
MAX_VARS_FILE_BYTES = 10 * 1024 * 1024  # a --vars-file
MAX_KEY_FILE_BYTES = 1024 * 1024  # a signing key file: --trusted-key, $GXO_TRUSTED_KEYS, gxoc build --sign
MAX_STATE_KEY_FILE_BYTES = 4096  # a state key file: --state-key-file, gxo state rekey --new-key-file

# -- plans (.gxp): checked from the zip's central directory before any member is read ------------
MAX_PLAN_MEMBERS = 4096
MAX_PLAN_MEMBER_BYTES = 256 * 1024 * 1024  # one member
MAX_PLAN_TOTAL_BYTES = 1024 * 1024 * 1024  # all members together
MAX_PLAN_BYTES = MAX_PLAN_TOTAL_BYTES + 4 * 1024 * 1024  # the file: members, headers and directory


def nests_deeper(value: object, limit: int = MAX_NESTING) -> bool:
    """Whether a JSON value nests lists/maps more than ``limit`` levels deep (no recursion)."""
    stack = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(v, dict):
            stack.extend((x, depth + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, depth + 1) for x in v)
    return False
