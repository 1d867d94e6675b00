"""The state store: the run's key/value data (vars, registered summaries, the ``_gxo`` namespace).

Keys are strings; a dot separates namespaces.  The store keeps the flat entries in a
``StateBackend`` (in memory here; the durable SQLite store plugs in behind the same
protocol) and answers reads from a **nested view** built from them: ``_gxo.workloads.a.status``
becomes ``{"_gxo": {"workloads": {"a": {"status": ...}}}}`` so that templates can write
``._gxo.workloads.a.status``.

Nesting rules (the content does not depend on the order of writes; names appear in the
order their first key was written, ``keys`` in a template sees that order):

* A longer key wins over a shorter one on the same path: with ``a = 5`` and ``a.b = 1`` the
  view holds ``{"a": {"b": 1}}`` ("the map wins"); ``a`` reappears when ``a.b`` is deleted.
* When the shorter key's value is itself a dict, the two merge: ``a = {"x": 1}`` and
  ``a.b = 2`` give ``{"a": {"x": 1, "b": 2}}``, and the longer key wins inside the merge.
  The stored dict is never modified: the view holds a shallow copy of it.

Reads are isolated by default (``deep_copy`` access): every value handed out is a deep copy
made by the compiled ``gxo.runtime._state_cy.deep_copy``, so mutating it never changes the
store.  Writes store the caller's reference (the kernel hands over values it no longer
mutates, or mutates on purpose, like its live status map); they are copied on read.  The
``unsafe_direct_reference`` access mode returns the store's own objects, for trusted hot paths;
such references must be treated as read-only and are only guaranteed current until the next
write.

The nested view is cached: ``get_all()`` costs one deep copy (nothing, unsafe) and no nesting
work.  ``set()`` updates the cached view in place when the key lands in a fresh or plain slot,
which is the kernel's common case (a register, a status); a write that meets the nesting
rules (a longer key below it, a scalar or a stored dict on its path), ``delete()`` and
``load()`` drop the view, and the next read rebuilds it once.

Concurrency: every operation holds one ``threading.Lock`` for a bounded, non-blocking time
(the copy included), so the store is safe from the kernel's event loop and from worker threads
alike; nothing is awaited while the lock is held.  Modules get only a ``StateReader``; only the
kernel writes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, Protocol

from gxo.runtime import _state_cy
from gxo.runtime._state_cy import deep_copy
from gxo.runtime.module import GxoError

__all__ = [
    "ACCESS_MODES",
    "DEEP_COPY",
    "UNSAFE_DIRECT_REFERENCE",
    "ExtensionNotCompiledError",
    "KeyNotFound",
    "MemoryBackend",
    "StateBackend",
    "StateReader",
    "StateStore",
    "deep_copy",
]

DEEP_COPY: Final = "deep_copy"
UNSAFE_DIRECT_REFERENCE: Final = "unsafe_direct_reference"
#: the values of a workload's ``state_access`` (``gxo.runtime.plan.Workload.state_access``)
ACCESS_MODES: Final = (DEEP_COPY, UNSAFE_DIRECT_REFERENCE)


class ExtensionNotCompiledError(ImportError):
    """``GXO_REQUIRE_EXTENSIONS=1`` is set but a runtime hot path runs from its pure-Python twin."""


def require_compiled(module: Any) -> None:
    """Refuse a pure-Python twin (``runtime/_<name>_cy.py``) under ``GXO_REQUIRE_EXTENSIONS=1``."""
    if os.environ.get("GXO_REQUIRE_EXTENSIONS") == "1" and not module._is_compiled():
        raise ExtensionNotCompiledError(
            f"GXO_REQUIRE_EXTENSIONS=1 but {module.__name__} is not compiled "
            f"(loaded from {module.__file__}); rebuild the extensions with Cython installed "
            "(make .venv/.install-stamp after touching setup.py), or unset GXO_REQUIRE_EXTENSIONS"
        )


require_compiled(_state_cy)


class KeyNotFound(GxoError, LookupError):
    """A read or a delete of a key the store does not hold."""

    def __init__(self, key: str) -> None:
        super().__init__(f"state key not found: {key!r}")
        self.key = key


class StateBackend(Protocol):
    """Where the flat entries live.  The store adds the nested view, copying and locking;
    a backend only keeps ``key -> value`` (a durable one also commits each write)."""

    def set(self, key: str, value: Any) -> None:
        """Store ``value`` (by reference, for the in-memory backend) under ``key``."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``; raises ``KeyError`` when it is absent."""
        ...

    def replace(self, entries: Mapping[str, Any]) -> None:
        """Drop every entry and store ``entries`` instead."""
        ...

    def items(self) -> Iterable[tuple[str, Any]]:
        """Every entry, in write order (a key that is written again keeps its place)."""
        ...

    def close(self) -> None:
        """Release resources; the backend is not used afterwards."""
        ...


