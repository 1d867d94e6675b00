"""The run_once kernel: a precomputed DAG scheduled on one asyncio loop.

The plan carries every workload's dependencies, so scheduling is counting: a workload is
ready when its in-degree reaches zero; ready workloads whose module is ``inline`` (pure and
bounded) run right in the scheduler step, the others get one Task each, at most
``max_concurrency`` at once.  Each instance follows the sequence of the reference checklist
(section 2.3): ``when`` → ``loop`` → render params → retry(perform) under ``timeout`` →
``register`` (redacted, with ``failed``/``error``) → status.  A failure that is not ignored
halts the run: running workloads are cancelled, the rest stay Pending, and the failed
workload's ``on_failure`` handlers run before the run ends.  An ignored failure skips its
transitive dependents, except those that opted in to it (the plan's ``failure_watch``, and its
handlers): for them it counts as an end.  Nothing here imports the compiler.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import operator
import os
import random
import time
from typing import Any, Callable

from msgspec import Struct, field

from gxo.runtime._records_cy import RecordFn
from gxo.runtime.events import EVERY, Events
from gxo.runtime.exprlib import EvalError, text, truthy
from gxo.runtime.module import Context, GxoError, ModuleError, load_module_class
from gxo.runtime.guard import WORKLOAD, Overrun, in_thread
from gxo.runtime.opstate import EXTRAS_KEY as OPSTATE_KEY
from gxo.runtime.opstate import OperatorState, OperatorStates
from gxo.runtime.plan import Expression, Plan, Workload, expr_id
from gxo.runtime.state import UNSAFE_DIRECT_REFERENCE, KeyNotFound, deep_copy
from gxo.runtime.store import new_run_id

PENDING, RUNNING, COMPLETED, FAILED, SKIPPED = "Pending", "Running", "Completed", "Failed", "Skipped"


def default_concurrency() -> int:
    return max(8, 4 * (os.cpu_count() or 1))


class Result(Struct):
    """The outcome of one workload."""

    name: str
    status: str = PENDING
    reason: str | None = None  # why it failed, was skipped or did not run
    ignored: bool = False
    changed: bool = False
    started: float | None = None
    ended: float | None = None
    attempts: int = 0
    record_errors: int = 0  # per-record errors reported by a stream module
    cancelled: bool = False  # Failed because the run stopped (a halt, a signal, the deadline)

    @property
    def duration(self) -> float:
        if self.started is None or self.ended is None:
            return 0.0
        return self.ended - self.started


class Report(Struct):
    name: str
    run_id: str
    results: dict[str, Result]
    started: float
    ended: float = 0.0
    halted_by: str | None = None
    interrupted: int | None = None  # signal number that stopped the run
    timed_out: bool = False
    streams: list[dict[str, Any]] = field(default_factory=list)  # records in/out/dropped per link
    resumed: tuple[str, int] | None = None  # (the interrupted run continued, its workloads restored)
    error: str | None = None  # what stopped the run besides a workload (the run store failed)

    def __repr__(self) -> str:
        # short: asyncio formats the run task, and with it its result, when the run ends (in
        # asyncio.run's check of the SIGINT handler); a field-by-field repr would write every
        # workload's result, 9 % of a 10,000-workload run (bench/kernel.py --instructions)
        return f"<Report {self.name} run {self.run_id}: {len(self.results)} workload(s)>"

    @property
    def failed(self) -> bool:
        return self.halted_by is not None or self.error is not None or \
            any(r.status == FAILED and not r.ignored for r in self.results.values())


_status_of = operator.attrgetter("status")


class _Halt(Exception):
    pass


class ExprContext:
    """What compiled expressions call back into: secrets (tainted), env, now."""

    __slots__ = ("_secrets", "_tracker")

    def __init__(self, secrets: Any, tracker: Any) -> None:
        self._secrets = secrets
        self._tracker = tracker

    def secret(self, name: str) -> str:
        from gxo.runtime.secrets import SecretNotFound

        try:
            value = self._secrets.get(name)
        except SecretNotFound as exc:
            raise EvalError(str(exc)) from None
        self._tracker.add(value)
        return value

    def taint(self, value: Any) -> None:
        """A template action computed from a secret (generated code calls it): tracked too."""
        self._tracker.add_derived(value)

    def env(self, name: str) -> str:
        return os.environ.get(name, "")

    def now(self) -> Any:
        import datetime

        return datetime.datetime.now(datetime.timezone.utc)


class RunOptions(Struct):
    vars: dict[str, Any] = field(default_factory=dict)  # --var / --vars-file overrides
    dry_run: bool = False
    max_concurrency: int | None = None
    plan_dir: str = "."
    allowed_paths: tuple[str, ...] = ()  # gxo run|exec --allow-path
    show_params: bool = False  # ModuleExecutionStart carries the rendered params (gxo -vv)
    clock: Any = None  # the lifecycle managers' clock (gxo.runtime.lifecycles.clock); None: the real one
    store: Any = None  # the durable run store (gxo.runtime.store); None: nothing outlives the process
    resume_from: str | None = None  # an interrupted run of this plan (in ``store``) to continue
    plan_digest: str = ""  # the plan's identity for the store (gxo.runtime.durable.plan_digest)


class Kernel:
    def __init__(
        self,
        plan: Plan,
        functions: dict[str, Callable[[Any, Any], Any]],
        *,
        state: Any,
        workspace: Any,
        secrets: Any,
        tracker: Any,
        events: Events,
        options: RunOptions,
    ) -> None:
        # Every scheduling step reads these attributes.  Keep the instance under 30 of them:
        # CPython 3.11 stops sharing an instance's keys near that size, and the 30th made each
        # step of bench/kernel.py's chain about 0.25 us slower.
        self.plan = plan
        self.fns = functions
        self.exprs: dict[str, Expression] = {e.id: e for e in plan.expressions}
        self.state = state
        self.workspace = workspace
        self.tracker = tracker
        self.ectx = ExprContext(secrets, tracker)
        if any(e.secret for e in plan.expressions):
            from gxo.runtime.secrets import track_plan_secrets

            # before any workload runs: one that prints its environment first shows them hidden
            track_plan_secrets(plan, secrets, tracker)
        self.events = events
        self.opts = options
        self.by_name = {w.name: w for w in plan.workloads}
        self.deferred = _deferred_expressions(plan)
        self.wiring: Any = None
        self.record_exprs: dict[str, bool] = {}  # per-record expression id -> sees the state too
        self.extras: dict[str, dict[str, Any]] = {}
        #: the stateful stream operators' state, per workload (design.md section 3): the
        #: workloads that read streams or run a pipeline get theirs from the kernel
        self.operator_states = OperatorStates({c.consumer for c in plan.channels} | {
            w.name for w in plan.workloads if w.module == "stream:pipeline"})
        if plan.channels or any(w.module == "stream:pipeline" for w in plan.workloads):
            from gxo.runtime.wiring import StreamWiring

            self.wiring = StreamWiring(plan, events)
            self.record_exprs = _record_expressions(plan)
        self.react = _Reactions(plan, self.wiring, options.dry_run)
        if any(w.lifecycle.policy != "run_once" for w in plan.workloads):
            from gxo.runtime.lifecycles.host import Lifecycles

            self.react.lc = Lifecycles(self, options.clock, options.store)
        self.fns = _track_tainted(plan, self.fns, self.record_exprs, tracker)
        # render() builds fresh containers from the IR; only values that expressions read from
        # the state can alias it, so only params with expressions are copied (deep_copy mode);
        # params without any read no state at all
        self.param_exprs = _param_expressions(plan)
        self.inline_cls = self._inline_classes()
        self.results = {w.name: Result(w.name) for w in plan.workloads}
        self.limit = asyncio.Semaphore(options.max_concurrency or plan.max_concurrency or default_concurrency())
        self.tasks: dict[str, asyncio.Task] = {}
        self.cleanups: list[Callable[[], Any]] = []
        self.unread: dict[str, frozenset[str]] = {}  # workload -> Context.unread (_unread_of)
        self.lean_registers: dict[str, str] = {}  # register -> module: kept without derived fields
        self.pure: dict[str, bool] = {}  # module -> whether it has no effects (_pure)
        self.halted_by: str | None = None
        #: why the run is being stopped from outside (a signal, the run's deadline), set by the
        #: driver before it cancels the run: the reason given to the workloads it cancels
        self.stop_reason: str | None = None
        self.guard: Any = None  # gxo.runtime.guard.Guard of the run: workload deadlines on a busy loop
        self.report = Report(plan.name, new_run_id(time.time()), self.results, time.time())
        self._done: asyncio.Event | None = None
        self._remaining = 0

    @property
    def run_id(self) -> str:
        # kept on the report: one attribute fewer on the kernel (see the note in __init__)
        return self.report.run_id

    # -- set-up ---------------------------------------------------------------------------------

    def _seed_state(self) -> None:
        scope: dict[str, Any] = {}
        for key, value in (self.plan.vars or {}).items():
            if key in self.opts.vars:
                scope[key] = self.opts.vars[key]
            else:
                scope[key] = self.render(value, scope)
        # `_gxo` is one live mapping owned by the kernel: status changes update it in place, so
        # they never invalidate the store's cached view (readers that copy still get copies)
        self.status_map: dict[str, dict[str, str]] = {w.name: {"status": PENDING} for w in self.plan.workloads}
        scope["_gxo"] = {
            "workloads": self.status_map,
            "workspace": {"path": self.workspace.path},
            "plan_dir": self.opts.plan_dir,  # the folder holding the .gxp (the playbook's for gxo run)
            "playbook": {"id": self.run_id, "name": self.plan.name},
            "run": {"id": self.run_id},
        }
        self.state.load(scope)

    def _set_status(self, name: str, status: str, *, emit: bool = True) -> None:
        res = self.results[name]
        old = res.status
        res.status = status
        self.status_map[name]["status"] = status
        if emit and "WorkloadStatusChanged" in self.events.wanted:
            self.events.emit("WorkloadStatusChanged", workload=name, old_status=old, new_status=status)

    # -- rendering ------------------------------------------------------------------------------

    def call(self, eid: str, scope: Any) -> Any:
        if eid in self.record_exprs:
            # a per-record template of a stream module: called once per record, with the
            # record's fields at the top (join keys: over the state)
            # the compiled function itself, no text conversion: the module takes the value as it
            # is (a data:map template builds its record directly)
            # (a template of one field returns the field's value: the RecordFn names the field)
            return RecordFn(self.fns[eid], self.ectx, scope if self.record_exprs[eid] else None,
                            self.exprs[eid].column)
        if eid in self.deferred:
            # a per-result condition (http:request success_when): the module calls it with the
            # result's fields laid over the state
            return lambda result, _e=eid, _s=scope: self.call_deferred(_e, {**_s, **result})
        return self.call_now(eid, scope)

    def call_deferred(self, eid: str, scope: Any) -> Any:
        try:
            return self.call_now(eid, scope)
        except EvalError as exc:  # name the expression's place in the playbook
            raise EvalError(f"{self.where(eid)}: {exc}") from None

    def call_now(self, eid: str, scope: Any) -> Any:
        value = self.fns[eid](scope, self.ectx)
        if self.exprs[eid].as_text and not isinstance(value, str):
            value = text(value)
        return value

    def render(self, ir: Any, scope: Any) -> Any:
        """Params IR to values: ``{"$expr": id}`` is evaluated, ``{"$lit": v}`` unwrapped."""
        if isinstance(ir, dict):
            if not ir:
                return {}
            if len(ir) == 1:
                if "$expr" in ir:
                    eid = ir["$expr"]
                    try:
                        return self.call(eid, scope)
                    except EvalError as exc:  # name the expression's place in the playbook
                        raise EvalError(f"{self.where(eid)}: {exc}") from None
                if "$lit" in ir:  # a literal one-key map whose key is "$expr"/"$lit"; its values are IR
                    return {k: self.render(v, scope) for k, v in ir["$lit"].items()}
            return {k: self.render(v, scope) for k, v in ir.items()}
        if isinstance(ir, list):
            return [self.render(v, scope) for v in ir]
        return ir

    def where(self, eid: str) -> str:
        e = self.exprs.get(eid)
        return f"{e.span} ({e.where})" if e else eid

    # -- scheduling -----------------------------------------------------------------------------

    async def run(self) -> Report:
        report = self.report
        report.started = time.time()
        self._seed_state()
        self.events.emit("PlaybookStart", playbook_name=self.plan.name, run_id=self.run_id)
        done: dict[str, Any] = {}
        if self.opts.store is not None:
            try:
                done = self._begin_durable()
            except Exception as exc:  # noqa: BLE001 - nothing runs whose end could not be recorded
                self.react.rec = None
                self.report.error = self.stop_reason = f"the run history could not be written: {exc}"
        if done:  # a resumed run: what the interrupted one committed counts as finished
            indeg = {w.name: sum(1 for d in w.deps if d not in done) for w in self.plan.workloads if w.name not in done}
        else:
            indeg = {w.name: len(w.deps) for w in self.plan.workloads}
        if self.report.error is not None:
            indeg = {}
        self._done = asyncio.Event()
        self._remaining = len(indeg)
        self._indeg = indeg
        ready = [w for w in self.plan.workloads if indeg.get(w.name) == 0]
        progress = None
        if self.wiring is not None and self.wiring.links and self.events.sinks:
            progress = asyncio.get_running_loop().create_task(self._stream_progress())
        try:
            if not ready and self._remaining:
                raise GxoError("no workload can start: the plan's dependencies are inconsistent")
            self._dispatch(ready)
            if self._remaining:
                await self._done.wait()
        finally:
            if progress is not None:
                progress.cancel()
            await self._shutdown()
            report.halted_by = self.halted_by
            report.ended = time.time()
            self._emit_end(report)
            if self.react.rec is not None:
                self._end_durable(report)
        return report

    def _begin_durable(self) -> dict[str, Any]:
        """Record the run in the durable store; for a resumed run, restore what the interrupted
        one committed (statuses, registers) and return those finished workloads by name."""
        from gxo.runtime.durable import FINISHED, Recorder, restored_register

        store, report = self.opts.store, self.report
        store.begin_run(self.run_id, self.plan.name, self.opts.plan_digest, report.started,
                        resumed_from=self.opts.resume_from)
        self.react.rec = Recorder(store, self.run_id, self._store_failed)
        if self.opts.resume_from is None:
            return {}
        done = {}
        for name, wr in store.load_run(self.run_id).workloads.items():
            if wr.status not in FINISHED or name not in self.results:
                continue
            done[name] = wr
            res = self.results[name]
            res.status, res.reason, res.started, res.ended = wr.status, wr.reason, wr.started, wr.ended
            self.status_map[name]["status"] = wr.status
            if wr.register_key is not None:
                self.state.set(wr.register_key, restored_register(self.by_name[name].module, wr.register_value))
            self.events.emit("WorkloadEnd", workload=name, final_status=wr.status, error=wr.reason, ignored=False,
                             cancelled=False, duration_ms=int((wr.duration or 0) * 1000),
                             restored_from=self.opts.resume_from)
        report.resumed = (self.opts.resume_from, len(done))
        return done

    def _store_failed(self, message: str) -> None:
        """A commit failed: stop the run as a signal would (what runs is cancelled, nothing more
        starts), with the store's error as the reason; the run fails."""
        self.report.error = message
        if self.stop_reason is None:
            self.stop_reason = message
        me = asyncio.current_task()
        for task in self.tasks.values():
            if task is not me and not task.done():
                task.cancel()
        for res in self.results.values():
            if res.status == PENDING:
                res.reason = message
        if self._done is not None:
            self._done.set()

    def _end_durable(self, report: Report) -> None:
        """Commit what is pending; a run that reached its end gets it (a run stopped from outside
        stays interrupted, so that ``--resume`` can continue it)."""
        rec = self.react.rec
        try:
            rec.flush()
        finally:
            rec.close()
        if rec.error is not None:
            return
        graceful = self.react.lc is not None and self.react.lc.stopped_by is not None
        if self.stop_reason is None or graceful:
            failures = sum(1 for r in self.results.values() if r.status == FAILED and not r.ignored)
            rec.store.end_run(self.run_id, "Failed" if report.failed else "Completed", report.ended, failures)

    async def _stream_progress(self, every: float = 0.5) -> None:
        """``StreamProgress`` events with the per-link counters, for the live view's rates, and
        the entries each stateful operator holds (join tables, open windows)."""
        while True:
            await asyncio.sleep(every)
            self.events.emit("StreamProgress", streams=self.wiring.counters(),
                             operator_state=self.operator_states.entries())

    def _emit_end(self, report: Report) -> None:
        """``PlaybookEnd`` with the totals of checklist 2.16 (workloads never started count as
        ``pending``) and the cause of a failed or stopped run."""
        results = self.results.values()
        # counted in C, no bytecode per workload: the statuses are the module's own strings
        statuses = list(map(_status_of, results))
        n_failed = statuses.count(FAILED)
        counts = {"completed": statuses.count(COMPLETED), "failed": 0, "ignored": 0, "cancelled": 0,
                  "skipped": statuses.count(SKIPPED), "pending": 0}
        counts["pending"] = len(statuses) - counts["completed"] - counts["skipped"] - n_failed
        graceful = self.react.lc is not None and self.react.lc.stopped_by is not None  # long-running, stopped
        # report.failed, without a second pass
        failed = self.halted_by is not None or (self.stop_reason is not None and not graceful)
        if n_failed:
            for res in results:
                if res.status == FAILED:
                    counts["cancelled" if res.cancelled else "ignored" if res.ignored else "failed"] += 1
                    failed = failed or not res.ignored
        error = None
        if self.halted_by is not None:
            error = f"run halted by {self.halted_by}: {self.results[self.halted_by].reason}"
        elif self.stop_reason is not None and not graceful:
            error = self.stop_reason
        self.events.emit("PlaybookEnd", playbook_name=self.plan.name, status="Failed" if failed else "Completed",
                         duration_ms=int((report.ended - report.started) * 1000), total_workloads=len(self.results),
                         error_message=error, streams=report.streams, **counts)

    def _dispatch(self, ready: list[Workload]) -> None:
        """Run what is ready: inline workloads right here, the others as one task each.

        A *plain* inline workload (literal params, no when, no register, no stream, no operator
        state: a no-op step of a chain, say) runs fused into this loop, with the steps of
        ``_run_inline``, ``_succeed`` and ``_finish`` written out: the same statuses, events
        (built only when a sink takes them) and order, without five calls per workload."""
        stack = list(reversed(ready))
        pop = stack.pop
        push = stack.append
        inline = self.inline_cls
        results = self.results
        status_map = self.status_map
        events = self.events
        react = self.react
        by_name = self.by_name
        indeg = self._indeg
        now = time.time
        # `while True`, not `while stack`: CPython 3.11 specializes a function's bytecode after a
        # few calls or unconditional backward jumps, and a `while stack:` loop jumps back only
        # conditionally, so a chain (one call of this method, no `continue`) ran unspecialized,
        # at about 1.5x the instructions per workload
        while True:
            if not stack:
                break
            w = pop()
            name = w.name
            if self.halted_by is not None and name not in react.rescuing:
                continue
            entry = inline.get(name)
            if entry is None:
                if w.lifecycle.policy != "run_once":  # a manager keeps it (gxo.runtime.lifecycles)
                    from gxo.runtime.lifecycles.host import drive

                    self.tasks[name] = react.lc.tasks[name] = \
                        asyncio.get_running_loop().create_task(drive(self, w), name=name)
                elif name in react.handles and name not in react.fired:
                    # every workload it handles ended without failing: the handler is not needed
                    res = results[name]
                    res.started = res.ended = now()
                    stack.extend(reversed(self._finish(w, SKIPPED, "not needed")))
                else:
                    if react.rec is not None:
                        if self._pure(w):  # no effects: its start need not wait for the commit
                            react.rec.flush_behind()
                        else:  # what ended before (inline workloads, the last task) is durable first
                            react.rec.flush()
                    self.tasks[name] = asyncio.get_running_loop().create_task(self._run_task(w), name=name)
                continue
            cls, plain = entry
            if not plain:
                newly = self._run_inline(w, cls())
                if newly:
                    stack.extend(reversed(newly))
                continue
            # -- a plain inline workload: _run_inline, _succeed and _finish, fused ------------------
            res = results[name]
            res.started = now()
            res.status = RUNNING
            status = status_map[name]
            status["status"] = RUNNING
            # no sink, no event: one test per workload (``wanted`` is empty then)
            wanted = events.wanted if events.sinks else None
            if wanted is not None and "WorkloadStatusChanged" in wanted:
                events.emit("WorkloadStatusChanged", workload=name, old_status=PENDING, new_status=RUNNING)
            try:
                params = w.params
                params = {} if params.__class__ is dict and not params else self.render(params, None)
                res.attempts = 1
                if wanted is not None and "ModuleExecutionStart" in wanted:
                    events.emit("ModuleExecutionStart", workload=name, loop_iteration=None,
                                **({"params": params} if self.opts.show_params else {}))
                summary = cls().perform(_LazyContext(self, w), params)
            except Exception as exc:  # noqa: BLE001 - every failure becomes the workload's status
                newly = self._fail(w, exc)
                if newly:
                    stack.extend(reversed(newly))
                continue
            if wanted is not None and "ModuleExecutionEnd" in wanted:
                events.emit("ModuleExecutionEnd", workload=name, loop_iteration=None, summary=summary)
            kind = summary.__class__
            if kind is dict:
                if summary.get("changed") is True:
                    res.changed = True
            elif (kind is list or isinstance(summary, (dict, list))) and _changed(summary):
                res.changed = True
            res.ended = now()
            res.reason = None
            res.status = COMPLETED
            status["status"] = COMPLETED
            if react.rec is not None:
                react.rec.ended(name, COMPLETED, None, None, None, res.started, res.ended)
            if wanted is not None:
                if "WorkloadStatusChanged" in wanted:
                    events.emit("WorkloadStatusChanged", workload=name, old_status=RUNNING, new_status=COMPLETED)
                events.emit("WorkloadEnd", workload=name, final_status=COMPLETED, error=None, ignored=res.ignored,
                            cancelled=res.cancelled, duration_ms=int(res.duration * 1000))
            self._remaining -= 1
            if self._remaining <= 0 and self._done is not None:
                self._done.set()
            if self.halted_by is not None:
                if name in react.rescuing:  # pragma: no cover - handlers take the task path
                    react.rescuing.discard(name)
                    if not react.rescuing and self._done is not None:
                        self._done.set()
                continue
            dependents = w.dependents
            if len(dependents) == 1:
                d = dependents[0]
                if results[d].status == PENDING:
                    left = indeg[d] - 1
                    indeg[d] = left
                    if not left:
                        push(by_name[d])
            elif dependents:
                newly = []
                for d in dependents:
                    if results[d].status == PENDING:
                        left = indeg[d] - 1
                        indeg[d] = left
                        if not left:
                            newly.append(by_name[d])
                stack.extend(reversed(newly))

    def _inline_classes(self) -> dict[str, tuple[Any, bool]]:
        """Workloads that run inside the scheduler step: an inline module with sync code and
        none of loop, timeout or retries (those need a task).  Failure handlers and checks that
        a dry run may skip take the task path too, which decides those cases.  Each maps to its
        module class and whether it is *plain*: literal params, no when, not disabled, no
        register, no stream and no operator state (``_dispatch`` runs those fused)."""
        out = {}
        sync: dict[str, Any] = {}  # module -> its class when its perform is sync, else None
        for w in self.plan.workloads:
            if not w.inline or w.loop is not None or w.timeout is not None or w.retry.attempts != 1 \
                    or w.lifecycle.policy != "run_once":
                continue
            if w.name in self.react.handles or w.name in self.react.dry_checks:
                continue
            if w.module not in sync:
                cls = load_module_class(w.module)
                sync[w.module] = cls if cls is not None and not inspect.iscoroutinefunction(cls.perform) else None
            if sync[w.module] is not None:
                plain = (w.name not in self.param_exprs and w.when is None and not w.disabled and not w.register
                         and self.wiring is None and w.name not in self.operator_states.owners)
                out[w.name] = (sync[w.module], plain)
        return out

    def _run_inline(self, w: Workload, mod: Any) -> list[Workload]:
        res = self.results[w.name]
        res.started = time.time()
        # Running as _set_status makes it, inline (this is the per-task hot path): the workload's
        # own expressions may read its status; the event is built only when a sink takes it
        res.status = RUNNING
        self.status_map[w.name]["status"] = RUNNING
        events = self.events
        if "WorkloadStatusChanged" in events.wanted:
            events.emit("WorkloadStatusChanged", workload=w.name, old_status=PENDING, new_status=RUNNING)
        try:
            copy = self.param_exprs.get(w.name)  # None: literal params
            scope = self.state.view() if copy is not None or w.when is not None else None
            if w.disabled or (w.when is not None and not self._when(w, scope)):
                return self._finish(w, SKIPPED, "when evaluated false")
            try:
                params = self.render(w.params, scope)
            except EvalError as exc:  # worded as on the task path (and so not keyword-redacted)
                raise KernelError(f"param resolution failed: {exc}") from None
            if copy:
                params = deep_copy(params)
            res.attempts = 1
            if "ModuleExecutionStart" in events.wanted:
                events.emit("ModuleExecutionStart", workload=w.name, loop_iteration=None,
                            **({"params": params} if self.opts.show_params else {}))
            summary = mod.perform(_LazyContext(self, w), params)
        except Exception as exc:  # noqa: BLE001 - every failure becomes the workload's status
            return self._fail(w, exc)
        if "ModuleExecutionEnd" in events.wanted:
            events.emit("ModuleExecutionEnd", workload=w.name, loop_iteration=None, summary=summary)
        return self._succeed(w, summary)

    async def _run_task(self, w: Workload) -> None:
        newly: list[Workload] = []
        # a stream consumer runs alongside its producers and takes no slot: a producer that holds
        # one waits on it to drain the channel, so a slot held by the consumer could deadlock
        slot = contextlib.nullcontext() if self.wiring is not None and self.wiring.is_consumer(w.name) else self.limit
        async with slot:
            if self.halted_by is not None and w.name not in self.react.rescuing:
                return
            res = self.results[w.name]
            res.started = time.time()
            self._set_status(w.name, RUNNING)
            try:
                if w.timeout is not None:
                    guard = self.guard
                    if guard is not None:  # a deadline that passes while this code holds the loop
                        WORKLOAD.set(w.name)
                        guard.arm(w.name, w.timeout)
                    try:
                        async with asyncio.timeout(w.timeout):
                            summary = await self._instance(w)
                    finally:
                        if guard is not None:
                            guard.disarm(w.name)
                else:
                    summary = await self._instance(w)
                if self.wiring is not None:
                    await self.wiring.finish(w.name, self.extras.get(w.name), None)
            except _Skip as skip:
                newly = self._finish(w, SKIPPED, str(skip))
            except (TimeoutError, Overrun):
                newly = self._fail(w, KernelError(f"timed out after {_fmt_seconds(w.timeout)}"))
            except asyncio.CancelledError:
                if self.halted_by is not None:
                    res.cancelled = True
                    self._finish(w, FAILED, "cancelled: run halted")
                raise
            except Exception as exc:  # noqa: BLE001
                newly = self._fail(w, exc)
            else:
                newly = self._succeed(w, summary)
        if self.react.rec is not None:
            # its effects happened: its end is committed, and durable before anything with
            # effects starts (_dispatch waits for it; a pure module need not)
            self.react.rec.flush_behind()
        if newly:
            self._dispatch(newly)

    def _when(self, w: Workload, scope: Any) -> bool:
        try:
            return truthy(self.call(w.when, scope))
        except EvalError as exc:
            raise KernelError(f"when could not be evaluated at {self.where(w.when)}: {exc}") from None

    async def _instance(self, w: Workload) -> Any:
        if w.name in self.react.no_input and not await self._has_input(w.name):
            raise _Skip("no input records")
        scope = self.state.view()
        if w.name in self.react.dry_checks and self._reads_dry_run(w.name):
            raise _Skip("dry run: input not real")
        if w.disabled or (w.when is not None and not w.when_per_item and not self._when(w, scope)):
            raise _Skip("when evaluated false")
        if w.loop is None:
            return await self._attempts(w, scope, None)
        items = self._loop_items(w, scope)
        out: list[Any] = [None] * len(items)
        if w.register:
            self.react.loop_out[w.name] = out
        sem = asyncio.Semaphore(max(1, w.loop_parallel))
        ran = 0

        async def one(i: int, item: Any) -> None:
            nonlocal ran
            async with sem:
                item_scope = {**scope, w.loop_var: item}
                # a when that reads the loop variable decides per item (a skipped item registers null)
                if w.when_per_item and not self._when(w, item_scope):
                    return
                ran += 1
                try:
                    out[i] = await self._attempts(w, item_scope, i)
                except Exception as exc:
                    out[i] = _FailedItem(getattr(exc, "summary", None))  # for the failure's register
                    raise

        if w.loop_parallel <= 1:
            for i, item in enumerate(items):
                await one(i, item)
        else:
            # the first failing iteration wins: the others are cancelled, its error is the workload's
            tasks = [asyncio.ensure_future(one(i, item)) for i, item in enumerate(items)]
            try:
                for fut in asyncio.as_completed(tasks):
                    await fut
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        if w.when_per_item and items and not ran:
            raise _Skip("when evaluated false for every item")
        return out

    async def _has_input(self, name: str) -> bool:
        """Wait until a record arrives on one of ``name``'s inputs (True) or every input has
        ended without one (False).  An input that failed counts as input: the module reports it."""
        from gxo.runtime.streams import _wait_any

        channels = [ch for _, ch in self.wiring.inputs[name]]
        while True:
            if any(ch.records_in or ch.failed for ch in channels):
                return True
            live = [ch for ch in channels if not ch.ended]
            if not live:
                return False
            await _wait_any(live)

    def _reads_dry_run(self, name: str) -> bool:
        """Whether a workload upstream of ``name`` (through any edge) returned a dry-run summary."""
        sources: dict[str, list[str]] = {}
        for e in self.plan.edges:
            sources.setdefault(e.target, []).append(e.source)
        seen: set[str] = set()
        stack = list(sources.get(name, ()))
        while stack:
            cur = stack.pop()
            if cur in seen:
                continue
            seen.add(cur)
            if cur in self.react.unreal:
                return True
            stack.extend(sources.get(cur, ()))
        return False

    def _loop_items(self, w: Workload, scope: Any) -> list[Any]:
        eid = expr_id(w.loop)
        try:
            value = self.call(eid, scope) if eid else self.render(w.loop, scope)
        except EvalError as exc:
            raise KernelError(f"loop could not be evaluated at {self.where(eid)}: {exc}") from None
        if isinstance(value, dict):
            return list(value.values())
        if isinstance(value, (list, tuple)):
            return list(value)
        raise KernelError(f"loop must give a list or a mapping, got {type(value).__name__}")

    async def _attempts(self, w: Workload, scope: Any, index: int | None, workspace: Any = None) -> Any:
        retry = w.retry
        attempt = 0
        while True:
            attempt += 1
            self.results[w.name].attempts += 1
            try:
                params = self.render(w.params, scope)
                if self.param_exprs.get(w.name):
                    params = deep_copy(params)
                return await self._perform(w, params, index, workspace)
            except EvalError as exc:
                raise KernelError(f"param resolution failed: {exc}") from None
            except ModuleError as exc:
                if attempt >= retry.attempts or not retry.on_error:
                    raise
                wait = retry.delay * (retry.backoff_factor ** (attempt - 1))
                if retry.jitter:
                    wait += wait * retry.jitter * (2 * random.random() - 1)
                if retry.max_delay is not None:
                    wait = min(wait, retry.max_delay)
                wait = max(wait, 0.0)
                self.events.emit("WorkloadRetry", workload=w.name, attempt=attempt, attempts=retry.attempts,
                                 wait_s=round(wait, 3), error=self.tracker.redact(str(exc)))
                await asyncio.sleep(wait)

    async def _perform(self, w: Workload, params: Any, index: int | None, workspace: Any = None) -> Any:
        cls = load_module_class(w.module)
        if cls is None:
            raise KernelError(f"module '{w.module}' has no code in this release")
        mod = cls()
        secrets_in = getattr(cls, "secrets_in", None)
        if secrets_in is not None and isinstance(params, dict):
            # secret parts of literal params (a DSN's password): tracked like ${NAME} values
            try:
                found = secrets_in(params)
            except Exception:  # noqa: BLE001 - malformed params: perform reports them
                found = ()
            for value in found:
                self.tracker.add(value)
        ctx = self._context(w, index, workspace)
        topology = False
        if w.lifecycle.policy == "event_driven":
            from gxo.runtime.lifecycles.event_driven import runs_as_topology

            topology = runs_as_topology(w)
        if w.name in self.operator_states.owners:
            if topology:
                # one long-lived topology fed by the source: its windows and build sides span
                # the events, and outlive a restart of the topology within the run
                ctx.extras[OPSTATE_KEY] = self.operator_states.of(w.name)
            elif w.lifecycle.policy == "event_driven":
                # an instance has a state of its own: instances run at once and end apart
                ctx.extras[OPSTATE_KEY] = OperatorState(w.name)
            else:
                # a run starts on an empty operator state (a loop iteration on its own)
                ctx.extras[OPSTATE_KEY] = self.operator_states.start(
                    w.name if index is None else f"{w.name}[{index}]")
        if self.wiring is not None:
            extras = self.extras.get(w.name)
            if extras is None:
                extras = self.extras[w.name] = self.wiring.extras_for(w.name)
            if w.lifecycle.policy == "event_driven" and not topology:  # the dispatcher's input, not the instance's
                extras = {k: v for k, v in extras.items() if k != "inputs"}
            ctx.extras.update(extras)
        self.events.emit("ModuleExecutionStart", workload=w.name, loop_iteration=index,
                         **({"params": params} if self.opts.show_params else {}))
        try:
            if ctx.sandbox is not None and not ctx.dry_run and _in_worker(w.module):
                # a security_context on a module that runs Python code: its perform runs in a
                # sandboxed worker process (gxo.runtime.support.worker_refusal says which may);
                # a dry run starts none (modules do no I/O then, as exec starts no child)
                from gxo.runtime.sandbox.worker import perform_in_worker

                summary = await perform_in_worker(ctx, w.module, params, ctx.sandbox)
            elif asyncio.iscoroutinefunction(mod.perform):
                summary = await mod.perform(ctx, params)
            else:
                summary = await in_thread(mod.perform, ctx, params)
        except ModuleError as exc:
            if getattr(exc, "summary", None) is not None:  # as far as it got (an exec's output): -v shows it
                self.events.emit("ModuleExecutionEnd", workload=w.name, loop_iteration=index, summary=exc.summary,
                                 failed=True)
            raise
        # the summary as the module returned it; the event bus redacts it like every event
        self.events.emit("ModuleExecutionEnd", workload=w.name, loop_iteration=index, summary=summary)
        if ctx.dry_run and isinstance(summary, dict) and summary.get("dry_run") is True:
            self.react.unreal.add(w.name)
        return summary

    def _context(self, w: Workload, index: int | None, workspace: Any = None) -> Context:
        unread = self._unread_of(w)
        return Context(
            workload=w.name,
            run_id=self.report.run_id,
            logger=self.events.logger(w.name),
            workspace=self._workspace_of(w, workspace),
            state=functools.partial(self._state_view, w.state_access),
            unread=unread,
            dry_run=self.opts.dry_run,
            plan_dir=self.opts.plan_dir,
            loop_index=index,
            on_run_end=self.cleanups.append,
            redact=self.tracker.redact,
            stop_timeout=getattr(w.lifecycle, "stop_timeout", None),
            connections=self._connections,
            sandbox=_sandbox_of(w) if w.security_context is not None else None,
        )

    def _pure(self, w: Workload) -> bool:
        """Whether ``w``'s module has no effects outside the run (``ModuleSpec.pure``, or
        inline): its start need not wait for the durable commit of what ended before."""
        pure = self.pure.get(w.module)
        if pure is None:
            from gxo.stdlib._spec import spec_of

            try:
                spec = spec_of(w.module)
            except Exception:  # noqa: BLE001 - an unknown module fails where it is run, not here
                spec = None
            pure = self.pure[w.module] = spec is not None and (spec.pure or spec.inline)
        return pure

    def _unread_of(self, w: Workload) -> frozenset[str]:
        """``Context.unread`` of ``w``: its module's derived summary fields that no expression
        reads from its register and no sink takes (all of them are computed when a sink takes
        every event, as ``--json`` does).  A register left without them is noted, so that the
        state a module reads (``ctx.state()``) has them all the same."""
        unread = self.unread.get(w.name)
        if unread is None:
            unread = frozenset()
            if (w.register is None or w.register_reads is not None) and self.events.wanted is not EVERY:
                from gxo.runtime.module import load_module_class

                try:
                    derived = getattr(load_module_class(w.module), "derived_fields", None) or {}
                except Exception:  # noqa: BLE001 - an unknown module fails where it is run, not here
                    derived = {}
                unread = frozenset(f for f in derived if f not in (w.register_reads or ()))
            self.unread[w.name] = unread
            if unread and w.register is not None:
                self.lean_registers[w.register] = w.module
        return unread

    def _state_view(self, access: str) -> dict[str, Any]:
        """``ctx.state()``: the state, and where a register was kept without its derived
        fields, those fields computed into the view."""
        from gxo.runtime.durable import restored_register

        view = self.state.get_all(access)
        if not self.lean_registers:
            return view
        for key, module in self.lean_registers.items():
            if isinstance(view.get(key), dict):
                view[key] = restored_register(module, dict(view[key]))
        return view

    def _connections(self) -> Any:
        """The run's connection manager (gxo.runtime.connections), made on first use; closed
        with everything it holds at the end of ``_shutdown``."""
        mgr = self.react.conns
        if mgr is None:
            from gxo.runtime.connections import ConnectionManager

            mgr = self.react.conns = ConnectionManager.from_env()
        return mgr

    def _workspace_of(self, w: Workload, workspace: Any = None) -> Any:
        """The workspace as ``w``'s modules see it: plus the allowed roots of the flag, the
        playbook's workload_policy and the workload's policy."""
        ws = self.workspace if workspace is None else workspace  # an ephemeral instance's own
        roots = self.opts.allowed_paths + self.plan.allowed_paths + w.allowed_paths
        return ws.allowing(roots) if roots else ws

    # -- outcomes -------------------------------------------------------------------------------

    def _succeed(self, w: Workload, summary: Any) -> list[Workload]:
        res = self.results[w.name]
        if isinstance(summary, (dict, list)) and _changed(summary):
            res.changed = True
        if w.register:
            if w.loop is not None:
                self.react.loop_out.pop(w.name, None)
            self.state.set(w.register, self.tracker.redact_value(_success_value(summary, w.loop is not None)))
        return self._finish(w, COMPLETED, None)

    def _fail(self, w: Workload, exc: BaseException) -> list[Workload]:
        from gxo.runtime.secrets import redact_keywords

        reason = self.tracker.redact(_describe(exc))
        if not isinstance(exc, KernelError):
            reason = redact_keywords(reason)
        res = self.results[w.name]
        if w.register and res.status == RUNNING:
            # the failure is registered too: the summary as far as it got, failed and error
            items = self.react.loop_out.pop(w.name, None) if w.loop is not None else None
            if items is not None:
                value: Any = [_failure_value(v.summary, reason) if isinstance(v, _FailedItem)
                              else _success_value(v, False) for v in items]
            else:
                value = _failure_value(getattr(exc, "summary", None), reason)
            self.state.set(w.register, self.tracker.redact_value(value))
        upstream = getattr(exc, "producer", None)
        if w.ignore_errors or (upstream in self.results and self.results[upstream].ignored):
            res.ignored = True  # a consumer of an ignored failure fails ignored too
            newly = self._finish(w, FAILED, reason)
            return newly + self._skip_dependents(w)
        rescue = self._fire_handlers(w) if w.on_failure else []
        self._finish(w, FAILED, reason)
        self._halt(w.name)
        return rescue

    def _finish(self, w: Workload, status: str, reason: str | None) -> list[Workload]:
        res = self.results[w.name]
        if res.status in (COMPLETED, FAILED, SKIPPED):
            return []
        res.ended = time.time()
        res.reason = reason
        if w.name in self.operator_states.owners:
            self.operator_states.drop(w.name)
        if self.wiring is not None:
            # skipped, failed or finished: its streams end now (an error mark when it failed)
            self.wiring.end(w.name, f"{w.name} failed: {reason}" if status == FAILED else None)
            res.record_errors = self.wiring.record_errors(w.name)
        self._set_status(w.name, status)
        rec = self.react.rec
        if rec is not None:
            value = _registered(self.state, w.register) if w.register and status != SKIPPED else None
            if value is not None:
                from gxo.runtime.durable import stored_register

                value = stored_register(w.module, value)
            rec.ended(w.name, status, reason, w.register if value is not None else None, value, res.started, res.ended)
        if self.events.sinks:
            self.events.emit("WorkloadEnd", workload=w.name, final_status=status, error=reason, ignored=res.ignored,
                             cancelled=res.cancelled, duration_ms=int(res.duration * 1000))
        self._remaining -= 1
        if self._remaining <= 0 and self._done is not None:
            self._done.set()
        newly: list[Workload] = []
        if status in (COMPLETED, SKIPPED) and self.halted_by is None:
            for d in w.dependents:
                if self.results[d].status != PENDING:
                    continue
                self._indeg[d] -= 1
                if self._indeg[d] == 0:
                    newly.append(self.by_name[d])
        elif w.name in self.react.rescuing:
            self.react.rescuing.discard(w.name)
            if not self.react.rescuing and self.halted_by is not None and self._done is not None:
                self._done.set()  # the last handler of a halted run has ended
        return newly

    def _skip_dependents(self, w: Workload) -> list[Workload]:
        """After ``w`` failed ignored: its transitive dependents end Skipped, except those that
        opted in to its failure (their when reads its status or failed field, or they are its
        on_failure handlers): for them the failure counts as an end, and their when decides.
        Returns those that became ready."""
        origin = w.name
        self.react.fired.update(w.on_failure)
        ready: list[Workload] = []
        stack = [(origin, d) for d in reversed(w.dependents)]
        while stack:
            src, name = stack.pop()
            if self.results[name].status != PENDING:
                continue
            if origin in self.react.watch.get(name, ()):
                if src == origin:  # the edge from the failed workload: it has ended
                    self._indeg[name] -= 1
                    if self._indeg[name] == 0:
                        ready.append(self.by_name[name])
                continue
            self.results[name].started = self.results[name].ended = time.time()
            for d in self._finish(self.by_name[name], SKIPPED, "dependency failed (ignored)"):
                if origin in self.react.watch.get(d.name, ()):
                    ready.append(d)
            stack.extend((name, d) for d in reversed(self.by_name[name].dependents))
        return ready

    def _fire_handlers(self, w: Workload) -> list[Workload]:
        """``w`` failed for good and halts the run: its on_failure handlers run now, and the
        run waits for them.  A handler that still waits for another workload cannot run."""
        ready: list[Workload] = []
        for h in w.on_failure:
            if self.results[h].status != PENDING:
                continue
            self.react.fired.add(h)
            self._indeg[h] -= 1
            if self._indeg[h] == 0:
                self.react.rescuing.add(h)
                ready.append(self.by_name[h])
            else:
                waits = [d for d in self.by_name[h].deps if d != w.name
                         and self.results[d].status not in (COMPLETED, SKIPPED)]
                res = self.results[h]
                res.started = res.ended = time.time()
                self._finish(self.by_name[h], SKIPPED, f"cannot run: it waits for {', '.join(waits)}, "
                             "which did not finish before the run halted")
        return ready

    def _halt(self, name: str) -> None:
        if self.halted_by is not None:
            return
        self.halted_by = name
        for other, task in self.tasks.items():
            if other != name and not task.done():
                task.cancel()
        for res in self.results.values():
            if res.status == PENDING:
                res.reason = f"run halted by {name}"
        if self._done is not None and not self.react.rescuing:
            self._done.set()

    async def _shutdown(self) -> None:
        pending = [t for t in self.tasks.values() if not t.done()]
        for t in pending:
            t.cancel()
        for t in pending:
            try:
                await t
            except BaseException:  # noqa: BLE001 - cancellation and failures are already recorded
                pass
        if self.wiring is not None:
            self.wiring.end_all(f"run stopped: {self.stop_reason or ('halted by ' + str(self.halted_by))}")
            self.report.streams = self.wiring.counters()
        if RUNNING in map(_status_of, self.results.values()):  # a test in C: usually none is
            for name, res in self.results.items():
                if res.status == RUNNING:  # cancelled from outside (signal, deadline): say so, as an event too
                    res.cancelled = True
                    self._finish(self.by_name[name], FAILED, f"cancelled: {self.stop_reason or 'run stopped'}")
        for fn in reversed(self.cleanups):
            try:
                out = fn()
                if asyncio.iscoroutine(out):
                    await out
            except Exception:  # noqa: BLE001 - cleanup must not hide the run's result
                pass
        if self.react.conns is not None:  # every exit path: no socket outlives the run
            await self.react.conns.close_all()


