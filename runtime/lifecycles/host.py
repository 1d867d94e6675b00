"""The kernel's side of the lifecycle interface (``base.Host``), and the driver of one
long-running workload: ``drive(kernel, w)`` is the task the kernel starts for a workload whose
policy is not ``run_once`` when its dependencies are done.

Kept apart from ``kernel.py`` so that the run_once scheduler stays what it is: the kernel keeps
one reference to all of this (``kernel.react.lc``, a ``Lifecycles``), made only when the plan has a
long-running workload.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from gxo.runtime.lifecycles.base import COMPLETED, manager_for
from gxo.runtime.lifecycles.clock import Clock


class Lifecycles:
    """The kernel's lifecycle state: the clock, the managed workloads, a graceful stop."""

    def __init__(self, kernel: Any, clock: Any = None, store: Any = None) -> None:
        self.kernel = kernel
        self.clock = clock or Clock()
        self.store = store
        self.long_running = {w.name for w in kernel.plan.workloads if w.lifecycle.policy != "run_once"}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        #: set by a graceful stop (SIGTERM/SIGINT once every run_once workload has ended): the
        #: managed workloads end Completed with this reason
        self.stopped_by: str | None = None
        self.info: dict[str, dict[str, Any]] = {}
        self.dry_run = bool(kernel.opts.dry_run)
        self._fires: dict[str, float] = {}
        self._sole: dict[str, bool] = {}

    # -- base.Host ------------------------------------------------------------------------------

    async def run_instance(self, w: Any, record: dict[str, Any] | None = None, *, ephemeral: bool = False) -> Any:
        k = self.kernel
        scope = k.state.view()
        workspace = None
        if ephemeral and not w.inline:
            from gxo.runtime.workspace import Workspace

            workspace = Workspace.create()
            scope = {**scope, "_gxo": {**scope.get("_gxo", {}), "workspace": {"path": workspace.path}}}
        if record is not None:
            scope = {**scope, **record}
        try:
            if w.lifecycle.policy != "supervise" and w.when is not None and not k._when(w, scope):
                return None  # this instance's when is false: nothing runs, nothing is registered
            try:
                if w.timeout is not None:  # the workload's timeout bounds each instance (each run)
                    try:
                        async with asyncio.timeout(w.timeout):
                            summary = await k._attempts(w, scope, None, workspace)
                    except TimeoutError:
                        from gxo.runtime.kernel import KernelError, _fmt_seconds

                        raise KernelError(f"timed out after {_fmt_seconds(w.timeout)}") from None
                else:
                    summary = await k._attempts(w, scope, None, workspace)
            except Exception as exc:
                if w.register:
                    from gxo.runtime.kernel import _failure_value

                    reason = k.tracker.redact(str(exc) or type(exc).__name__)
                    k.state.set(w.register, k.tracker.redact_value(_failure_value(getattr(exc, "summary", None), reason)))
                raise
            if w.register:
                from gxo.runtime.kernel import _success_value

                k.state.set(w.register, k.tracker.redact_value(_success_value(summary, False)))
            return summary
        finally:
            await self._flush_output(w)
            if workspace is not None:
                workspace.remove()

    def inline_instances(self, w: Any) -> Any:
        """The module class when ``w``'s instances can run right in the dispatcher's loop (an
        inline module: pure, sync, non-blocking; no timeout, no retries), else None: no task, no
        thread, no workspace per instance."""
        if not w.inline or w.timeout is not None or w.retry.attempts != 1 or w.loop is not None:
            return None
        import inspect

        from gxo.runtime.module import load_module_class

        cls = load_module_class(w.module)
        return cls if cls is not None and not inspect.iscoroutinefunction(cls.perform) else None

    def run_inline(self, w: Any, cls: Any, record: dict[str, Any] | None) -> Any:
        """One instance of an inline module, synchronously (``inline_instances``)."""
        from gxo.runtime.kernel import KernelError, _LazyContext, _success_value
        from gxo.runtime.exprlib import EvalError
        from gxo.runtime.state import deep_copy

        k = self.kernel
        scope = k.state.view()
        if record is not None:
            scope = {**scope, **record}
        if w.when is not None and not k._when(w, scope):
            return None
        try:
            params = k.render(w.params, scope)
        except EvalError as exc:
            raise KernelError(f"param resolution failed: {exc}") from None
        if k.param_exprs.get(w.name):
            params = deep_copy(params)
        events = k.events
        if "ModuleExecutionStart" in events.wanted:
            events.emit("ModuleExecutionStart", workload=w.name, loop_iteration=None,
                        **({"params": params} if k.opts.show_params else {}))
        summary = cls().perform(_LazyContext(k, w), params)
        if "ModuleExecutionEnd" in events.wanted:
            events.emit("ModuleExecutionEnd", workload=w.name, loop_iteration=None, summary=summary)
        if w.register:
            k.state.set(w.register, k.tracker.redact_value(_success_value(summary, False)))
        return summary

    async def _flush_output(self, w: Any) -> None:
        """A long-running producer's records reach its consumers after each run (its stream
        stays open across restarts and instances)."""
        extras = self.kernel.extras.get(w.name)
        out = extras.get("output") if extras else None
        if out is not None:
            try:
                await out.flush()
            except Exception:  # noqa: BLE001 - a consumer that stopped: the stream reports it
                pass

    def update(self, w: Any, **info: Any) -> None:
        self.info.setdefault(w.name, {}).update(info)
        events = self.kernel.events
        if "LifecycleUpdate" in events.wanted:
            events.emit("LifecycleUpdate", workload=w.name, policy=w.lifecycle.policy, **info)

    def instance_failed(self, w: Any, reason: str) -> None:
        k = self.kernel
        from gxo.runtime.secrets import redact_keywords

        text = redact_keywords(k.tracker.redact(reason))
        k.events.emit("InstanceFailed", workload=w.name, error=text)

    def instance_ended(self, w: Any, record: Any, failed: bool) -> None:
        """A request left unanswered by the only handler of its listener is answered 500 now
        (with several consumers of the listener, another one may still answer it)."""
        if isinstance(record, dict) and "request_id" in record and self._sole_consumer(w):
            from gxo.runtime.request_manager import release_unanswered

            release_unanswered(self.kernel.report.run_id, record, failed)

    def _sole_consumer(self, w: Any) -> bool:
        sole = self._sole.get(w.name)
        if sole is None:
            source = getattr(w.lifecycle, "source", None)
            sole = self._sole[w.name] = sum(1 for c in self.kernel.plan.channels if c.producer == source) == 1
        return sole

    def inputs(self, w: Any) -> Any:
        wiring = self.kernel.wiring
        if wiring is None or not wiring.is_consumer(w.name):
            return None
        return wiring.extras_for(w.name)["inputs"]

    def last_fire(self, w: Any) -> float | None:
        if self.store is not None:
            return self._durable(self.store.last_fire, self.kernel.plan.name, w.name)
        return self._fires.get(w.name)

    def set_last_fire(self, w: Any, t: float) -> None:
        self._fires[w.name] = t
        if self.store is not None:
            self._durable(self.store.set_last_fire, self.kernel.plan.name, w.name, t)

    def restarts(self, w: Any) -> tuple[int, float] | None:
        if self.store is not None:
            return self._durable(self.store.restarts, self.kernel.run_id, w.name)
        return None

    def set_restarts(self, w: Any, count: int, window_start: float) -> None:
        if self.store is not None:
            self._durable(self.store.set_restarts, self.kernel.run_id, w.name, count, window_start)

    def _durable(self, fn: Any, *args: Any) -> Any:
        """A call of the durable store; a store that fails stops the run as a failed commit does."""
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - reported, and the run stops
            self.kernel._store_failed(f"the run history could not be written: {exc}")
            return None

    # -- stopping -------------------------------------------------------------------------------

    def graceful_stop(self, reason: str) -> bool:
        """Stop the managed workloads gracefully, if the run_once part has ended (True); else
        False and the caller stops the run as before (exit 130/143)."""
        k = self.kernel
        for w in k.plan.workloads:
            if w.name not in self.long_running and k.results[w.name].status in ("Pending", "Running"):
                return False
        if self.stopped_by is None:
            self.stopped_by = reason
            asyncio.get_running_loop().create_task(self._stop_in_order())
        return True

    async def _stop_in_order(self) -> None:
        """Sources first, so that their streams end and event-driven handlers drain what is in
        flight; a handler still busy after its stop_timeout is cancelled."""
        k = self.kernel
        handlers = {n for n in self.tasks if k.by_name[n].lifecycle.policy == "event_driven"}
        for name, task in self.tasks.items():
            if name not in handlers and not task.done():
                task.cancel()
        for name in handlers:
            task = self.tasks[name]
            grace = getattr(k.by_name[name].lifecycle, "stop_timeout", 10.0)
            try:
                await asyncio.wait_for(asyncio.shield(task), grace)
            except (TimeoutError, asyncio.CancelledError, Exception):  # noqa: BLE001
                task.cancel()


