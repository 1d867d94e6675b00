"""One run of a loaded plan: workspace, secrets, state and outputs around the kernel.

Owns every exit path: the workspace is removed whether the run succeeds, fails, times out or
is interrupted by SIGINT/SIGTERM, and the exit code follows design.md section 10.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import IO, Any, Callable

from msgspec import Struct, field

from gxo.runtime.events import Events
from gxo.runtime.kernel import Kernel, Report, RunOptions
from gxo.runtime.plan import Plan

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED = 0, 1, 2, 3
EXIT_TIMEOUT, EXIT_SIGINT, EXIT_SIGTERM = 124, 130, 143


class Outputs(Struct):
    """Where a run reports: ``json`` events, or plain lines / a live view, then the recap."""

    json: bool = False
    stream: IO[str] = field(default_factory=lambda: sys.stdout)
    live: bool | None = None  # None: a live view when the stream is a terminal
    recap: bool = True
    verbose: int = 0  # -v: each workload's summary under its line; -vv: its params too


def make_secrets() -> tuple[Any, Any]:
    from gxo.runtime.secrets import ChainProvider, EnvProvider, FileProvider, Tracker

    providers: list[Any] = [EnvProvider()]
    secret_dir = os.environ.get("GXO_SECRETS_DIR")
    if secret_dir:
        providers.append(FileProvider(secret_dir))
    return ChainProvider(providers), Tracker()


def execute(
    plan: Plan,
    functions: dict[str, Callable[[Any, Any], Any]],
    options: RunOptions,
    outputs: Outputs,
    *,
    timeout: float | None = None,
) -> tuple[int, Report | None]:
    """Run ``plan`` to the end; returns the exit code and the report."""
    from gxo.runtime.output import JsonSink, LiveView, PlainSink, VerboseLiveView, VerbosePlainSink, is_tty, recap
    from gxo.runtime.proctrack import prepare_for
    from gxo.runtime.state import StateStore
    from gxo.runtime.workspace import Workspace

    if not options.dry_run:
        prepare_for(plan)  # the first exec's child waits for the run's cgroup: set it up now
    secrets, tracker = make_secrets()

    def redact(obj: Any) -> Any:
        return tracker.redact_value(obj)

    events = Events(plan.name, redact)
    live_view = None
    details = _details(plan, outputs)
    if outputs.json:
        events.add(JsonSink(outputs.stream))
    elif outputs.live or (outputs.live is None and is_tty(outputs.stream)):
        live_view = LiveView([w.name for w in plan.workloads], outputs.stream) if details is None else \
            VerboseLiveView([w.name for w in plan.workloads], outputs.stream, details)
        events.add(live_view)
    else:
        events.add(PlainSink(outputs.stream) if details is None else VerbosePlainSink(outputs.stream, details))
    Workspace.sweep_stale()
    workspace = Workspace.create()
    report: Report | None = None
    code = EXIT_FAILED
    young = _streaming_collector(plan)
    try:
        kernel = Kernel(plan, functions, state=StateStore(), workspace=workspace, secrets=secrets,
                        tracker=tracker, events=events, options=options)
        if live_view is not None:
            with live_view:
                code, report = _drive(kernel, timeout)
        else:
            code, report = _drive(kernel, timeout)
    finally:
        if young is not None:
            import gc

            gc.set_threshold(young, *gc.get_threshold()[1:])
        from gxo.runtime.proctrack import sweep

        sweep()  # what the workloads left running (adopted by the gxo command) ends with the run
        workspace.remove()
    if details is not None:
        from gxo.runtime.proctrack import guard_note

        note = guard_note()
        if note:
            outputs.stream.write(note + "\n")
    if report is not None and outputs.recap and not outputs.json:
        outputs.stream.write(recap(report, tracker.redact))
        outputs.stream.flush()
    return code, report


#: the cycle collector's young-generation threshold while a plan with streams runs
STREAM_GC_THRESHOLD = 20_000


def _streaming_collector(plan: Plan) -> int | None:
    """With streams in ``plan``, raise the collector's young-generation threshold for the run
    and return the one to restore (None: left as it is).

    Records are maps of text and numbers: reference counting frees them, they form no cycles.
    A stream of a million records allocates millions of maps, and at CPython's default (one
    young pass per 700 container allocations) the passes that find nothing to free cost a
    few percent of such a run.  A pass per 20,000 still collects cyclic garbage (rare: the
    kernel's own objects), only later."""
    import gc

    if not any(w.stream_inputs for w in plan.workloads):
        return None
    young = gc.get_threshold()[0]
    if young == 0 or young >= STREAM_GC_THRESHOLD:  # disabled or already as high: leave it
        return None
    gc.set_threshold(STREAM_GC_THRESHOLD, *gc.get_threshold()[1:])
    return young


def _details(plan: Plan, outputs: Outputs) -> Any:
    """The ``-v`` collector, or None (no ``-v``, or ``--json``: the events hold it all)."""
    if outputs.verbose <= 0 or outputs.json:
        return None
    from gxo.runtime.output import Details

    return Details(outputs.verbose, {w.name: w.module for w in plan.workloads})


def _drive(kernel: Kernel, timeout: float | None) -> tuple[int, Report]:
    """Run the kernel on a fresh loop with signal handling and an optional run deadline.

    A signal or the deadline sets ``kernel.stop_reason`` and then cancels the run, so the
    workloads it cancels say why and the report keeps its real start time.
    """
    stopped: list[int | str] = []  # the first signal number, or "timeout"
    graceful: list[int | str] = []  # the signal that stopped the long-running workloads gracefully

    async def main() -> Report:
        from gxo.runtime.guard import Guard

        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def stop(cause: int | str, reason: str) -> bool:
            """Apply one stop request; True when it cancels the run."""
            lc = kernel.react.lc
            if not stopped:
                stopped.append(cause)
                kernel.stop_reason = reason
                # long-running workloads after the run_once part has ended: a graceful stop
                # (they end Completed, exit 0); otherwise the run is interrupted (130/143)
                if cause != "timeout" and lc is not None and lc.graceful_stop(reason):
                    graceful.append(cause)
                    return False
                _cancel()
                return True
            if graceful and len(stopped) == 1 and cause != "timeout":  # a second signal: stop now
                stopped.append(cause)
                graceful.clear()
                _cancel()
                return True
            return False

        def _cancel() -> None:
            # from the guard's poke inside this very task, the CancelledError it raises ends
            # the task; a cancel() too would cancel the cleanup's first await as well
            if asyncio.current_task() is not task:
                task.cancel()

        guard = Guard(loop, stop, timeout)
        guard.main = task
        kernel.guard = guard
        guard.start()
        try:
            return await kernel.run()
        finally:
            guard.close()

    try:
        report = asyncio.run(main())
    except (asyncio.CancelledError, KeyboardInterrupt):
        report = _partial(kernel)
        if stopped and stopped[0] == "timeout":
            report.timed_out = True
            return EXIT_TIMEOUT, report
        sig = stopped[0] if stopped else signal.SIGINT
        report.interrupted = int(sig)
        return (EXIT_SIGTERM if sig == signal.SIGTERM else EXIT_SIGINT), report
    if graceful:  # long-running workloads stopped on a signal once the run_once part had ended
        return (EXIT_FAILED if report.failed else EXIT_OK), report
    if stopped:  # the cancellation landed after the kernel had finished: still a stopped run
        if stopped[0] == "timeout":
            report.timed_out = True
            return EXIT_TIMEOUT, report
        report.interrupted = int(stopped[0])
        return (EXIT_SIGTERM if stopped[0] == signal.SIGTERM else EXIT_SIGINT), report
    return (EXIT_FAILED if report.failed else EXIT_OK), report


def _partial(kernel: Kernel) -> Report:
    """The report of a run stopped from outside: what the kernel recorded, nothing left Running."""
    import time

    report = kernel.report
    for res in kernel.results.values():
        if res.status == "Running":
            res.status = "Failed"
            res.reason = res.reason or f"cancelled: {kernel.stop_reason or 'run stopped'}"
            res.ended = res.ended or time.time()
    report.halted_by = kernel.halted_by
    if not report.ended:
        report.ended = time.time()
    return report