def _in_worker(module: str) -> bool:
    """Whether ``module``, under a security_context, runs in a sandboxed worker process (a
    child-process module such as ``exec`` sandboxes its child itself)."""
    from gxo.runtime.support import SANDBOXED_MODULES

    return module not in SANDBOXED_MODULES


def _sandbox_of(w: Workload) -> Any:
    """The sandbox of ``w``'s child processes, or of its worker process (its security_context
    asks for one)."""
    from gxo.runtime.sandbox import sandbox_of

    return sandbox_of(w.security_context, w.seccomp_profile)


def _registered(state: Any, key: str) -> Any:
    try:
        return state.get(key, UNSAFE_DIRECT_REFERENCE)
    except KeyNotFound:
        return None


class _Skip(Exception):
    pass


class _Reactions:
    """How the run reacts to failures and missing input, precomputed per plan so that the
    scheduling step never looks at it: only the task path and the failure paths do."""

    __slots__ = ("handles", "watch", "fired", "rescuing", "no_input", "dry_checks", "unreal", "loop_out", "lc", "rec",
                 "conns")

    def __init__(self, plan: Plan, wiring: Any, dry_run: bool) -> None:
        #: handler -> the workloads whose on_failure names it
        self.handles: dict[str, tuple[str, ...]] = {}
        for w in plan.workloads:
            for h in w.on_failure:
                self.handles[h] = (*self.handles.get(h, ()), w.name)
        #: workload -> the deps whose ignored failure it runs after (its when reads their status
        #: or failed field, as the compiler found; or it handles them)
        self.watch: dict[str, frozenset[str]] = {
            w.name: frozenset(w.failure_watch) | frozenset(self.handles.get(w.name, ()))
            for w in plan.workloads if w.failure_watch or w.name in self.handles}
        self.fired: set[str] = set()  # handlers whose workload failed for good
        self.rescuing: set[str] = set()  # handlers started while the run halts: it waits for them
        #: consumers that end Skipped when no record arrives (policy skip_on_no_input)
        self.no_input = frozenset(w.name for w in plan.workloads
                                  if w.skip_on_no_input and wiring is not None and wiring.is_consumer(w.name))
        #: --dry-run: checks whose inputs come from dry-run summaries are skipped, not failed
        self.dry_checks = frozenset(w.name for w in plan.workloads if w.module in _CHECK_MODULES) \
            if dry_run else frozenset()
        self.unreal: set[str] = set()  # workloads whose summary is a dry run's
        #: a registering loop's items as far as they got, for its register when it fails
        self.loop_out: dict[str, list[Any]] = {}
        #: the long-running workloads' managers (gxo.runtime.lifecycles.host.Lifecycles), or None
        #: (kept here: the kernel's own attributes stay under 30, see Kernel.__init__)
        self.lc: Any = None
        #: the durable store's recorder (gxo.runtime.durable.Recorder), or None
        self.rec: Any = None
        #: the run's connection manager (gxo.runtime.connections), made on first use
        self.conns: Any = None


