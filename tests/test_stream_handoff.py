"""The direct hand-over of a linear stretch of stream transforms (``streams.Handoff``): a batch
goes from the producer through the consumer's per-batch function without a channel queue or a
task switch, and nothing observable changes: every record, its order, the per-link counters,
the summaries and the record errors with their positions are those of the queued path."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from gxo.runtime.streams import BLOCK, DROP_NEW, Channel, Handoff, StreamInputs, StreamOutput

# -- the kernel on a whole linear chain -----------------------------------------------------------

CHAIN = """\
name: handoff-chain
schemaVersion: "1.0.0"
workloads:
  - name: numbers
    lifecycle: {policy: run_once}
    process: {module: exec, params: {command: sh, args: ["-c", "seq 1 999; echo oops; seq 1000 2500"]}}
    register: numbers
  - name: lines
    lifecycle: {policy: run_once}
    process: {module: data:parse, params: {content: "{{ .numbers.stdout }}", format: text_lines}}
  - name: nums
    lifecycle: {policy: run_once}
    stream_inputs: [lines]
    process: {module: data:map, params: {template: '{"n": {{ int .line }}}'}}
  - name: odd
    lifecycle: {policy: run_once}
    stream_inputs: [nums]
    process: {module: data:filter, params: {condition: "{{ (.n % 2) * 1000 / (.n % 250) }} > 0"}}
  - name: counted
    lifecycle: {policy: run_once}
    stream_inputs: [odd]
    process:
      module: data:aggregate
      params: {aggregate_fields: [{name: records, op: count}, {name: total, op: sum, source_field: "n"}]}
  - name: report
    lifecycle: {policy: run_once}
    stream_inputs: [counted]
    process: {module: data:format, params: {format: json}}
    register: report
