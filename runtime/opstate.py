"""Operator state: what a stateful stream operator keeps between records, owned by the kernel.

design.md §3 and §10: ``data:join`` build sides, ``data:aggregate`` windows and the data steps of
a ``stream:pipeline`` keep their state per workload behind this interface, in memory for now.
The operator does not own that memory; the kernel does, so that it can

* give every workload (and every data step of a pipeline, as a child) its own state,
* start a ``run_once`` workload on an empty state and let go of it when the workload ends
  (a join's build table is freed with the workload, not with the run),
* keep the state of a long-lived topology (an event-driven pipeline) across the events it is
  fed, and, once the durable store exists, checkpoint it (``snapshot``) and resume it after a
  restart (``restore``).

An operator gets its state with ``operator_state_of(ctx)`` and keeps it in

* **regions**: named dicts it changes in place (``state.region("build:users")[key] = rows``),
  the shape of every keyed state (hash tables, groups, matched keys);
* **cells**: named single values (``state.get("held", 0)``, ``state.set("held", n)``).

Values are plain data (maps, lists, scalars, tuples), like the records they come from:
``snapshot`` deep-copies them, and a durable backend will serialise exactly what a snapshot
holds.  Outside the kernel (unit tests, a module run by hand) ``operator_state_of`` gives the
module a private state, so operators work the same everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gxo.runtime.state import deep_copy

__all__ = ["OperatorState", "OperatorStates", "operator_state_of"]

#: the ``Context.extras`` key the kernel sets
EXTRAS_KEY = "operator_state"


class OperatorState:
    """The state of one operator (a workload, or a step of a pipeline: see ``child``)."""

    __slots__ = ("_cells", "_children", "_regions", "owner")

    def __init__(self, owner: str) -> None:
        #: who the state belongs to: a workload's name, ``"<workload>/<step>"`` for a child
        self.owner = owner
        self._regions: dict[str, dict[Any, Any]] = {}
        self._cells: dict[str, Any] = {}
        self._children: dict[str, OperatorState] = {}

    # -- what operators use -------------------------------------------------------------------

    def region(self, name: str) -> dict[Any, Any]:
        """The dict named ``name`` (created empty the first time); the operator changes it in
        place and it stays here between records, batches and (long-lived topologies) events."""
        r = self._regions.get(name)
        if r is None:
            r = self._regions[name] = {}
        return r

    def get(self, name: str, default: Any = None) -> Any:
        return self._cells.get(name, default)

    def set(self, name: str, value: Any) -> None:
        self._cells[name] = value

    def child(self, name: str) -> OperatorState:
        """The state of a part of this operator (a pipeline's data step ``name``)."""
        c = self._children.get(name)
        if c is None:
            c = self._children[name] = OperatorState(f"{self.owner}/{name}")
        return c

    # -- what the kernel uses -----------------------------------------------------------------

    def entries(self) -> int:
        """Keys held in every region and cell, children included (a size for the operator)."""
        return (sum(len(r) for r in self._regions.values()) + len(self._cells)
                + sum(c.entries() for c in self._children.values()))

    def clear(self) -> None:
        """Forget everything (children included)."""
        self._regions.clear()
        self._cells.clear()
        self._children.clear()

    def snapshot(self) -> dict[str, Any]:
        """A copy of the whole state that later changes do not touch (a checkpoint)."""
        snap: dict[str, Any] = {"regions": deep_copy(self._regions), "cells": deep_copy(self._cells)}
        if self._children:
            snap["children"] = {n: c.snapshot() for n, c in self._children.items()}
        return snap

    def restore(self, snap: Any) -> None:
        """Replace the state by ``snap`` (from ``snapshot``); a malformed one is refused whole."""
        _check_tree(snap, self.owner)
        regions, cells, children = _checked(snap, self.owner)
        self.clear()
        self._regions.update(deep_copy(regions))
        self._cells.update(deep_copy(cells))
        for name, sub in children.items():
            self.child(name).restore(sub)

    def __repr__(self) -> str:
        return f"OperatorState({self.owner!r}, {self.entries()} entries)"


def _checked(snap: Any, owner: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    if not isinstance(snap, dict) or set(snap) - {"regions", "cells", "children"}:
        raise ValueError(f"operator state of {owner}: not a snapshot (expected a map of "
                         "regions, cells and children)")
    regions, cells, children = snap.get("regions", {}), snap.get("cells", {}), snap.get("children", {})
    for what, value in (("regions", regions), ("cells", cells), ("children", children)):
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ValueError(f"operator state of {owner}: {what} must be a map with string keys")
    for name, r in regions.items():
        if not isinstance(r, dict):
            raise ValueError(f"operator state of {owner}: region {name!r} must be a map")  # noqa: TRY004
    return regions, cells, children


def _check_tree(snap: Any, owner: str) -> None:
    for name, sub in _checked(snap, owner)[2].items():
        _check_tree(sub, f"{owner}/{name}")


class OperatorStates:
    """The kernel's operator states: one ``OperatorState`` per workload."""

    def __init__(self, owners: Iterable[str] = ()) -> None:
        #: the workloads that get a state from the kernel (stream consumers, pipelines)
        self.owners: frozenset[str] = frozenset(owners)
        self._states: dict[str, OperatorState] = {}

    def of(self, workload: str) -> OperatorState:
        """``workload``'s state (created empty the first time)."""
        s = self._states.get(workload)
        if s is None:
            s = self._states[workload] = OperatorState(workload)
        return s

    def start(self, workload: str) -> OperatorState:
        """``workload``'s state, emptied: what a ``run_once`` module starts from."""
        s = self.of(workload)
        s.clear()
        return s

    def drop(self, workload: str) -> None:
        """Let go of ``workload``'s state and its loop iterations' (``workload[i]``): a
        ``run_once`` workload that ended."""
        self._states.pop(workload, None)
        prefix = workload + "["
        for name in [n for n in self._states if n.startswith(prefix)]:
            del self._states[name]

    def held(self) -> list[str]:
        """The workloads (and loop iterations) that hold a state now."""
        return sorted(self._states)

    def entries(self) -> dict[str, int]:
        """Entries held per workload, for the workloads that hold any."""
        return {name: n for name, s in sorted(self._states.items()) if (n := s.entries())}

    def snapshot(self) -> dict[str, Any]:
        return {name: s.snapshot() for name, s in sorted(self._states.items())}

    def restore(self, snaps: Any) -> None:
        if not isinstance(snaps, dict):
            raise ValueError("operator states: not a snapshot (expected a map of workloads)")  # noqa: TRY004
        for name, snap in snaps.items():
            _check_tree(snap, str(name))
        fresh: dict[str, OperatorState] = {}
        for name, snap in snaps.items():
            s = OperatorState(str(name))
            s.restore(snap)
            fresh[str(name)] = s
        self._states = fresh


def operator_state_of(ctx: Any) -> OperatorState:
    """The module's operator state: the kernel's, or a private one outside the kernel."""
    extras = ctx.extras
    s = extras.get(EXTRAS_KEY)
    if s is None:
        s = extras[EXTRAS_KEY] = OperatorState(getattr(ctx, "workload", "module"))
    return s  # type: ignore[no-any-return]