#: modules that check results: under --dry-run they skip when their inputs are dry-run summaries
_CHECK_MODULES = frozenset({"control:assert", "test:assert"})


def _changed(summary: dict[str, Any] | list[Any]) -> bool:
    """Whether a summary says it changed something (a loop's: any of its items)."""
    if isinstance(summary, dict):
        return summary.get("changed") is True
    return any(isinstance(s, dict) and s.get("changed") is True for s in summary)


def _success_value(summary: Any, looped: bool) -> Any:
    """A registered summary: the module's, plus ``failed: false`` and ``error: null`` (per item
    for a loop; a skipped item stays null)."""
    if looped and isinstance(summary, list):
        return [_success_value(s, False) for s in summary]
    if isinstance(summary, dict):
        return {**summary, "failed": False, "error": None}
    return summary


class _FailedItem(Struct):
    """A loop item that failed: its module's summary as far as it got."""

    summary: Any


def _failure_value(summary: Any, error: str | None) -> dict[str, Any]:
    """A failed workload's (or loop item's) register: its summary as far as it got, plus
    ``failed: true`` and ``error``."""
    base = summary if isinstance(summary, dict) else {}
    return {**base, "failed": True, "error": error}


class _LazyContext:
    """An inline module's context, made only when the module reads it: most inline modules
    (``control:identity``, ``control:assert``) never do, and building a ``Context`` with its
    logger and state reader was about a fifth of such a task's time.  Reads go to the real
    context, made on the first one."""

    __slots__ = ("_kernel", "_workload", "_ctx")

    def __init__(self, kernel: Kernel, w: Workload) -> None:
        self._kernel = kernel
        self._workload = w
        self._ctx: Context | None = None

    @property
    def run_id(self) -> str:
        return self._kernel.report.run_id

    @property
    def dry_run(self) -> bool:
        return self._kernel.opts.dry_run

    def on_run_end(self, fn: Any) -> None:
        self._kernel.cleanups.append(fn)

    def __getattr__(self, name: str) -> Any:
        ctx = self._ctx
        if ctx is None:
            ctx = self._ctx = self._kernel._context(self._workload, None)
        return getattr(ctx, name)


