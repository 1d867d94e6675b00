"""Operator state: the kernel-owned state of stateful stream operators (design.md section 3)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from gxo.runtime.opstate import (
    EXTRAS_KEY,
    OperatorState,
    OperatorStates,
    operator_state_of,
)
from gxo.runtime.streams import Channel, RecordErrorSink, StreamInputs, StreamOutput
from gxo.stdlib.data import Aggregate, Join


def test_regions_and_cells_are_kept_and_counted() -> None:
    s = OperatorState("join")
    s.region("build:users")[1] = [{"id": 1}]
    s.region("build:users")[2] = [{"id": 2}]
    s.set("held", 2)
    assert s.region("build:users") is s.region("build:users")
    assert s.get("held") == 2 and s.get("absent", 7) == 7
    assert s.entries() == 3
    s.child("agg").region("groups")["k"] = [1]
    assert s.entries() == 4 and s.child("agg").owner == "join/agg"
    s.clear()
    assert s.entries() == 0 and s.snapshot() == {"regions": {}, "cells": {}}


def test_a_snapshot_does_not_change_with_the_state_and_restores_it() -> None:
    s = OperatorState("w")
    rows = s.region("build:a").setdefault("k", [])
    rows.append({"v": [1]})
    s.set("open", {"since": 3})
    s.child("step").set("n", 1)
    snap = s.snapshot()
    rows.append({"v": [2]})
    rows[0]["v"].append(9)
    s.child("step").set("n", 2)
    assert snap == {"regions": {"build:a": {"k": [{"v": [1]}]}}, "cells": {"open": {"since": 3}},
                    "children": {"step": {"regions": {}, "cells": {"n": 1}}}}
    t = OperatorState("w")
    t.restore(snap)
    assert t.snapshot() == snap
    t.region("build:a")["k"].append("x")  # the restored state is a copy, not the snapshot
    assert snap["regions"]["build:a"]["k"] == [{"v": [1]}]


@pytest.mark.parametrize("bad", [
    None, [], {"regions": []}, {"cells": {1: 2}}, {"regions": {"r": [1]}}, {"other": {}},
    {"children": {"c": {"regions": "x"}}},
])
def test_a_malformed_snapshot_is_refused_whole(bad: Any) -> None:
    s = OperatorState("w")
    s.set("keep", 1)
    with pytest.raises(ValueError, match="operator state of w"):
        s.restore(bad)
    assert s.get("keep") == 1  # nothing changed


def test_the_registry_starts_empty_states_and_drops_a_workload_with_its_iterations() -> None:
    states = OperatorStates()
    states.of("j").set("x", 1)
    assert states.of("j").get("x") == 1
    assert states.start("j").entries() == 0  # a run_once module starts from nothing
    states.of("j").set("x", 2)
    states.of("j[0]").set("x", 3)
    states.of("jx").set("x", 4)
    assert states.entries() == {"j": 1, "j[0]": 1, "jx": 1}
    snap = states.snapshot()
    states.drop("j")
    assert states.held() == ["jx"]
    states.restore(snap)
    assert states.held() == ["j", "j[0]", "jx"] and states.of("j[0]").get("x") == 3
    with pytest.raises(ValueError):
        states.restore([])


def test_outside_the_kernel_a_module_gets_a_private_state() -> None:
    ctx = SimpleNamespace(workload="w", extras={})
    s = operator_state_of(ctx)
    assert ctx.extras[EXTRAS_KEY] is s and operator_state_of(ctx) is s and s.owner == "w"


# -- the operators keep their state there ---------------------------------------------------------


def _ctx(state: OperatorState, inputs: list[tuple[str, Channel]], out: Channel) -> Any:
    return SimpleNamespace(workload="op", extras={
        "inputs": StreamInputs(inputs), "output": StreamOutput(out),
        "record_errors": RecordErrorSink(), EXTRAS_KEY: state})


async def _drain(ch: Channel) -> list[Any]:
    got: list[Any] = []
    async for batch in ch:
        got.extend(batch)
    return got


def test_a_join_keeps_its_build_table_in_the_operator_state() -> None:
    async def main() -> tuple[OperatorState, dict[str, Any], list[Any], dict[str, Any]]:
        state = OperatorState("joined")
        users, events, out = Channel(10), Channel(10), Channel(10)
        params = {"join_type": "left", "on": [{"stream": "users", "role": "build", "field": "id"},
                                              {"stream": "events", "role": "probe", "field": "id"}]}
        task = asyncio.ensure_future(Join().perform(_ctx(state, [("users", users), ("events", events)], out), params))
        reader = asyncio.ensure_future(_drain(out))
        await users.send([{"id": 1, "u": "a"}, {"id": 2, "u": "b"}, {"id": 2, "u": "c"}])
        users.close()
        await events.send([{"id": 2, "e": "x"}])
        for _ in range(20):
            await asyncio.sleep(0)
        seen = state.snapshot()  # while the join runs: the build table is in the operator state
        await events.send([{"id": 9, "e": "y"}])
        events.close()
        summary = await task
        out.close()
        return state, seen, await reader, summary

    state, seen, got, summary = asyncio.run(main())
    assert seen["regions"]["build:users"] == {1: [{"id": 1, "u": "a"}],
                                              2: [{"id": 2, "u": "b"}, {"id": 2, "u": "c"}]}
    assert seen["regions"]["matched"] == {2: True}
    assert got == [{"id": 2, "u": "b", "e": "x"}, {"id": 2, "u": "c", "e": "x"}, {"id": 9, "e": "y"}]
    assert summary == {"records_joined": 3, "probe_stream_records": 2, "build_stream_records": 3,
                       "skipped_key_errors": 0}
    assert summary is not state.region("counts")  # the summary is a copy


def test_an_aggregate_keeps_its_open_windows_in_the_operator_state() -> None:
    async def main() -> tuple[dict[str, Any], list[Any]]:
        state = OperatorState("agg")
        src, out = Channel(10), Channel(10)
        params = {"group_by_fields": ["g"], "count": 3,
                  "aggregate_fields": [{"name": "total", "op": "sum", "source_field": "v"}]}
        task = asyncio.ensure_future(Aggregate().perform(_ctx(state, [("src", src)], out), params))
        reader = asyncio.ensure_future(_drain(out))
        await src.send([{"g": "a", "v": 1}, {"g": "b", "v": 5}, {"g": "a", "v": 2}])
        for _ in range(20):
            await asyncio.sleep(0)
        seen = state.snapshot()
        await src.send([{"g": "a", "v": 3}])
        src.close()
        await task
        out.close()
        return seen, await reader

    seen, got = asyncio.run(main())
    groups = seen["regions"]["groups"]
    assert sorted(g[0] for g in groups.values()) == [("a",), ("b",)]  # two windows open
    assert got == [{"g": "a", "total": 6}, {"g": "b", "total": 5}]

