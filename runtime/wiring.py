"""The kernel's side of the streaming data plane: the channels of a plan and their end marks.

One ``Channel`` per (producer, consumer) link of ``plan.channels``.  A workload's module gets
its ``StreamInputs`` / ``StreamOutput`` / ``RecordErrorSink`` through ``Context.extras``; the
kernel (this class), never the module, closes a producer's channels: a normal end-of-stream
after ``perform`` returns or when the producer is skipped or never runs, an error mark when it
fails.  Stream data never goes through the state store.
"""

from __future__ import annotations

from typing import Any

from gxo.runtime.plan import Plan
from gxo.runtime.streams import (
    DEFAULT_FLUSH_INTERVAL,
    Channel,
    FanOut,
    Handoff,
    RecordErrorSink,
    StreamInputs,
    StreamOutput,
)


class StreamWiring:
    def __init__(self, plan: Plan, events: Any) -> None:
        self.events = events
        self.links: dict[tuple[str, str], Channel] = {}
        self.outputs: dict[str, list[Channel]] = {}
        self.inputs: dict[str, list[tuple[str, Channel]]] = {}
        self.capacity: dict[str, int] = {}
        #: per producer: the shortest flush_interval of its links (a partial batch waits no longer)
        self.flush_interval: dict[str, float] = {}
        self.sinks: dict[str, RecordErrorSink] = {}
        self.closed: set[str] = set()
        # an event_driven workload reads its lifecycle source's stream (its dispatcher does)
        order = {w.name: w.stream_inputs or ((w.lifecycle.source,) if w.lifecycle.source else ())
                 for w in plan.workloads}
        for ch in plan.channels:
            channel = Channel(ch.capacity, ch.overflow, on_violation=self._violation(ch.producer, ch.consumer))
            self.links[(ch.producer, ch.consumer)] = channel
            self.outputs.setdefault(ch.producer, []).append(channel)
            self.capacity[ch.producer] = max(self.capacity.get(ch.producer, 1), ch.capacity)
            self.flush_interval[ch.producer] = min(self.flush_interval.get(ch.producer, ch.flush_interval),
                                                   ch.flush_interval)
        for consumer, names in order.items():
            pairs = [(p, self.links[(p, consumer)]) for p in names if (p, consumer) in self.links]
            if pairs:
                self.inputs[consumer] = pairs
        #: per link of a linear stretch (the producer's only consumer, the consumer's only
        #: input, neither one a loop): the direct hand-over of its batches
        #: (``streams.Handoff``), by each end
        self.handoff_out: dict[str, Handoff] = {}
        self.handoff_in: dict[str, Handoff] = {}
        looped = {w.name for w in plan.workloads if w.loop is not None}
        for consumer, pairs in self.inputs.items():
            producer, channel = pairs[0]
            if len(pairs) == 1 and len(self.outputs[producer]) == 1 and not looped & {producer, consumer}:
                self.handoff_out[producer] = self.handoff_in[consumer] = Handoff(channel)

    def __bool__(self) -> bool:
        return bool(self.links)

    def _violation(self, producer: str, consumer: str) -> Any:
        def report(exc: BaseException) -> None:
            self.events.emit("PolicyViolation", workload=producer, consumer=consumer, error=str(exc))
        return report

    def is_consumer(self, name: str) -> bool:
        return name in self.inputs

    def extras_for(self, name: str) -> dict[str, Any]:
        """What a module of workload ``name`` gets in ``ctx.extras``."""
        extras: dict[str, Any] = {}
        ins = self.inputs.get(name)
        if ins:
            extras["inputs"] = StreamInputs(ins, handoff=self.handoff_in.get(name))
        outs = self.outputs.get(name)
        if outs:
            target: Channel | FanOut = outs[0] if len(outs) == 1 else FanOut(outs)
            extras["output"] = StreamOutput(target, batch_size=max(1, min(self.capacity.get(name, 100), 256)),
                                            flush_interval=self.flush_interval.get(name, DEFAULT_FLUSH_INTERVAL),
                                            handoff=self.handoff_out.get(name))
        sink = self.sinks.get(name)
        if sink is None:
            sink = RecordErrorSink(on_error=self._record_error(name))
            self.sinks[name] = sink
        extras["record_errors"] = sink
        return extras

    def _record_error(self, workload: str) -> Any:
        def report(err: Any) -> None:
            self.events.emit("RecordErrorOccurred", workload=workload, item_id=err.position,
                             producer=err.producer, error_message=err.message)
        return report

    async def finish(self, name: str, extras: dict[str, Any] | None, error: str | None) -> None:
        """After ``perform``: flush and end the outputs (error mark on failure); let go of the
        inputs so that no producer stays blocked on a consumer that stopped early."""
        out = extras.get("output") if extras else None
        if out is not None and error is None:
            try:
                await out.flush()
            except BaseException as exc:  # noqa: BLE001 - a failed flush fails the stream, not the kernel
                error = f"could not deliver its last records: {exc}"
        self.end(name, error)

    def end(self, name: str, error: str | None = None) -> None:
        """End ``name``'s streams now (skipped, never started, finished or failed)."""
        if name in self.closed:
            return
        self.closed.add(name)
        for ch in self.outputs.get(name, ()):
            if error is None:
                ch.close()
            else:
                ch.close_error(error)
        for _, ch in self.inputs.get(name, ()):
            ch.discard()

    def end_all(self, error: str | None = None) -> None:
        for name in list(self.outputs) + list(self.inputs):
            self.end(name, error)

    def record_errors(self, name: str) -> int:
        sink = self.sinks.get(name)
        return sink.count if sink is not None else 0

    def counters(self) -> list[dict[str, Any]]:
        """Records in/out/dropped per link, for the recap and the events."""
        out = []
        for (p, c), ch in self.links.items():
            out.append({"producer": p, "consumer": c, "records_in": ch.records_in, "records_out": ch.records_out,
                        "records_dropped": ch.records_dropped + ch.records_discarded})
        return out