def _param_expressions(plan: Plan) -> dict[str, bool]:
    """The workloads whose params hold an expression, each with whether its rendered params are
    copied before the module gets them (they may alias the state, read by deep copy)."""
    with_exprs = {e.workload for e in plan.expressions if e.where.startswith("params")}
    return {w.name: w.state_access == "deep_copy" for w in plan.workloads if w.name in with_exprs}


class KernelError(ModuleError):
    """A failure the kernel words itself (params, when, loop, timeout): no keyword redaction,
    which would eat the names it reports; tracked secret values are still redacted."""


def _record_expressions(plan: Plan) -> dict[str, bool]:
    """Per-record expressions of stream modules (data:map, data:filter, data:join, data:format)
    that read streams: id -> whether the expression also sees the state (join keys)."""
    from gxo.stdlib._spec import spec_of

    out: dict[str, bool] = {}
    by_name = {w.name: w for w in plan.workloads}
    for e in plan.expressions:
        w = by_name.get(e.workload)
        if w is not None and w.module == "stream:pipeline" and e.where.startswith("params.steps["):
            # pipeline steps: called with the record and the earlier steps' outputs over the state
            out[e.id] = True
            continue
        if not e.per_record or w is None or not w.stream_inputs:
            continue
        spec = spec_of(w.module)
        if spec is not None and spec.stream_input in ("one", "required", "two_or_more"):
            out[e.id] = w.module == "data:join"
    return out