"""


def _run_chain(tmp_path: Path) -> tuple[Any, Any, list[dict[str, Any]]]:
    from gxo.compiler.inmemory import compile_in_memory
    from gxo.runtime.events import Events
    from gxo.runtime.kernel import Kernel, RunOptions
    from gxo.runtime.secrets import EnvProvider, Tracker
    from gxo.runtime.state import StateStore
    from gxo.runtime.workspace import Workspace

    pb = tmp_path / "chain.yaml"
    pb.write_text(CHAIN)
    with open(os.devnull, "w") as devnull:
        loaded = compile_in_memory(str(pb), devnull)
    tracker = Tracker()
    seen: list[dict[str, Any]] = []
    events = Events("chain", tracker.redact_value)
    events.add(seen.append)
    workspace = Workspace.create()
    try:
        kernel = Kernel(loaded.plan, loaded.functions, state=StateStore(), workspace=workspace,
                        secrets=EnvProvider({}), tracker=tracker, events=events, options=RunOptions())
        report = asyncio.run(kernel.run())
    finally:
        workspace.remove()
    return kernel, report, seen


def test_a_linear_chain_hands_its_batches_over_and_loses_nothing(tmp_path: Path) -> None:
    """parse -> map -> filter -> aggregate -> format: 2501 lines, one that ``int`` refuses
    (a record error of the map at its input position 999), ten that divide by zero in the
    filter (record errors at the filter's input positions n - 1).  Every count, position and
    the result are computed here independently; the hand-over must have carried batches on
    every link of the stretch."""
    kernel, report, seen = _run_chain(tmp_path)
    assert not report.failed, {n: r.reason for n, r in report.results.items()}

    # the direct path was taken on every link whose consumer reads with ``each``
    wiring = kernel.wiring
    for consumer in ("nums", "odd", "counted"):
        assert wiring.handoff_in[consumer].delivered > 0, consumer
    assert "report" in wiring.handoff_in  # data:format reads the channel itself
    assert wiring.handoff_in["report"].delivered == 0

    summaries = {e["workload"]: e["summary"] for e in seen if e["type"] == "ModuleExecutionEnd"}
    assert summaries["lines"] == {"records_parsed": 2501}
    assert summaries["nums"] == {"records_in": 2501, "records_out": 2500}
    assert summaries["odd"] == {"records_in": 2500, "records_out": 1250}
    assert summaries["counted"]["records_in"] == 1250
    assert summaries["counted"]["groups_emitted"] == 1
    assert json.loads(summaries["report"]["formatted_content"]) == [
        {"records": 1250, "total": sum(range(1, 2501, 2))}]

    errors = [(e["workload"], e["producer"], e["item_id"]) for e in seen
              if e["type"] == "RecordErrorOccurred"]
    assert sorted(errors) == sorted([("nums", "lines", 999)]
                                    + [("odd", "nums", n - 1) for n in range(250, 2501, 250)])

    [end] = [e for e in seen if e["type"] == "PlaybookEnd"]
    links = {(s["producer"], s["consumer"]): (s["records_in"], s["records_out"], s["records_dropped"])
             for s in end["streams"]}
    assert links == {("lines", "nums"): (2501, 2501, 0), ("nums", "odd"): (2500, 2500, 0),
                     ("odd", "counted"): (1250, 1250, 0), ("counted", "report"): (1, 1, 0)}


# -- the hand-over between one producer and one consumer ------------------------------------------


def _link(capacity: int = 100, overflow: str = BLOCK) -> tuple[Channel, StreamInputs, StreamOutput, Handoff]:
    ch = Channel(capacity, overflow)
    h = Handoff(ch)
    out = StreamOutput(ch, batch_size=10, flush_interval=0.0005, handoff=h)
    return ch, StreamInputs([("p", ch)], handoff=h), out, h


def test_batches_keep_their_order_when_direct_and_queued_batches_mix() -> None:
    """A consumer that sometimes waits inside its function, and partial batches that the
    flush timer queues in the channel: every record arrives once, in order, the link counts
    them all, and both the producer's task and the consumer's own task ran batches."""

    async def main() -> tuple[list[int], list[int], Channel, Handoff, set[str]]:
        ch, inputs, out, h = _link(capacity=25)
        got: list[int] = []
        sent: list[int] = []
        tasks: set[str] = set()

        async def process(producer: str, batch: list[Any]) -> None:
            assert producer == "p"
            tasks.add(asyncio.current_task().get_name())  # type: ignore[union-attr]
            got.extend(r["i"] for r in batch)
            if batch[0]["i"] % 3 == 0:
                await asyncio.sleep(0)  # busy: a producer that sends now waits

        async def produce() -> None:
            n = 0
            for k in range(120):
                batch = [{"i": n + j} for j in range(7)]
                sent.extend(r["i"] for r in batch)
                n += 7
                await out.send_batch(batch)
                if k % 5 == 0:
                    sent.append(n)
                    await out.emit([{"i": n}])  # a partial batch, left to the flush timer
                    n += 1
                    await asyncio.sleep(0.003)
            await out.flush()
            ch.close()

        consumer = asyncio.ensure_future(inputs.each(process))
        consumer.set_name("consumer")
        producer = asyncio.ensure_future(produce())
        producer.set_name("producer")
        await asyncio.wait_for(asyncio.gather(producer, consumer), 10)
        return got, sent, ch, h, tasks

    got, sent, ch, h, tasks = asyncio.run(main())
    assert got == sent
    assert ch.records_in == ch.records_out == len(sent) and ch.buffered == 0
    assert tasks == {"producer", "consumer"}  # both paths were taken
    assert h.delivered > 0


@pytest.mark.parametrize("reader", ["fields", "records", "channel"])
def test_a_batch_sent_as_one_fields_values_reaches_every_reader_as_its_records(reader: str) -> None:
    """``send_field``: a consumer on the hand-over that takes fields gets the values (the records
    are never built); one that does not, or one reading the channel, gets the records
    ``{field: value}``; mixed with ordinary batches and timer-flushed ones, in order, every
    record counted once on the link."""

    async def main() -> tuple[list[Any], list[Any], Channel, Handoff, int]:
        ch, inputs, out, h = _link(capacity=25)
        got: list[Any] = []
        as_values = [0]

        async def process(producer: str, batch: list[Any]) -> None:
            assert producer == "p"
            got.extend(batch)
            if len(got) % 3 == 0:
                await asyncio.sleep(0)

        async def fields(producer: str, field: str, values: list[Any]) -> None:
            assert producer == "p" and field == "line"
            as_values[0] += 1
            got.extend({field: v} for v in values)

        async def read() -> None:
            if reader == "channel":
                async for _name, batch in inputs:
                    got.extend(batch)
            else:
                await inputs.each(process, fields if reader == "fields" else None)

        async def produce() -> list[Any]:
            sent: list[Any] = []
            for k in range(60):
                values = [f"{k}-{j}" for j in range(k % 9)]
                sent.extend({"line": v} for v in values)
                await out.send_field("line", values)
                if k % 4 == 0:
                    sent.append({"line": k})
                    await out.emit([{"line": k}])  # pending, sent before the next batch
                if k % 7 == 0:
                    await asyncio.sleep(0.002)  # the flush timer queues the pending one
            await out.flush()
            ch.close()
            return sent

        consumer = asyncio.ensure_future(read())
        await asyncio.sleep(0)
        sent = await asyncio.wait_for(produce(), 10)
        await asyncio.wait_for(consumer, 10)
        return got, sent, ch, h, as_values[0]

    got, sent, ch, h, as_values = asyncio.run(main())
    assert got == sent
    assert ch.records_in == ch.records_out == len(sent) and ch.buffered == 0
    if reader == "fields":
        assert as_values > 0 and h.delivered > 0
    else:
        assert as_values == 0
        assert (h.delivered > 0) == (reader == "records")


@pytest.mark.parametrize("how", ["emit", "emit_field"])
def test_emit_field_sends_the_batches_emit_sends(how: str) -> None:
    """``emit_field`` (exec's stdout_records) sends the same batches as ``emit`` of the same
    records, in the same order, whatever is pending: the ones that take the hand-over as
    fields reach a consumer that takes them, the others as records."""

    async def main() -> tuple[list[tuple[str, list[Any]]], Channel]:
        ch, inputs, out, h = _link(capacity=25)
        seen: list[tuple[str, list[Any]]] = []

        async def process(_producer: str, batch: list[Any]) -> None:
            seen.append(("records", list(batch)))

        async def fields(_producer: str, field: str, values: list[Any]) -> None:
            seen.append(("fields", [{field: v} for v in values]))

        consumer = asyncio.ensure_future(inputs.each(process, fields))
        await asyncio.sleep(0)
        n = 0
        for k in (3, 7, 10, 25, 4, 0, 16, 10, 1, 33):
            values = list(range(n, n + k))
            n += k
            if how == "emit":
                await out.emit([{"line": v} for v in values])
            else:
                await out.emit_field("line", values)
        await out.flush()
        ch.close()
        await asyncio.wait_for(consumer, 10)
        return seen, ch

    seen, ch = asyncio.run(main())
    batches = [batch for _, batch in seen]
    assert [r["line"] for b in batches for r in b] == list(range(109))
    assert [len(b) for b in batches] == [10] * 10 + [9]  # emit's batches: full ones, then the rest
    assert ch.records_in == ch.records_out == 109
    kinds = {kind for kind, _ in seen}
    assert kinds == ({"records", "fields"} if how == "emit_field" else {"records"})


def test_a_failure_in_a_delivered_batch_fails_the_consumer_not_the_producer() -> None:
    async def main() -> tuple[BaseException | None, int, Channel]:
        ch, inputs, out, h = _link()
        seen: list[int] = []

        async def process(_producer: str, batch: list[Any]) -> None:
            seen.extend(batch)
            if 3 in batch:
                raise ValueError("bad batch")

        consumer = asyncio.ensure_future(inputs.each(process))
        await asyncio.sleep(0)  # the consumer attaches and waits
        for i in range(5):
            await out.send_batch([i])  # the producer never sees the consumer's failure
        failure = None
        try:
            await asyncio.wait_for(consumer, 5)
        except ValueError as exc:
            failure = exc
        assert h.delivered == 4  # 0..3 directly; 4 queued once the consumer had failed
        ch.discard()  # the kernel lets go of the failed consumer's inputs
        ch.close()
        return failure, len(seen), ch

    failure, n_seen, ch = asyncio.run(main())
    assert str(failure) == "bad batch"
    assert n_seen == 4
    assert ch.records_in == 5 and ch.records_out == 4 and ch.records_discarded == 1


@pytest.mark.parametrize("overflow", [DROP_NEW])
def test_only_a_blocking_link_hands_batches_over(overflow: str) -> None:
    """On a link that may drop records, every batch goes through the channel and its policy."""

    async def main() -> tuple[list[Any], Handoff]:
        ch, inputs, out, h = _link(capacity=10, overflow=overflow)
        got: list[Any] = []

        async def process(_producer: str, batch: list[Any]) -> None:
            got.extend(batch)

        consumer = asyncio.ensure_future(inputs.each(process))
        await asyncio.sleep(0)
        for i in range(3):
            await out.send_batch([i])
        ch.close()
        await asyncio.wait_for(consumer, 5)
        return got, h

    got, h = asyncio.run(main())
    assert got == [0, 1, 2] and h.delivered == 0


@pytest.mark.parametrize("take_fields", [True, False])
def test_exec_stdout_records_keep_their_lines_whatever_the_chunks(take_fields: bool) -> None:
    """``exec``'s ``stdout_records``: every line once, in order, its ``\\r\\n`` or ``\\n`` end
    removed, a last line without an end sent too, however the output is cut into reads and
    whether the consumer takes the hand-over as fields or not."""
    from gxo.stdlib.core import _stream_lines

    text = "".join(f"line {i}" + ("\r\n" if i % 3 == 0 else "\n") for i in range(250)) + "tail"
    data = text.encode()

    class Reader:
        def __init__(self, cuts: list[int]) -> None:
            self.pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]

        async def read(self, _n: int) -> bytes:
            return self.pieces.pop(0) if self.pieces else b""

    async def main(cuts: list[int]) -> list[Any]:
        ch, inputs, out, _h = _link(capacity=25)
        got: list[Any] = []

        async def process(_producer: str, batch: list[Any]) -> None:
            got.extend(r["line"] for r in batch)

        async def fields(_producer: str, _field: str, values: list[Any]) -> None:
            got.extend(values)

        consumer = asyncio.ensure_future(inputs.each(process, fields if take_fields else None))
        await asyncio.sleep(0)
        await _stream_lines(Reader(cuts), out)
        ch.close()
        await asyncio.wait_for(consumer, 10)
        return got

    expected = [f"line {i}" for i in range(250)] + ["tail"]
    for cuts in ([], [5], [700, 701, 2000], list(range(37, len(data), 37))):
        assert asyncio.run(main(cuts)) == expected, cuts
