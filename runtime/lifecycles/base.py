"""The one small interface between the kernel and its lifecycle managers.

The kernel runs ``run_once`` workloads itself, as nodes of the run's graph.  A workload with
another lifecycle becomes ready the same way (its dependencies done), and the kernel then hands
it to a **manager** (``supervise.Supervisor``, ``scheduled.Scheduler``,
``event_driven.Dispatcher``), which decides when the workload's process runs, how often, and
when the workload ends.  A manager knows nothing of the graph, the state store or the output:
it asks its ``Host`` (the kernel) for what it needs:

* ``await host.run_instance(w, record=None, ephemeral=False)``: one run of the workload's
  process (its ``when``, params, retries, register, events), returning the summary or raising
  the failure; ``record`` puts an event's fields at the top of the scope; ``ephemeral`` gives
  the run a workspace of its own, removed after it.
* ``host.update(w, **info)``: what the live view and ``--json`` show of a long-running workload
  (restarts, next attempt, last exit, next fire, instance counts).
* ``host.instance_failed(w, reason)``: one instance of a scheduled or event-driven workload
  failed; counted and logged (redacted), never the end of the workload.
* ``host.instance_ended(w, record, failed)``: an event-driven instance has ended (a request it
  left unanswered is answered 500 at once: ``gxo.runtime.request_manager``).
* ``host.inputs(w)``: the workload's input stream (an event-driven workload's source).
* ``host.inline_instances(w)`` / ``host.run_inline(w, cls, record)``: an instance of an inline
  module (pure, sync) runs right in the manager's loop, with no task, thread or workspace.
* ``host.last_fire(w)`` / ``host.set_last_fire(w, t)``: a schedule's last fire time, durable
  when the run has a durable store.
* ``host.restarts(w)`` / ``host.set_restarts(w, count, window_start)``: a supervised
  workload's restarts within its start-limit window (wall time of the first), durable with the
  run (a resumed run carries them on, so a crash loop across ``gxo`` restarts still reaches
  the start limit).
* ``host.clock``: the ``Clock`` (a ``FakeClock`` in tests); ``host.dry_run``: under
  ``--dry-run`` a manager makes one dry pass and ends (a schedule reports its next fire times),
  nothing is kept running.

``await manager.run()`` returns the workload's end as ``(status, reason)`` (``Completed`` or
``Failed``); it runs until then, or until it is cancelled: a graceful stop (SIGTERM, SIGINT)
cancels it, and a manager stops what it started (a supervised child gets SIGTERM, then SIGKILL
after ``stop_timeout``) before the cancellation propagates.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

COMPLETED, FAILED = "Completed", "Failed"

#: a supervised program's restart policy when the playbook gives none
DEFAULT_RESTART = "on_failure"
#: event_driven: instances at once when the playbook gives no ``concurrency``
DEFAULT_CONCURRENCY = 8


class Host(Protocol):
    clock: Any
    dry_run: bool

    async def run_instance(self, w: Any, record: dict[str, Any] | None = None, *,
                           ephemeral: bool = False) -> Any: ...

    def update(self, w: Any, **info: Any) -> None: ...

    def instance_failed(self, w: Any, reason: str) -> None: ...

    def instance_ended(self, w: Any, record: Any, failed: bool) -> None: ...

    def inputs(self, w: Any) -> Any: ...

    def inline_instances(self, w: Any) -> Any: ...

    def run_inline(self, w: Any, cls: Any, record: dict[str, Any] | None) -> Any: ...

    def last_fire(self, w: Any) -> float | None: ...

    def set_last_fire(self, w: Any, t: float) -> None: ...

    def restarts(self, w: Any) -> tuple[int, float] | None: ...

    def set_restarts(self, w: Any, count: int, window_start: float) -> None: ...


class Manager:
    """A lifecycle manager: ``run()`` until the workload ends (or is cancelled)."""

    policy = ""

    def __init__(self, host: Host, w: Any) -> None:
        self.host = host
        self.w = w
        self.lc = w.lifecycle

    async def run(self) -> tuple[str, str | None]:  # pragma: no cover - abstract
        raise NotImplementedError


def describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__


async def stop_all(tasks: set[asyncio.Task[Any]] | list[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until each has stopped (each stops its own children)."""
    tasks = [t for t in tasks if not t.done()]
    for t in tasks:
        t.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)


def manager_for(host: Host, w: Any) -> Manager:
    policy = w.lifecycle.policy
    if policy == "supervise":
        from gxo.runtime.lifecycles.supervise import Supervisor

        return Supervisor(host, w)
    if policy == "scheduled":
        from gxo.runtime.lifecycles.scheduled import Scheduler

        return Scheduler(host, w)
    if policy == "event_driven":
        from gxo.runtime.lifecycles.event_driven import Dispatcher

        return Dispatcher(host, w)
    raise ValueError(f"no lifecycle manager for policy '{policy}'")
