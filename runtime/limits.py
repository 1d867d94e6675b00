"""Limits on values a user writes, shared by the compiler (playbook YAML) and ``gxo`` (``--var``,
``--vars-file``): past them a value is refused with a coded error, never a RecursionError or
Python's own digit-limit ValueError."""

from __future__ import annotations

MAX_NESTING = 64  # lists and maps inside each other
MAX_INT_DIGITS = 4300  # decimal digits of an integer (Python's int/str conversion limit)


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
