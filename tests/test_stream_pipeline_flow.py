"""``stream:pipeline`` streams: records of a batch flow out before the input has ended, and a
pipeline with a whole-stream step (join, aggregate, format) waits for the end."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gxo.runtime.module import Context, ModuleError
from gxo.runtime.streams import Channel, RecordErrorSink, StreamInputs, StreamOutput
from gxo.stdlib.stream import StreamPipeline


def _ctx(inp: Channel, out: Channel) -> Context:
    return Context(workload="pipe", run_id="r", logger=None, workspace=None,  # type: ignore[arg-type]
                   state=dict, extras={"inputs": StreamInputs([("gen", inp)]),
                                       "output": StreamOutput(out, batch_size=10),
                                       "record_errors": RecordErrorSink()})


def _double(overlay: dict[str, Any]) -> dict[str, Any]:
    return {"n": overlay["n"], "d": overlay["n"] * 2}


async def _first_output_before_end(steps: list[dict[str, Any]]) -> tuple[list[Any] | None, Any]:
    inp, out = Channel(100), Channel(1000)
    task = asyncio.ensure_future(StreamPipeline().perform(_ctx(inp, out), {"steps": steps}))
    await inp.send([{"n": i} for i in range(10)])
    for _ in range(50):  # let the pipeline work on the first batch
        await asyncio.sleep(0)
    early = out.poll()  # what came out while the input is still open
    inp.close()
    summary = await task
    return early, summary


def test_a_batch_flows_out_before_the_input_ends() -> None:
    steps = [{"id": "double", "uses": "data:map", "with": {"template": _double}},
             {"id": "tag", "uses": "control:identity", "with": {"t": lambda o: f"t{o['n']}"}}]
    early, summary = asyncio.run(_first_output_before_end(steps))
    assert early == [{"n": i, "d": 2 * i, "t": f"t{i}"} for i in range(10)]
    assert summary["records_processed"] == 10
    assert summary["steps"]["double"] == {"records_in": 10, "records_out": 10}


def test_a_whole_stream_step_waits_for_the_end() -> None:
    steps = [{"id": "double", "uses": "data:map", "with": {"template": _double}},
             {"id": "total", "uses": "data:aggregate",
              "with": {"count": 1000, "aggregate_fields": [{"name": "sum", "op": "sum",
                                                            "source_field": "d"}]}}]
    early, summary = asyncio.run(_first_output_before_end(steps))
    assert early is None
    assert summary["steps"]["total"] == {"records_in": 10, "groups_emitted": 1}


def test_a_window_of_a_chained_aggregate_flows_out_before_the_input_ends() -> None:
    """A whole-stream step in a chain runs once, fed batch by batch: a count window that
    closes comes out (through the steps after it) while the input is still open."""
    steps = [{"id": "double", "uses": "data:map", "with": {"template": _double}},
             {"id": "fives", "uses": "data:aggregate",
              "with": {"count": 5, "aggregate_fields": [{"name": "sum", "op": "sum",
                                                         "source_field": "d"}]}},
             {"id": "tag", "uses": "control:identity", "with": {"t": lambda o: f"s{o['sum']}"}}]
    early, summary = asyncio.run(_first_output_before_end(steps))
    assert early == [{"sum": 20, "t": "s20"}, {"sum": 70, "t": "s70"}]  # 0..4 and 5..9, doubled
    assert summary["steps"]["fives"] == {"records_in": 10, "groups_emitted": 2}
    assert summary["steps"]["tag"] == {"t": "s70"}


def test_a_failing_whole_stream_step_fails_the_pipeline_without_hanging() -> None:
    steps = [{"id": "double", "uses": "data:map", "with": {"template": _double}},
             {"id": "bad", "uses": "data:aggregate", "with": {"aggregate_fields": []}}]

    async def main() -> None:
        inp, out = Channel(5), Channel(1000)

        async def produce() -> None:
            for i in range(0, 500, 5):  # more than the channels hold
                await inp.send([{"n": n} for n in range(i, i + 5)])
            inp.close()

        producer = asyncio.ensure_future(produce())
        try:
            await asyncio.wait_for(StreamPipeline().perform(_ctx(inp, out), {"steps": steps}), 10)
        finally:
            inp.discard()  # the kernel's part after perform: the producer is never left blocked
            await asyncio.wait_for(producer, 10)

    with pytest.raises(ModuleError, match=r"step bad \(data:aggregate\) failed: .*aggregate_fields"):
        asyncio.run(main())