async def drive(kernel: Any, w: Any) -> None:
    """The task of one long-running workload: Running until its manager ends it."""
    lc: Lifecycles = kernel.react.lc
    res = kernel.results[w.name]
    res.started = time.time()
    kernel._set_status(w.name, "Running")
    newly: list[Any] = []
    try:
        if w.disabled or (w.lifecycle.policy == "supervise" and w.when is not None
                          and not kernel._when(w, kernel.state.view())):
            from gxo.runtime.kernel import SKIPPED

            newly = kernel._finish(w, SKIPPED, "when evaluated false")
        else:
            status, reason = await manager_for(lc, w).run()
            if kernel.wiring is not None:
                await kernel.wiring.finish(w.name, kernel.extras.get(w.name), None)
            if status == COMPLETED:
                newly = kernel._finish(w, COMPLETED, reason)
            else:
                from gxo.runtime.kernel import KernelError

                newly = kernel._fail(w, KernelError(reason or "failed"))
    except asyncio.CancelledError:
        if lc.stopped_by is not None:  # a graceful stop: the service was stopped, not failed
            newly = kernel._finish(w, COMPLETED, f"stopped: {lc.stopped_by}")
        else:
            if kernel.halted_by is not None:
                res.cancelled = True
                kernel._finish(w, "Failed", "cancelled: run halted")
            raise
    except Exception as exc:  # noqa: BLE001 - a manager's own error fails its workload
        newly = kernel._fail(w, exc)
    if kernel.react.rec is not None:
        kernel.react.rec.flush()
    if newly:
        kernel._dispatch(newly)
