"""The kernel's side of the durable run store: what it records at workload boundaries, and how
a resumed run starts from what an interrupted one committed.

Commit rule: **before anything with effects starts, everything that has finished is durable.**
A workload that runs as a task (it may touch the world: a program, a file, a request) commits its
end (status and register, one transaction) as soon as it ends; inline workloads (pure:
``control:identity``, ``control:assert``, ...) that end within one scheduler step are committed
together at the end of that step, or before the next task starts, whichever comes first.  A
SIGKILL at any point therefore loses no workload whose effects a later workload could have seen,
and a resumed run re-runs only what had not committed: a workload killed half-way runs again (at
least once, like any job runner), a committed one never.

A commit that holds a large register (``LARGE``) is written on the store's writer thread
(``Recorder.flush_behind``) while the run goes on, and waited for (``Recorder.flush``) before a
workload with effects starts and at the end of the run; a small one is made at once.  What may
start before it is durable has no effects: a pure module (``ModuleSpec.pure``: the ``data:*``
transforms), whose work a resumed run simply does again.  SQLite writes and syncs without
Python's lock, so a large register (a million lines of a program's output) is committed on the
other core while the records flow.  Commits keep their order: one writer.

Values are stored as the state holds them: registers are redacted before they are stored, so a
secret never reaches the database, sealed or not (``gxo.runtime.store``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gxo.runtime.support import sha256_hex

#: the statuses a resumed run does not run again
FINISHED = ("Completed", "Skipped")


def plan_digest(plan: Any) -> str:
    """The identity of a plan's content: a resumed run must have the same."""
    from gxo.runtime.plan import encode_manifest

    return sha256_hex(encode_manifest(plan))


def _derived(module: str) -> dict[str, tuple[str, Callable[[Any], Any]]]:
    from gxo.runtime.module import load_module_class

    cls = load_module_class(module)
    return getattr(cls, "derived_fields", None) or {}


def stored_register(module: str, value: Any) -> Any:
    """``value`` as the run history keeps it: without the module's derived summary fields
    (exec's ``stdout_lines`` is ``stdout`` split into lines)."""
    derived = _derived(module) if isinstance(value, dict) else None
    if derived and any(k in value for k in derived):
        return {k: v for k, v in value.items() if k not in derived}
    return value


def restored_register(module: str, value: Any) -> Any:
    """A register read back from the run history, its derived fields computed again."""
    derived = _derived(module) if isinstance(value, dict) else None
    if derived:
        for field, (source, fn) in derived.items():
            if field not in value and source in value:
                value[field] = fn(value[source])
    return value


#: a register at least this large (a string, or a string in a map at its top level; a list or
#: map of this many items) is committed on the writer thread (``Recorder.flush_behind``)
LARGE = 1 << 16


def _large(value: Any) -> bool:
    if isinstance(value, str):
        return len(value) >= LARGE
    if isinstance(value, (dict, list)):
        if len(value) >= LARGE // 16:
            return True
        items = value.values() if isinstance(value, dict) else value
        return any(isinstance(v, str) and len(v) >= LARGE for v in items)
    return False


class Recorder:
    """Buffers workload ends and commits them in one transaction per flush.

    A commit that fails (a full disk, a database removed under the run) never raises into the
    scheduler: the recorder keeps the error, stops committing and calls ``on_error(message)``,
    and the kernel stops the run (nothing more starts whose end could not be recorded)."""

    __slots__ = ("store", "run_id", "pending", "error", "on_error", "_writer", "_behind")

    def __init__(self, store: Any, run_id: str, on_error: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.run_id = run_id
        self.pending: list[tuple[Any, ...]] = []
        self.error: str | None = None
        self.on_error = on_error
        self._writer: Any = None  # a one-thread executor, made by the first flush_behind
        self._behind: Any = None  # the future of the last commit handed to it

    def ended(self, name: str, status: str, reason: str | None, register: str | None, value: Any,
              started: float | None, ended: float | None) -> None:
        self.pending.append((name, status, reason, register, value, started, ended))

    def flush(self) -> None:
        """Commit what is pending; everything that ended is durable when this returns."""
        self.wait()
        if self.pending and self.error is None:
            rows, self.pending = self.pending, []
            self._commit(rows, self.on_error)

    def flush_behind(self) -> None:
        """Hand what is pending to the writer thread and return at once (the caller starts only
        work without effects before ``flush`` or ``wait``).  Must be called from the event
        loop's thread: a failure is reported to ``on_error`` there.  A small commit (no large
        register) is made at once, in this thread, when the writer has nothing in hand: it
        takes a fraction of a millisecond, less than handing it over would."""
        if not self.pending or self.error is not None:
            return
        if (self._behind is None or self._behind.done()) and not any(_large(row[4]) for row in self.pending):
            self.flush()
            return
        import asyncio

        rows, self.pending = self.pending, []
        loop = asyncio.get_running_loop()
        report = self.on_error

        def in_loop(message: str) -> None:
            if report is not None:
                try:
                    loop.call_soon_threadsafe(report, message)
                except RuntimeError:  # the loop is closed: the run's end reads ``error``
                    pass

        if self._writer is None:
            from concurrent.futures import ThreadPoolExecutor

            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gxo-store")
        self._behind = self._writer.submit(self._commit, rows, in_loop)

    def wait(self) -> None:
        """Return once every commit handed to the writer thread is done (the writer runs them
        in order: the last one's end is all of theirs)."""
        behind, self._behind = self._behind, None
        if behind is not None:
            behind.result()

    def close(self) -> None:
        """Wait for the writer thread's commits and let the thread go."""
        self.wait()
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None

    def _commit(self, rows: list[tuple[Any, ...]], report: Callable[[str], None] | None) -> None:
        if self.error is not None:  # an earlier commit failed: the run is stopping
            return
        try:
            self.store.commit_workloads(self.run_id, rows)
        except Exception as exc:  # noqa: BLE001 - reported, and the run stops
            self.error = f"the run history could not be written: {exc}"
            if report is not None:
                report(self.error)
