"""Limits on what a user hands over, shared by the compiler (playbook YAML) and ``gxo`` (``--var``,
``--vars-file``, plans): past them a value or a file is refused with a coded error, never a
RecursionError, Python's own digit-limit ValueError or a process that runs out of memory.
A file's size is checked before it is read (``gxo.runtime.files``); docs/runtime.md "Limits"
lists them all."""

from __future__ import annotations

MAX_NESTING = 64  # lists and maps inside each other
MAX_INT_DIGITS = 4300  # decimal digits of an integer (Python's int/str conversion limit)

# -- files, by size (checked before reading) -----------------------------------------------------
MAX_PLAYBOOK_BYTES = 10 * 1024 * 1024  # a playbook (gxoc check/build/graph/diff, gxo run, gxo test)
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
