"""The in-memory run store: what ``gxo`` uses when no durable store is asked for, and tests.

It keeps the values it is given by reference (the kernel hands over values it no longer
mutates, as with the state store) and hands out deep copies.  ``MemoryStore(data=other.data)``
opens a second store over the same history, which is how tests act out a process that died
and one that starts after it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from gxo.runtime.store import _owner
from gxo.runtime.store.base import (
    INTERRUPTED,
    RESUMED,
    RUNNING,
    RunRecord,
    RunSummary,
    StoreRefused,
    UnknownRun,
    WorkloadRecord,
    WorkloadRow,
)

__all__ = ["MemoryData", "MemoryStore"]

_WHERE = "the in-memory store"


def _copy(value: Any) -> Any:
    from gxo.runtime.state import deep_copy  # the kernel has it loaded; tests may not

    return deep_copy(value)


class MemoryData:
    """The history itself: shared by every ``MemoryStore`` opened over it."""

    __slots__ = ("last_fires", "lock", "operator_states", "restarts", "runs", "workloads")

    def __init__(self) -> None:
        #: run id -> [plan_name, plan_digest, started, ended, status, failures, resumed_from, owner], in begin order
        self.runs: dict[str, list[Any]] = {}
        #: run id -> workload name -> record (in commit order)
        self.workloads: dict[str, dict[str, WorkloadRecord]] = {}
        self.operator_states: dict[tuple[str, str], Any] = {}
        self.last_fires: dict[tuple[str, str], float] = {}
        self.restarts: dict[tuple[str, str], tuple[int, float]] = {}
        self.lock = threading.Lock()


class MemoryStore:
    """A ``RunStore`` held in this process's memory."""

    def __init__(self, data: MemoryData | None = None) -> None:
        self.data = data if data is not None else MemoryData()
        self._owner = _owner.new_owner()

    # -- runs -------------------------------------------------------------------------------------

    def begin_run(self, run_id: str, plan_name: str, plan_digest: str, started: float,
                  resumed_from: str | None = None) -> None:
        d = self.data
        with d.lock:
            if run_id in d.runs:
                raise StoreRefused(f"{_WHERE}: run {run_id!r} exists already")
            if resumed_from is not None:
                old = d.runs.get(resumed_from)
                if old is None:
                    raise UnknownRun(resumed_from, _WHERE)
                _check_resumable(resumed_from, old[1], old[3], old[4], old[7], plan_digest, _WHERE)
            d.runs[run_id] = [plan_name, plan_digest, started, None, None, None, resumed_from, self._owner]
            mine = d.workloads[run_id] = {}
            if resumed_from is not None:
                done = d.workloads.get(resumed_from, {})
                mine.update(done)
                for table in (d.operator_states, d.restarts):
                    for (rid, w), value in list(table.items()):
                        if rid == resumed_from:
                            table[(run_id, w)] = value  # type: ignore[index]
                old = d.runs[resumed_from]
                ends = [w.ended for w in done.values() if w.ended is not None]
                old[3] = max([old[2], *ends])
                old[4] = RESUMED
                old[5] = sum(1 for w in done.values() if w.status == "Failed")

    def commit_workload(self, run_id: str, name: str, status: str, reason: str | None,
                        register_key: str | None, register_value: Any, started: float | None,
                        ended: float | None) -> None:
        rec = WorkloadRecord(name, status, reason, register_key, register_value if register_key is not None else None,
                             started, ended)
        d = self.data
        with d.lock:
            runs = d.workloads.get(run_id)
            if runs is None:
                raise UnknownRun(run_id, _WHERE)
            runs.pop(name, None)  # a re-commit moves to the end, as in SQLite
            runs[name] = rec

    def commit_workloads(self, run_id: str, rows: Iterable[WorkloadRow]) -> None:
        recs = [WorkloadRecord(n, s, r, k, v if k is not None else None, t0, t1) for n, s, r, k, v, t0, t1 in rows]
        d = self.data
        with d.lock:
            runs = d.workloads.get(run_id)
            if runs is None:
                raise UnknownRun(run_id, _WHERE)
            for rec in recs:
                runs.pop(rec.name, None)
                runs[rec.name] = rec

    def end_run(self, run_id: str, status: str, ended: float, failures: int) -> None:
        with self.data.lock:
            run = self._run(run_id)
            run[3], run[4], run[5] = ended, status, failures

    def load_run(self, run_id: str) -> RunRecord:
        d = self.data
        with d.lock:
            run = self._run(run_id)
            s = self._summary(run_id, run)
            workloads = {n: WorkloadRecord(w.name, w.status, w.reason, w.register_key, _copy(w.register_value),
                                           w.started, w.ended)
                         for n, w in d.workloads[run_id].items()}
        return RunRecord(run_id, s.plan_name, run[1], s.status, s.started, s.ended, s.failures, s.resumed_from,
                         workloads)

    def latest_run(self, plan_name: str) -> str | None:
        with self.data.lock:
            for run_id, run in reversed(self.data.runs.items()):
                if run[0] == plan_name:
                    return run_id
        return None

    def interrupted_run(self, plan_name: str) -> str | None:
        with self.data.lock:
            for run_id, run in reversed(self.data.runs.items()):
                if run[0] != plan_name:
                    continue
                if run[3] is not None:
                    return None
                if not _owner.alive(run[7]):
                    return run_id
        return None

    def list_runs(self) -> list[RunSummary]:
        with self.data.lock:
            runs = [self._summary(run_id, run) for run_id, run in self.data.runs.items()]
        runs.reverse()
        runs.sort(key=lambda s: -s.started)  # stable: equal starts stay newest first
        return runs

    def prune_runs(self, plan_name: str, keep: int | None = None, ended_before: float | None = None,
                   *, dry_run: bool = False) -> list[str]:
        d = self.data
        with d.lock:
            ended = [(run[2], i, run_id, run[3]) for i, (run_id, run) in enumerate(d.runs.items())
                     if run[0] == plan_name and run[3] is not None]
            ended.sort(reverse=True)  # newest first, as list_runs orders them
            gone = [run_id for n, (_s, _i, run_id, end) in enumerate(ended)
                    if (keep is not None and n >= keep) or (ended_before is not None and end < ended_before)]
            gone.reverse()
            if not dry_run:
                drop = set(gone)
                for run_id in gone:
                    del d.runs[run_id]
                    d.workloads.pop(run_id, None)
                for table in (d.operator_states, d.restarts):
                    for key in [k for k in table if k[0] in drop]:
                        del table[key]
        return gone

    # -- operator state, schedules, restarts ------------------------------------------------------

    def save_operator_state(self, run_id: str, workload: str, snapshot: Any) -> None:
        with self.data.lock:
            self._run(run_id)
            self.data.operator_states[(run_id, workload)] = snapshot

    def load_operator_state(self, run_id: str, workload: str) -> Any:
        with self.data.lock:
            return _copy(self.data.operator_states.get((run_id, workload)))

    def set_last_fire(self, plan_name: str, workload: str, t: float) -> None:
        with self.data.lock:
            self.data.last_fires[(plan_name, workload)] = t

    def last_fire(self, plan_name: str, workload: str) -> float | None:
        with self.data.lock:
            return self.data.last_fires.get((plan_name, workload))

    def set_restarts(self, run_id: str, workload: str, count: int, window_start: float) -> None:
        with self.data.lock:
            self._run(run_id)
            self.data.restarts[(run_id, workload)] = (count, window_start)

    def restarts(self, run_id: str, workload: str) -> tuple[int, float] | None:
        with self.data.lock:
            return self.data.restarts.get((run_id, workload))

    def close(self) -> None:
        _owner.release(self._owner)

    # -- helpers ----------------------------------------------------------------------------------

    def _run(self, run_id: str) -> list[Any]:
        run = self.data.runs.get(run_id)
        if run is None:
            raise UnknownRun(run_id, _WHERE)
        return run

    def _summary(self, run_id: str, run: list[Any]) -> RunSummary:
        plan_name, _digest, started, ended, status, failures, resumed_from, owner = run
        if ended is None:
            status = RUNNING if _owner.alive(owner) else INTERRUPTED
            failures = sum(1 for w in self.data.workloads[run_id].values() if w.status == "Failed")
        return RunSummary(run_id, plan_name, status, started, ended, failures, resumed_from)


def _check_resumable(run_id: str, old_digest: str, ended: float | None, status: str | None, owner: str | None,
                     plan_digest: str, where: str) -> None:
    """Refuse to resume a run that ended, that is still running or that ran another plan."""
    if ended is not None:
        raise StoreRefused(f"{where}: run {run_id} is not interrupted (it ended {status}); "
                           "only an interrupted run can be resumed")
    if _owner.alive(owner):
        raise StoreRefused(f"{where}: run {run_id} is still running")
    if old_digest != plan_digest:
        raise StoreRefused(f"{where}: run {run_id} ran a different plan (digest {old_digest[:16]}, "
                           f"this plan's is {plan_digest[:16]}): it can be resumed only with the plan it ran")
