"""One run of a loaded plan: workspace, secrets, state and outputs around the kernel.

Owns every exit path: the workspace is removed whether the run succeeds, fails, times out or
is interrupted by SIGINT/SIGTERM, and the exit code follows design.md section 10.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from dataclasses import dataclass, field
from typing import IO, Any, Callable

from gxo.runtime.events import Events
from gxo.runtime.kernel import Kernel, Report, RunOptions
from gxo.runtime.plan import Plan

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED = 0, 1, 2, 3
EXIT_TIMEOUT, EXIT_SIGINT, EXIT_SIGTERM = 124, 130, 143


@dataclass
class Outputs:
    """Where a run reports: ``json`` events, or plain lines / a live view, then the recap."""

    json: bool = False
    stream: IO[str] = field(default_factory=lambda: sys.stdout)
    live: bool | None = None  # None: a live view when the stream is a terminal
    recap: bool = True


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
    from gxo.runtime.output import JsonSink, LiveView, PlainSink, is_tty, recap
    from gxo.runtime.state import StateStore
    from gxo.runtime.workspace import Workspace

    secrets, tracker = make_secrets()

    def redact(obj: Any) -> Any:
        return tracker.redact_value(obj)

    events = Events(plan.name, redact)
    live_view = None
    if outputs.json:
        events.add(JsonSink(outputs.stream))
    elif outputs.live or (outputs.live is None and is_tty(outputs.stream)):
        live_view = LiveView([w.name for w in plan.workloads], outputs.stream)
        events.add(live_view)
    else:
        events.add(PlainSink(outputs.stream))
    Workspace.sweep_stale()
    workspace = Workspace.create()
    report: Report | None = None
    code = EXIT_FAILED
    try:
        kernel = Kernel(plan, functions, state=StateStore(), workspace=workspace, secrets=secrets,
                        tracker=tracker, events=events, options=options)
        if live_view is not None:
            with live_view:
                code, report = _drive(kernel, timeout)
        else:
            code, report = _drive(kernel, timeout)
    finally:
        workspace.remove()
    if report is not None and outputs.recap and not outputs.json:
        outputs.stream.write(recap(report, tracker.redact))
        outputs.stream.flush()
    return code, report


def _drive(kernel: Kernel, timeout: float | None) -> tuple[int, Report]:
    """Run the kernel on a fresh loop with signal handling and an optional run deadline."""
    got_signal: list[int] = []

    async def main() -> Report:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def on_signal(sig: int) -> None:
            if not got_signal:
                got_signal.append(sig)
                task.cancel()

        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, on_signal, sig)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
                pass
        try:
            if timeout is not None:
                async with asyncio.timeout(timeout):
                    return await kernel.run()
            return await kernel.run()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    try:
        report = asyncio.run(main())
    except TimeoutError:
        report = _partial(kernel)
        report.timed_out = True
        return EXIT_TIMEOUT, report
    except (asyncio.CancelledError, KeyboardInterrupt):
        report = _partial(kernel)
        sig = got_signal[0] if got_signal else signal.SIGINT
        report.interrupted = sig
        return (EXIT_SIGTERM if sig == signal.SIGTERM else EXIT_SIGINT), report
    return (EXIT_FAILED if report.failed else EXIT_OK), report


def _partial(kernel: Kernel) -> Report:
    import time

    for res in kernel.results.values():
        if res.status == "Running":
            res.status = "Failed"
            res.reason = res.reason or "cancelled: run stopped"
    return Report(kernel.plan.name, kernel.run_id, kernel.results, time.time(), time.time(), kernel.halted_by)
