"""``stream:pipeline`` streams: records of a batch flow out before the input has ended, and a
pipeline with a whole-stream step (join, aggregate, format) waits for the end."""

from __future__ import annotations

import asyncio
from typing import Any

from gxo.runtime.module import Context
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
