"""The state store's hot path: a fast, cycle-safe deep copy of plain data (compiled when available).

``deep_copy(value)`` returns a copy of ``value`` that shares no mutable container with it, so
that a module reading state can never change the store.  It is written for data as the store
holds it (module summaries, vars, resume payloads: JSON-like values) and is tuned for Cython:

* Immutable scalars (``str``, ``int``, ``float``, ``bool``, ``None``, ``bytes``; exact types
  only) are returned as they are.
* ``dict`` and ``list`` (exact types) are copied with one C-level shallow copy
  (``PyDict_Copy``, a list slice), then only their container items are replaced by copies;
  the scalar items are never touched one by one.  Dict keys are shared, not copied: a key is
  hashable, hence immutable plain data.
* A ``tuple`` whose items copy to themselves (all scalars, say) is returned as it is, as
  ``copy.deepcopy`` does; otherwise it is rebuilt from the copies.
* Shared references are copied once and cycles are preserved, through a memo keyed by
  ``id()`` of the original containers (the same shape as ``copy.deepcopy``'s memo).  A flat
  top-level dict or list (no container inside) is copied without allocating the memo at all;
  the memo is created when the first nested container is met.
* Anything else (subclasses of the types above, ``set``, ``datetime``, user objects) goes to
  ``copy.deepcopy`` with the same memo, so isolation holds for every value and references
  shared between plain and other data are still copied once.  This was chosen over a
  ``TypeError``: the store must not fail a run because a module returned a tuple subclass or
  a tainted ``str`` subclass; such values are only slower to copy.
* Nesting deeper than ``MAX_DEPTH`` raises ``RecursionError`` (the compiled code does not use
  the interpreter's recursion check; the pure twin may raise it earlier, from the interpreter).

This file is also the pure-Python twin: uncompiled, it runs as ordinary Python (slower) with
the same results; ``tests/test_state.py`` checks both against each other.
"""

# START GENERATED CYTHON IMPORT
# This section is generated from the header that every runtime/_*_cy.py module carries.
try:
    # The Cython compiler needs this exact import in the file.
    import cython
except ModuleNotFoundError:
    from gxo.runtime import _cython_shim as cython  # type: ignore[no-redef]


def _is_compiled() -> bool:
    """True when this module is the compiled extension, not the pure-Python source."""
    return bool(cython.compiled)


# END GENERATED CYTHON IMPORT

import copy as _copy_mod
from typing import Any

__all__ = ["MAX_DEPTH", "deep_copy"]

#: deepest container nesting that ``deep_copy`` follows before raising ``RecursionError``
MAX_DEPTH = 1000

_deepcopy = _copy_mod.deepcopy


@cython.cfunc
@cython.inline
def _is_atomic(obj: Any) -> cython.bint:
    """An immutable scalar of an exact plain type: it is shared, never copied."""
    t: type = type(obj)
    return (
        t is str
        or t is int
        or obj is None
        or t is float
        or t is bool
        or t is bytes
    )


@cython.cfunc
def _copy(obj: Any, memo: dict[int, Any], depth: cython.Py_ssize_t) -> Any:
    """The copy of ``obj``, known not to be atomic, recording each copied container in memo."""
    t: type = type(obj)
    key: int = id(obj)
    hit: object = memo.get(key)
    if hit is not None:
        return hit
    if depth > MAX_DEPTH:
        raise RecursionError(f"state value nested deeper than {MAX_DEPTH} levels")
    i: cython.Py_ssize_t
    n: cython.Py_ssize_t
    if t is dict:
        src_d: dict[Any, Any] = obj
        out_d: dict[Any, Any] = src_d.copy()
        memo[key] = out_d
        for k, v in src_d.items():
            if not _is_atomic(v):
                out_d[k] = _copy(v, memo, depth + 1)
        return out_d
    if t is list:
        src_l: list[Any] = obj
        out_l: list[Any] = src_l[:]
        memo[key] = out_l
        n = len(out_l)
        for i in range(n):
            v = out_l[i]
            if not _is_atomic(v):
                out_l[i] = _copy(v, memo, depth + 1)
        return out_l
    if t is tuple:
        src_t: tuple[Any, ...] = obj
        n = len(src_t)
        items: list[Any] = []
        changed: cython.bint = False
        for i in range(n):
            v = src_t[i]
            if not _is_atomic(v):
                c = _copy(v, memo, depth + 1)
                if c is not v:
                    changed = True
                v = c
            items.append(v)
        if not changed:
            return obj
        # A cycle through this tuple may have copied it already (as copy.deepcopy does).
        hit = memo.get(key)
        if hit is not None:
            return hit
        out_t: tuple[Any, ...] = tuple(items)
        memo[key] = out_t
        return out_t
    return _deepcopy(obj, memo)


def deep_copy(obj: Any) -> Any:
    """A deep copy of ``obj`` that shares no mutable container with it (see the module doc)."""
    if _is_atomic(obj):
        return obj
    t: type = type(obj)
    # A top-level dict or list gets a memo only if it holds a container: flat values, the
    # common case for single state entries, are one C-level shallow copy and a type scan.
    memo: dict[int, Any] | None
    i: cython.Py_ssize_t
    n: cython.Py_ssize_t
    if t is dict:
        src_d: dict[Any, Any] = obj
        out_d: dict[Any, Any] = src_d.copy()
        memo = None
        for k, v in src_d.items():
            if not _is_atomic(v):
                if memo is None:
                    memo = {id(obj): out_d}
                out_d[k] = _copy(v, memo, 1)
        return out_d
    if t is list:
        src_l: list[Any] = obj
        out_l: list[Any] = src_l[:]
        memo = None
        n = len(out_l)
        for i in range(n):
            v = out_l[i]
            if not _is_atomic(v):
                if memo is None:
                    memo = {id(obj): out_l}
                out_l[i] = _copy(v, memo, 1)
        return out_l
    memo = {}
    return _copy(obj, memo, 0)
