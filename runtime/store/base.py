"""The run-history store's interface: what the kernel commits at workload boundaries.

A ``RunStore`` keeps, per plan identity, the history of its runs: when each started and ended,
the digest of the plan it ran, and for every workload that finished its status, reason and
registered value (``commit_workload``), plus operator-state snapshots, restart counters and
schedule last-fire times.  Two backends: ``MemoryStore`` (what runs when no durable store is
asked for, and tests) and ``SqliteStore`` (durable, optionally sealed).

The contract the kernel relies on:

* ``commit_workload`` (``commit_workloads`` for several) is one transaction: status, reason and
  register land together.  Once it returns, the row survives a SIGKILL of the process (the
  SQLite backend also survives a power loss: ``synchronous=FULL``); before it returns, the
  workload is not in the store at all, so a resumed run runs it again.  Commit a workload after
  its side effects, never before.
* **Values are stored as given, so pass them redacted.**  The store never sees the secrets
  tracker; the kernel hands it registers, reasons and snapshots already passed through
  ``Tracker.redact_value`` / ``Tracker.redact``, exactly what it prints.  A secret therefore
  never reaches the disk, sealed or not (design.md section 10: redaction covers state).
* Values are JSON data (maps with string keys, lists, strings, numbers, booleans, null); the
  durable backend stores them as JSON text, so a tuple comes back as a list.  A value JSON
  cannot hold is refused with ``StoreError`` naming the workload.
* A run with no ``end_run`` whose process is gone (killed, or a store closed without ending
  the run: a stopped ``gxo exec``) is *interrupted*; ``interrupted_run`` finds it and
  ``begin_run(..., resumed_from=it)`` continues it (see ``begin_run``).
* Every error is a ``StoreError`` with a one-line message naming the database file; refusals
  (a wrong or missing key, a newer schema, a different plan digest, a tampered value) are
  ``StoreRefused``, which ``gxo`` maps to exit 3.  An unknown run id is ``UnknownRun``.

This module imports nothing beyond ``typing``: ``gxo exec`` loads it on every start.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

#: one workload for ``commit_workloads``: (name, status, reason, register_key, register_value,
#: started, ended)
WorkloadRow = tuple[str, str, "str | None", "str | None", Any, "float | None", "float | None"]

__all__ = [
    "INTERRUPTED",
    "RESUMED",
    "RUNNING",
    "RunRecord",
    "RunStore",
    "RunSummary",
    "StoreError",
    "StoreRefused",
    "UnknownRun",
    "WorkloadRecord",
    "WorkloadRow",
]

#: the status of a run that has not ended and whose process still holds it
RUNNING = "Running"
#: the status of a run that has not ended and whose process is gone (killed or stopped)
INTERRUPTED = "Interrupted"
#: the status of an interrupted run that a later run continued (``begin_run(resumed_from=...)``)
RESUMED = "Resumed"


class StoreError(Exception):
    """The store cannot do what was asked (an unreadable or corrupt database, a value JSON
    cannot hold); the message is one line and names the file."""


class StoreRefused(StoreError):
    """A refusal (``gxo`` exit 3): a wrong or missing key, a malformed key, a database of a newer
    schema, a resumed run of a different plan, a value that fails authentication."""


class UnknownRun(StoreError, LookupError):
    """A run id the store does not hold."""

    def __init__(self, run_id: str, where: str) -> None:
        super().__init__(f"no run {run_id!r} in {where}")
        self.run_id = run_id


class WorkloadRecord:
    """One committed workload of a run."""

    __slots__ = ("ended", "name", "reason", "register_key", "register_value", "started", "status")

    def __init__(self, name: str, status: str, reason: str | None, register_key: str | None,
                 register_value: Any, started: float | None, ended: float | None) -> None:
        self.name = name  #: the workload's name (``w`` or a loop iteration ``w[3]``)
        self.status = status  #: its final status string (``Completed``, ``Failed``, ``Skipped``, ...)
        self.reason = reason  #: why it ended so (redacted), or None
        self.register_key = register_key  #: the state key it registered, or None
        self.register_value = register_value  #: the registered value (redacted); None without a key
        self.started = started  #: wall-clock seconds (``time.time()``), or None if it never started
        self.ended = ended  #: wall-clock seconds

    @property
    def duration(self) -> float | None:
        return None if self.started is None or self.ended is None else max(0.0, self.ended - self.started)

    def _key(self) -> tuple[Any, ...]:
        return (self.name, self.status, self.reason, self.register_key, self.register_value, self.started, self.ended)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WorkloadRecord) and self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"WorkloadRecord({self.name!r}, {self.status!r}, reason={self.reason!r})"


class RunSummary:
    """One line of ``gxo runs``."""

    __slots__ = ("ended", "failures", "plan_name", "resumed_from", "run_id", "started", "status")

    def __init__(self, run_id: str, plan_name: str, status: str, started: float, ended: float | None,
                 failures: int, resumed_from: str | None) -> None:
        self.run_id = run_id
        self.plan_name = plan_name
        #: ``end_run``'s status, else ``Running`` / ``Interrupted``, or ``Resumed`` once continued
        self.status = status
        self.started = started  #: wall-clock seconds
        self.ended = ended  #: wall-clock seconds, None while running or when interrupted
        #: ``end_run``'s count; for a run without an end, the Failed workloads committed so far
        self.failures = failures
        self.resumed_from = resumed_from  #: the interrupted run this one continues, or None

    @property
    def duration(self) -> float | None:
        return None if self.ended is None else max(0.0, self.ended - self.started)

    def as_json(self) -> dict[str, Any]:
        return {"id": self.run_id, "plan": self.plan_name, "status": self.status, "started": self.started,
                "ended": self.ended, "duration": self.duration, "failures": self.failures,
                "resumed_from": self.resumed_from}

    def __repr__(self) -> str:
        return f"RunSummary({self.run_id!r}, {self.plan_name!r}, {self.status!r})"


class RunRecord(RunSummary):
    """A run with its plan digest and its committed workloads (``load_run``)."""

    __slots__ = ("plan_digest", "workloads")

    def __init__(self, run_id: str, plan_name: str, plan_digest: str, status: str, started: float,
                 ended: float | None, failures: int, resumed_from: str | None,
                 workloads: dict[str, WorkloadRecord]) -> None:
        super().__init__(run_id, plan_name, status, started, ended, failures, resumed_from)
        self.plan_digest = plan_digest  #: the digest of the plan the run ran (``begin_run``)
        self.workloads = workloads  #: name -> record, in commit order

    @property
    def finished(self) -> bool:
        """Whether the run has an end (``end_run``, or ``Resumed`` by a later run)."""
        return self.ended is not None

    @property
    def statuses(self) -> dict[str, str]:
        return {n: w.status for n, w in self.workloads.items()}

    @property
    def reasons(self) -> dict[str, str | None]:
        return {n: w.reason for n, w in self.workloads.items()}

    @property
    def registers(self) -> dict[str, Any]:
        """register key -> value, for the workloads that registered one."""
        return {w.register_key: w.register_value for w in self.workloads.values() if w.register_key is not None}


class RunStore(Protocol):
    """What the kernel calls.  Times are wall-clock seconds (``time.time()``)."""

    def begin_run(self, run_id: str, plan_name: str, plan_digest: str, started: float,
                  resumed_from: str | None = None) -> None:
        """Record a new run.  With ``resumed_from`` (an interrupted run of the same plan), in the
        same transaction: the old run's committed workloads, operator states and restart counters
        are copied into the new run, and the old run ends as ``Resumed``, so ``load_run(run_id)``
        holds what is already done and the old run is no longer interrupted.  ``StoreRefused``
        when the old run's plan digest is not ``plan_digest`` or it has already ended;
        ``UnknownRun`` when there is no such run."""
        ...

    def commit_workload(self, run_id: str, name: str, status: str, reason: str | None,
                        register_key: str | None, register_value: Any, started: float | None,
                        ended: float | None) -> None:
        """Commit one finished workload (status and register together, atomically and durably);
        a second commit of the same name replaces the first."""
        ...

    def commit_workloads(self, run_id: str, rows: Iterable[WorkloadRow]) -> None:
        """Commit several finished workloads in one transaction (all or none): each row is
        ``(name, status, reason, register_key, register_value, started, ended)``, the arguments of
        ``commit_workload``.  One fsync for the lot: the kernel flushes the inline workloads that
        ended within one scheduler step this way (``gxo.runtime.durable``)."""
        ...

    def end_run(self, run_id: str, status: str, ended: float, failures: int) -> None:
        """Give the run its end: its final status (``COMPLETED``, ``FAILED``, ...) and failures."""
        ...

    def load_run(self, run_id: str) -> RunRecord:
        """The run and its committed workloads; ``UnknownRun`` when there is none."""
        ...

    def latest_run(self, plan_name: str) -> str | None:
        """The id of the plan's most recent run, or None."""
        ...

    def interrupted_run(self, plan_name: str) -> str | None:
        """The id of the plan's most recent run that has no end and whose process is gone, when
        no run has ended since (a run that ended after it means it was left behind); else None."""
        ...

    def list_runs(self) -> list[RunSummary]:
        """Every run, newest first."""
        ...

    def prune_runs(self, plan_name: str, keep: int | None = None, ended_before: float | None = None,
                   *, dry_run: bool = False) -> list[str]:
        """Remove ended runs of ``plan_name`` with everything recorded for them (workloads,
        operator states, restart counters), in one transaction: those past the newest ``keep``
        ended runs, and those that ended before ``ended_before``.  A run that has not ended
        (running, or interrupted and so resumable) is never removed, and neither is the plan's
        schedule.  Returns the ids removed (or, with ``dry_run``, that would be), oldest first."""
        ...

    def save_operator_state(self, run_id: str, workload: str, snapshot: Any) -> None:
        """Keep ``OperatorState.snapshot()`` of ``workload`` (replaces the previous one)."""
        ...

    def load_operator_state(self, run_id: str, workload: str) -> Any:
        """The last saved snapshot, or None."""
        ...

    def set_last_fire(self, plan_name: str, workload: str, t: float) -> None:
        """When a scheduled workload last fired (kept across runs)."""
        ...

    def last_fire(self, plan_name: str, workload: str) -> float | None:
        ...

    def set_restarts(self, run_id: str, workload: str, count: int, window_start: float) -> None:
        """A supervised workload's restart counter within its current start-limit window."""
        ...

    def restarts(self, run_id: str, workload: str) -> tuple[int, float] | None:
        """``(count, window_start)``, or None when nothing was recorded."""
        ...

    def close(self) -> None:
        """Release the store; a run begun here and not ended becomes interrupted."""
        ...
