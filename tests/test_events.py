"""The event bus routes each event only to the sinks that take its type, and the plain output
flushes once per turn of the event loop, not once per line."""

from __future__ import annotations

import asyncio
import io
import threading

from gxo.runtime.events import Events
from gxo.runtime.output import PlainSink


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def end(name: str) -> dict:
    return {"workload": name, "final_status": "Completed", "error": None, "ignored": False, "duration_ms": 0}


def test_a_sink_with_types_gets_only_those() -> None:
    seen: list[str] = []
    everything: list[str] = []
    events = Events("p", lambda e: e)

    class Picky:
        types = frozenset({"WorkloadEnd"})

        def __call__(self, event: dict) -> None:
            seen.append(event["type"])

    events.add(Picky())
    assert events.wants("WorkloadEnd") and not events.wants("WorkloadStatusChanged")
    events.emit("WorkloadStatusChanged", workload="a", old_status="Pending", new_status="Running")
    events.emit("WorkloadEnd", **end("a"))
    assert seen == ["WorkloadEnd"]
    events.add(lambda e: everything.append(e["type"]))  # a sink without types takes every event
    assert events.wants("WorkloadStatusChanged")
    events.emit("WorkloadStatusChanged", workload="a", old_status="Pending", new_status="Running")
    events.emit("WorkloadEnd", **end("a"))
    assert seen == ["WorkloadEnd", "WorkloadEnd"] and everything == ["WorkloadStatusChanged", "WorkloadEnd"]


def test_redaction_runs_only_for_wanted_events() -> None:
    redacted: list[str] = []
    events = Events("p", lambda e: redacted.append(e["type"]) or e)
    events.add(PlainSink(io.StringIO()))
    events.emit("ModuleExecutionStart", workload="a", loop_iteration=None)
    events.emit("WorkloadEnd", **end("a"))
    assert redacted == ["WorkloadEnd"]


def test_plain_lines_are_flushed_once_per_loop_turn() -> None:
    stream = CountingStream()
    events = Events("p", lambda e: e)
    events.add(PlainSink(stream))

    async def run() -> int:
        for i in range(100):  # one scheduler step finishing 100 inline workloads
            events.emit("WorkloadEnd", **end(f"w{i}"))
        assert stream.flushes == 0
        await asyncio.sleep(0)
        return stream.flushes

    assert asyncio.run(run()) == 1
    assert stream.getvalue().count("\n") == 100 and stream.getvalue().startswith("ok       w0 (0.00s)\n")


def test_a_line_written_off_the_loop_is_flushed_at_once() -> None:
    stream = CountingStream()
    events = Events("p", lambda e: e)
    events.add(PlainSink(stream))
    t = threading.Thread(target=lambda: events.emit("Log", workload="a", level="WARN", message="careful"))
    t.start()
    t.join()
    assert stream.flushes == 1 and stream.getvalue() == "warn     a: careful\n"