class MemoryBackend:
    """The in-memory backend: a dict."""

    __slots__ = ("_data",)

    def __init__(self) -> None:
        self._data: dict[str, Any] = {}

    def set(self, key: str, value: Any) -> None:
        self._data[key] = value

    def delete(self, key: str) -> None:
        del self._data[key]

    def replace(self, entries: Mapping[str, Any]) -> None:
        self._data = dict(entries)

    def items(self) -> Iterable[tuple[str, Any]]:
        return self._data.items()

    def close(self) -> None:
        self._data = {}


_MISSING: Final[Any] = object()


def _split(key: str) -> list[str]:
    if type(key) is not str:
        raise TypeError(f"state keys are strings, not {type(key).__name__}")
    parts = key.split(".")
    if "" in parts:
        raise ValueError(f"invalid state key {key!r}: empty segment")
    return parts


def _check_mode(access_mode: str) -> str:
    if access_mode not in ACCESS_MODES:
        raise ValueError(f"unknown state access mode {access_mode!r} (expected one of {', '.join(ACCESS_MODES)})")
    return access_mode


class StateStore:
    """The run's state (see the module docstring for the rules)."""

    __slots__ = ("_backend", "_copy", "_lock", "_owned", "_view")

    def __init__(self, backend: StateBackend | None = None, *,
                 copier: Callable[[Any], Any] | None = None) -> None:
        self._backend: StateBackend = backend if backend is not None else MemoryBackend()
        #: the isolating copy; ``copier`` exists for the differential tests and the benchmark
        self._copy: Callable[[Any], Any] = copier if copier is not None else deep_copy
        self._lock = threading.Lock()
        #: the cached nested view, or None when a write invalidated it
        self._view: dict[str, Any] | None = None
        #: the view's dicts that the store built (safe to update in place), by id; a dict that
        #: is not in here is a stored value and is never modified.  Holding them keeps their
        #: ids from being reused by other dicts while the view lives.
        self._owned: dict[int, dict[str, Any]] = {}

    # -- writes (the kernel only) -----------------------------------------------------------------

    def set(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key`` (the reference; it is copied on read)."""
        parts = _split(key)
        with self._lock:
            self._backend.set(key, value)
            if self._view is not None and not self._update_view(parts, value):
                self._invalidate()

    def delete(self, key: str) -> None:
        """Remove the entry ``key`` (an exact key, not a namespace); ``KeyNotFound`` when absent."""
        _split(key)
        with self._lock:
            try:
                self._backend.delete(key)
            except KeyError:
                raise KeyNotFound(key) from None
            self._invalidate()

    def load(self, entries: Mapping[str, Any]) -> None:
        """Replace everything with ``entries`` (the vars at the start of a run, a resumed
        snapshot).  The values are stored by reference, like ``set``."""
        for key in entries:
            _split(key)
        with self._lock:
            self._backend.replace(entries)
            self._invalidate()

    def close(self) -> None:
        with self._lock:
            self._backend.close()
            self._invalidate()

    # -- reads ------------------------------------------------------------------------------------

    def get(self, key: str, access_mode: str = DEEP_COPY) -> Any:
        """The value at ``key`` in the nested view: a flat entry, a namespace (a dict of what
        lies below it) or a path into a stored dict.  ``KeyNotFound`` when there is none."""
        parts = _split(key)
        unsafe = _check_mode(access_mode) == UNSAFE_DIRECT_REFERENCE
        with self._lock:
            node: Any = self._current_view()
            for part in parts:
                if not isinstance(node, dict):
                    raise KeyNotFound(key)
                node = node.get(part, _MISSING)
                if node is _MISSING:
                    raise KeyNotFound(key)
            return node if unsafe else self._copy(node)

    def get_all(self, access_mode: str = DEEP_COPY) -> dict[str, Any]:
        """The whole nested view (a deep copy unless ``unsafe_direct_reference``)."""
        unsafe = _check_mode(access_mode) == UNSAFE_DIRECT_REFERENCE
        with self._lock:
            view = self._current_view()
            if unsafe:
                return view
            copied: dict[str, Any] = self._copy(view)
            return copied

    def view(self) -> dict[str, Any]:
        """The nested view itself, uncopied: the kernel's expression scope.  Read-only, and
        current only until the next write."""
        with self._lock:
            return self._current_view()

    def snapshot(self) -> dict[str, Any]:
        """A deep copy of the flat entries (``load(snapshot())`` restores them): checkpoints
        and resume.  One copy of the whole mapping, so values shared between keys stay shared."""
        with self._lock:
            copied: dict[str, Any] = self._copy(dict(self._backend.items()))
            return copied

    def reader(self, access_mode: str = DEEP_COPY) -> StateReader:
        """A read-only handle for one workload, reading with its ``state_access`` mode."""
        return StateReader(self, _check_mode(access_mode))

    # -- the nested view --------------------------------------------------------------------------

    def _invalidate(self) -> None:
        self._view = None
        self._owned = {}

    def _current_view(self) -> dict[str, Any]:
        view = self._view
        if view is None:
            view = self._view = self._build_view()
        return view

    def _build_view(self) -> dict[str, Any]:
        """Nest the flat entries (the rules of the module docstring).

        Content: keys are placed shortest first, so a longer key overrides what a shorter one
        put on its path; a stored dict met on the way is merged into a private copy.  Order:
        each name sits where the first key that reaches it was written (``items()`` order),
        names that come from a stored dict at that dict's place and in its order.  This is
        also where ``_update_view`` appends, so updating in place and rebuilding agree."""
        entries = [(i, key.split("."), value) for i, (key, value) in enumerate(self._backend.items())]
        entries.sort(key=lambda e: len(e[1]))  # stable: equal lengths keep the write order
        root: dict[str, Any] = {}
        owned: dict[int, dict[str, Any]] = {id(root): root}
        rank: dict[tuple[int, str], tuple[int, int]] = {}  # (node id, name) -> sort key
        source: dict[tuple[int, str], int] = {}  # (node id, name) -> index of the value's key

        def reach(node: dict[str, Any], name: str, r: tuple[int, int]) -> None:
            old = rank.get((id(node), name))
            if old is None or r < old:
                rank[(id(node), name)] = r

        for index, parts, value in entries:
            here = (index, -1)
            node = root
            for part in parts[:-1]:
                child = node.get(part, _MISSING)
                if id(child) not in owned:
                    if isinstance(child, dict):  # a stored dict: merged into a private copy
                        copy: dict[str, Any] = dict(child)
                        by = source[(id(node), part)]
                        for j, name in enumerate(copy):
                            rank[(id(copy), name)] = (by, j)
                            source[(id(copy), name)] = by
                        child = copy
                    else:  # absent, or a scalar that gives way to the map
                        child = {}
                    owned[id(child)] = child
                    node[part] = child
                reach(node, part, here)
                node = child
            leaf = parts[-1]
            node[leaf] = value
            source[(id(node), leaf)] = index
            reach(node, leaf, here)
        for node in owned.values():
            if len(node) > 1:
                nid = id(node)
                ordered = [(name, node[name]) for _, name in sorted((rank[(nid, name)], name) for name in node)]
                node.clear()
                node.update(ordered)
        self._owned = owned
        return root

    def _update_view(self, parts: list[str], value: Any) -> bool:
        """Apply one ``set`` to the cached view in place; False when the write meets another
        key's path (the view must then be rebuilt)."""
        node = self._view
        assert node is not None
        owned = self._owned
        for part in parts[:-1]:
            child = node.get(part, _MISSING)
            if child is _MISSING:
                child = {}
                owned[id(child)] = child
                node[part] = child
            elif id(child) not in owned:
                return False  # a scalar or a stored dict on the path: the nesting rules apply
            node = child
        leaf = parts[-1]
        current = node.get(leaf, _MISSING)
        if id(current) in owned:
            return False  # longer keys live below this one: they win over or merge with it
        node[leaf] = value
        return True


class StateReader:
    """A workload's read-only handle on the store: what modules receive."""

    __slots__ = ("_mode", "_store")

    def __init__(self, store: StateStore, access_mode: str = DEEP_COPY) -> None:
        self._store = store
        self._mode = _check_mode(access_mode)

    @property
    def access_mode(self) -> str:
        return self._mode

    def get(self, key: str) -> Any:
        return self._store.get(key, self._mode)

    def get_all(self) -> dict[str, Any]:
        return self._store.get_all(self._mode)