def _track_tainted(plan: Plan, fns: dict[str, Any], record_exprs: dict[str, bool], tracker: Any) -> dict[str, Any]:
    """The taint map at work: each one-action expression the compiler marked as computed from a
    secret gets a wrapper that adds the strings of its result to the tracker before the value
    is used; the others are called as they are, at no cost.  (A template with text around its
    actions tracks each tainted action itself, in the generated code: the text around stays
    readable, ``Bearer [REDACTED]``.)  Record expressions, called once per record, are left
    out: the secret they read is tracked by ``secret`` itself, and tracking every record would
    grow without bound."""
    tainted = [e for e in plan.expressions
               if e.secret and e.native and e.id not in record_exprs and e.id in fns]
    if not tainted:
        return fns
    out = dict(fns)
    for e in tainted:
        out[e.id] = _tainted_fn(fns[e.id], e.as_text, tracker)
    return out


def _tainted_fn(fn: Callable[[Any, Any], Any], as_text: bool, tracker: Any) -> Callable[[Any, Any], Any]:
    def tainted(scope: Any, ctx: Any) -> Any:
        value = fn(scope, ctx)
        tracker.add_derived(value)  # its strings; a number or a boolean is not text to hide
        if as_text and not isinstance(value, str):
            value = text(value)
        return value

    return tainted


def _deferred_expressions(plan: Plan) -> set[str]:
    """Per-record expressions of modules that read no stream are evaluated per result by the
    module itself (``http:request``'s ``success_when``/``fail_when`` see the response)."""
    from gxo.stdlib._spec import spec_of

    owners = {w.name: spec_of(w.module) for w in plan.workloads}
    return {
        e.id for e in plan.expressions
        if e.per_record and owners.get(e.workload) is not None and owners[e.workload].stream_input == "none"
    }


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (ModuleError, GxoError, EvalError)):
        return str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


def _fmt_seconds(s: float | None) -> str:
    if s is None:
        return "?"
    return f"{s:g}s"

