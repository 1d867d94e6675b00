"""Channels of the data plane: order, backpressure, overflow strategies, ends, fan-out, fan-in,
random topologies of real stream modules (joins included), lossy strategies on random schedules,
and the compiled channel against its pure twin."""

from __future__ import annotations

import asyncio
import collections
import importlib.util
import itertools
import math
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import gxo.runtime
import pytest
from gxo.runtime import _channel_cy
from gxo.runtime.streams import RecordErrorSink, StreamInputs, StreamOutput
from gxo.stdlib.core import Passthrough
from gxo.stdlib.data import Filter, Join
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

RUNTIME_DIR = Path(gxo.runtime.__file__).parent


def load_uncompiled_module(name: str) -> ModuleType:
    """The pure-Python twin of ``gxo.runtime.<name>``, loaded from its source under another name."""
    spec = importlib.util.spec_from_file_location(f"_gxo_pure_twin_{name}", RUNTIME_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PURE = load_uncompiled_module("_channel_cy")
IMPLS = {"compiled": _channel_cy, "pure": PURE}


@pytest.fixture(params=sorted(IMPLS))
def impl(request: pytest.FixtureRequest) -> ModuleType:
    return IMPLS[request.param]


def run(coro: Any, timeout: float = 10.0) -> Any:
    async def guarded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(guarded())


def balanced(ch: Any) -> bool:
    c = ch.counters()
    return c["records_in"] == c["records_out"] + c["records_dropped"] + c["records_discarded"] \
        + c["buffered"]


async def collect(ch: Any, delay: float = 0.0) -> list[list[Any]]:
    got = []
    async for batch in ch:
        got.append(list(batch))
        if delay:
            await asyncio.sleep(delay)
    return got


# --------------------------------------------------------------------------- one link


def test_order_is_kept_across_batches_and_splits(impl: ModuleType) -> None:
    async def main() -> list[int]:
        ch = impl.Channel(7)
        consumer = asyncio.create_task(collect(ch))
        n = 0
        for size in [1, 3, 10, 0, 7, 25, 2]:
            await ch.send(list(range(n, n + size)))
            n += size
        ch.close()
        batches = await consumer
        assert all(batches)
        assert balanced(ch) and ch.records_out == n
        return [r for b in batches for r in b]

    assert run(main()) == list(range(48))


def test_backpressure_slow_consumer_throttles_a_fast_producer(impl: ModuleType) -> None:
    capacity = 10

    async def main() -> None:
        ch = impl.Channel(capacity)
        ahead = []
        received = 0

        async def slow() -> None:
            nonlocal received
            async for batch in ch:
                ahead.append(ch.records_in - ch.records_out)
                for _ in batch:
                    received += 1
                    await asyncio.sleep(0.0005)

        consumer = asyncio.create_task(slow())
        for i in range(0, 400, 8):
            await ch.send(list(range(i, i + 8)))
            # the producer is never more than `capacity` records ahead of what was taken
            assert ch.records_in - ch.records_out <= capacity
            assert ch.buffered <= capacity
            ahead.append(ch.records_in - received)
        ch.close()
        await consumer
        assert received == 400
        # ...and it really was held back: it stayed within one capacity plus the batch taken
        assert max(ahead) <= 2 * capacity + 8

    run(main())


def test_drop_new_discards_the_newest_and_reports(impl: ModuleType) -> None:
    async def main() -> None:
        violations: list[Any] = []
        ch = impl.Channel(5, "drop_new", on_violation=violations.append)
        assert await ch.send([0, 1, 2]) == 0
        assert await ch.send([3, 4, 5, 6]) == 2
        assert ch.records_dropped == 2 and ch.buffered == 5
        assert len(violations) == 1 and isinstance(violations[0], impl.PolicyViolation)
        assert violations[0].dropped == 2 and "drop_new" in str(violations[0])
        assert ch.poll() == [0, 1, 2, 3, 4]
        ch.close()
        assert ch.poll() is None and ch.ended
        assert (ch.records_in, ch.records_out, ch.records_dropped) == (7, 5, 2)

    run(main())


def test_drop_oldest_evicts_the_oldest(impl: ModuleType) -> None:
    async def main() -> None:
        ch = impl.Channel(5, "drop_oldest")
        mine = [0, 1, 2]
        await ch.send(mine)
        assert await ch.send([3, 4, 5, 6]) == 2
        assert mine == [0, 1, 2]  # the producer's list is never changed
        assert await ch.send(list(range(10, 22))) == 12  # larger than the capacity
        assert ch.poll() == [17, 18, 19, 20, 21]
        assert (ch.records_in, ch.records_out, ch.records_dropped) == (19, 5, 14)
        assert balanced(ch)

    run(main())


def test_error_strategy_refuses_what_does_not_fit(impl: ModuleType) -> None:
    async def main() -> None:
        ch = impl.Channel(5, "error")
        await ch.send([0, 1, 2])
        with pytest.raises(impl.PolicyViolation, match="2 records refused"):
            await ch.send([3, 4, 5, 6])
        assert ch.poll() == [0, 1, 2, 3, 4]  # the prefix that fitted was queued
        assert (ch.records_in, ch.records_out, ch.records_dropped) == (7, 5, 2)

    run(main())


@pytest.mark.parametrize("overflow", ["drop_new", "drop_oldest", "error"])
def test_counters_add_up_under_lossy_strategies(impl: ModuleType, overflow: str) -> None:
    async def main() -> None:
        ch = impl.Channel(4, overflow)
        consumer = asyncio.create_task(collect(ch, delay=0.001))
        for i in range(60):
            try:
                await ch.send([i, i])
            except impl.PolicyViolation:
                pass
            if i % 7 == 0:
                await asyncio.sleep(0.002)
        ch.close()
        got = [r for b in await consumer for r in b]
        assert ch.records_in == 120
        assert ch.records_in == ch.records_out + ch.records_dropped
        assert len(got) == ch.records_out and ch.records_dropped > 0
        assert got == sorted(got)  # what survives keeps its order

    run(main())


def test_error_end_of_stream_reaches_the_reader_after_the_records(impl: ModuleType) -> None:
    async def main() -> None:
        ch = impl.Channel(10)
        await ch.send([1, 2])
        ch.close_error("exit code 2")
        assert ch.failed and ch.closed
        assert await ch.receive() == [1, 2]
        with pytest.raises(impl.UpstreamFailed, match="exit code 2"):
            await ch.receive()
        with pytest.raises(impl.ChannelClosed):
            await ch.send([3])

    run(main())


def test_end_wakes_a_waiting_reader(impl: ModuleType) -> None:
    async def main() -> None:
        ch = impl.Channel(3)
        reader = asyncio.create_task(collect(ch))
        await asyncio.sleep(0.01)
        ch.close()
        assert await reader == []

    run(main())


def test_unbuffered_rendezvous(impl: ModuleType) -> None:
    async def main() -> None:
        ch = impl.Channel(0)
        send = asyncio.create_task(ch.send([1, 2, 3]))
        await asyncio.sleep(0.01)
        assert not send.done()  # nobody took it yet
        assert await ch.receive() == [1, 2, 3]
        await asyncio.sleep(0)
        assert send.done()
        # a cancelled rendezvous withdraws its batch
        send = asyncio.create_task(ch.send([4]))
        await asyncio.sleep(0.01)
        send.cancel()
        with pytest.raises(asyncio.CancelledError):
            await send
        assert ch.buffered == 0 and ch.records_in == 3 and balanced(ch)
        # a lossy strategy hands over only to a consumer already waiting
        lossy = impl.Channel(0, "drop_new")
        assert await lossy.send([1]) == 1
        reader = asyncio.create_task(lossy.receive())
        await asyncio.sleep(0.01)
        assert await lossy.send([2]) == 0
        assert await reader == [2]

    run(main())


def test_a_blocked_send_honours_cancellation(impl: ModuleType) -> None:
    async def main() -> None:
        ch = impl.Channel(2)
        send = asyncio.create_task(ch.send([1, 2, 3, 4, 5]))
        await asyncio.sleep(0.01)
        assert not send.done() and ch.buffered == 2
        send.cancel()
        with pytest.raises(asyncio.CancelledError):
            await send
        assert ch.records_in == 2 and balanced(ch)  # only what was queued was sent
        ch.close()
        assert await collect(ch) == [[1, 2]]

    run(main())


def test_discard_releases_a_blocked_producer(impl: ModuleType) -> None:
    async def main() -> None:
        ch = impl.Channel(1)
        send = asyncio.create_task(ch.send([1, 2, 3]))
        await asyncio.sleep(0.01)
        ch.discard()
        await send
        await ch.send([4])
        assert ch.records_discarded == 4 and ch.records_out == 0 and balanced(ch)

    run(main())


# --------------------------------------------------------------------------- fan-out / fan-in


def test_fan_out_gives_every_consumer_its_own_copy(impl: ModuleType) -> None:
    async def main() -> None:
        chans = [impl.Channel(4) for _ in range(3)]
        fan = impl.FanOut(chans)
        records = [{"n": i, "tags": ["a"]} for i in range(10)]
        readers = [asyncio.create_task(collect(ch)) for ch in chans]
        for i in range(0, 10, 3):
            await fan.send(records[i:i + 3])
        fan.close()
        got = [[r for b in await t for r in b] for t in readers]
        assert got[0] == got[1] == got[2] == records
        assert got[0][0] is not got[1][0] and got[0][0]["tags"] is not got[1][0]["tags"]
        assert got[2][0] is records[0]  # the last consumer takes the producer's own records
        got[0][0]["tags"].append("changed")
        assert records[0]["tags"] == ["a"]

    run(main())


def test_fan_in_reads_every_input_concurrently() -> None:
    """A consumer blocked on nothing: a fast input never waits for a slow one to end."""

    async def main() -> None:
        slow, fast = _channel_cy.Channel(1), _channel_cy.Channel(1)
        inputs = StreamInputs({"slow": slow, "fast": fast})
        seen: list[tuple[str, Any]] = []

        async def consume() -> None:
            async for name, batch in inputs:
                seen.extend((name, r) for r in batch)

        async def produce(ch: Any, n: int, delay: float) -> None:
            for i in range(n):
                await ch.send([i])
                await asyncio.sleep(delay)
            ch.close()

        await asyncio.gather(consume(), produce(slow, 3, 0.02), produce(fast, 30, 0))
        assert [r for n, r in seen if n == "fast"] == list(range(30))
        assert [r for n, r in seen if n == "slow"] == [0, 1, 2]
        assert seen.index(("fast", 29)) < seen.index(("slow", 2))

    run(main())


def test_fan_in_raises_upstream_failed_with_the_producer() -> None:
    async def main() -> None:
        a, b = _channel_cy.Channel(5), _channel_cy.Channel(5)
        inputs = StreamInputs([("a", a), ("b", b)])
        await a.send([1])
        a.close()
        b.close_error("boom")
        with pytest.raises(_channel_cy.UpstreamFailed, match="input b failed: boom") as info:
            await inputs.drain()
        assert info.value.producer == "b"

    run(main())


# --------------------------------------------------------------------------- flush interval


def test_a_partial_batch_is_sent_after_flush_interval(impl: ModuleType) -> None:
    """A slow producer's records reach the consumer within flush_interval, not once 100 have
    collected; a full batch or ``flush`` sends at once and stops the timer."""

    async def main() -> None:
        ch = impl.Channel(100)
        out = StreamOutput(ch, batch_size=100, flush_interval=0.05)
        await out.emit_one({"i": 0})
        await out.emit([{"i": 1}, {"i": 2}])
        assert ch.buffered == 0  # a partial batch waits for more records ...
        await asyncio.sleep(0.12)
        assert ch.poll() == [{"i": 0}, {"i": 1}, {"i": 2}]  # ... but no longer than 50 ms
        await out.emit([{"i": n} for n in range(3, 104)])  # one full batch and a partial one
        assert len(ch.poll()) == 100
        await out.flush()
        assert ch.poll() == [{"i": 103}]
        await asyncio.sleep(0.12)
        assert ch.buffered == 0 and out._timer is None  # nothing pending: nothing armed

        slow = StreamOutput(ch, batch_size=100, flush_interval=10.0)
        await slow.emit_one({"i": "late"})
        await asyncio.sleep(0.12)
        assert ch.buffered == 0  # its interval has not passed
        await slow.flush()
        assert ch.poll() == [{"i": "late"}]
        assert balanced(ch)

    run(main())


def test_the_flush_timer_waits_for_room_without_blocking(impl: ModuleType) -> None:
    """Under ``block`` with a full channel the timer does not wait: it tries again one interval
    later, and the order of the records on the link is kept."""

    async def main() -> None:
        ch = impl.Channel(4)
        out = StreamOutput(ch, batch_size=4, flush_interval=0.02)
        await out.emit([1, 2, 3, 4])  # the channel is full
        await out.emit([5, 6])
        await asyncio.sleep(0.08)
        assert ch.buffered == 4  # no room: 5 and 6 are still pending
        assert ch.poll() == [1, 2, 3, 4]
        await asyncio.sleep(0.08)
        assert ch.poll() == [5, 6]  # sent once there was room
        await out.emit_one(7)
        ch.close()
        await asyncio.sleep(0.05)  # the timer finds the stream ended: no error, nothing sent
        assert ch.poll() is None

    run(main())


# --------------------------------------------------------------------------- random topologies


def _ctx(name: str, inputs: StreamInputs | None, out: StreamOutput | None) -> Any:
    extras: dict[str, Any] = {"record_errors": RecordErrorSink()}
    if inputs is not None:
        extras["inputs"] = inputs
    if out is not None:
        extras["output"] = out
    return SimpleNamespace(workload=name, extras=extras)


# Records are compared in a canonical, hashable form: a source record is ``(src, seq)``; a join's
# nested output is ``("join", ((nesting key, part or None), ...))``, sorted by nesting key, so a
# record stays identifiable through any number of passthroughs, filters and joins.


def _canon(record: Any) -> Any:
    if record is None:
        return None
    if "src" in record:
        return (record["src"], record["seq"])
    return ("join", tuple(sorted((k, _canon(v)) for k, v in record.items())))


def _weight(canon: Any) -> int:
    """The sum of the ``seq`` of every source record inside; filters and join keys use it."""
    if canon is None:
        return 0
    if canon[0] == "join":
        return sum(_weight(part) for _, part in canon[1])
    return int(canon[1])


def _nest(name: str) -> str:
    return f"at_{name}"


def _join_reference(n: dict[str, Any], inputs: dict[str, collections.Counter],
                    modulus: int) -> collections.Counter:
    """The rows a join must emit, from the multisets of its inputs, key by key.

    With P the probe records and B1..Bk the records of each build side holding a key: inner
    emits P x B1 x ... x Bk when every one of them is non-empty (a partial match is no match).
    left adds, for a probe record without a full match, its rows with None for each build side
    that lacks the key. right adds, for a key of some build side without a full match, the rows
    of the build sides (None where a side lacks it) with the probe None. outer keeps every
    record at least once: left's rows, plus right's rows for the keys no probe record has.
    With one build side this is the textbook definition of the four joins."""
    probe = n["probe"]
    builds = [i for i in n["inputs"] if i != probe]
    by_key: dict[str, dict[int, list]] = {}
    for i in n["inputs"]:
        by_key[i] = collections.defaultdict(list)
        for rec in inputs[i].elements():
            by_key[i][_weight(rec) % modulus].append(rec)

    def row(probe_rec: Any, combo: tuple) -> tuple:
        parts = dict(zip(builds, combo), **{probe: probe_rec})
        return ("join", tuple(sorted((_nest(i), parts[i]) for i in n["inputs"])))

    jt = n["join_type"]
    rows: collections.Counter = collections.Counter()
    for key in set().union(*by_key.values()):
        ps = by_key[probe].get(key, [])
        bs = [by_key[b].get(key, []) for b in builds]
        padded = [b or [None] for b in bs]
        if ps and all(bs):
            rows.update(row(p, c) for p in ps for c in itertools.product(*bs))
            continue
        if ps and jt in ("left", "outer"):
            rows.update(row(p, c) for p in ps for c in itertools.product(*padded))
        if any(bs) and (jt == "right" or (jt == "outer" and not ps)):
            rows.update(row(None, c) for c in itertools.product(*padded))
    return rows


def _expect(n: dict[str, Any], expected: dict[str, collections.Counter],
            modulus: int) -> collections.Counter:
    """What node ``n`` must emit (a multiset), from what its inputs must emit."""
    if n["kind"] == "source":
        return collections.Counter((n["name"], i) for i in range(n["n"]))
    if n["kind"] == "join":
        return _join_reference(n, expected, modulus)
    want: collections.Counter = collections.Counter()
    for i in n["inputs"]:
        want.update(r for r in expected[i].elements() if _keeps(n, r))
    return want


def _keeps(n: dict[str, Any], canon: Any) -> bool:
    return n["kind"] != "filter" or _weight(canon) % n["mod"] != 0


def _join_rows_bound(n: dict[str, Any], inputs: dict[str, collections.Counter],
                     modulus: int) -> int:
    """At most this many rows, whatever the join type: per key, the product over the inputs of
    the records holding it (a side that lacks it counts as one None)."""
    per_key = {i: collections.Counter(_weight(r) % modulus for r in inputs[i].elements())
               for i in n["inputs"]}
    return sum(math.prod(max(per_key[i][key], 1) for i in n["inputs"])
               for key in set().union(*per_key.values()))


JOIN_ROWS_BUDGET = 400  # a join whose output would be larger is drawn as a passthrough instead


@st.composite
def topologies(draw: st.DrawFn) -> dict[str, Any]:
    modulus = draw(st.integers(2, 5))  # source records carry k = seq % modulus, the join key
    n_sources = draw(st.integers(1, 3))
    nodes: list[dict[str, Any]] = [
        {"name": f"s{i}", "kind": "source", "inputs": [], "n": draw(st.integers(0, 25))}
        for i in range(n_sources)
    ]
    expected = {n["name"]: _expect(n, {}, modulus) for n in nodes}
    flat = {n["name"] for n in nodes}  # nodes whose records all are source records (have k)
    for j in range(draw(st.integers(1, 6))):
        earlier = [n["name"] for n in nodes]
        kinds = ["passthrough", "filter"] + (["join"] * 2 if len(earlier) >= 2 else [])
        kind = draw(st.sampled_from(kinds))
        node: dict[str, Any] = {"name": f"n{j}", "kind": kind, "mod": draw(st.integers(2, 4))}
        if kind == "filter":
            node["inputs"] = [draw(st.sampled_from(earlier))]
        elif kind == "passthrough":
            node["inputs"] = draw(st.lists(st.sampled_from(earlier), min_size=1, max_size=3,
                                           unique=True))
        else:
            ins = draw(st.lists(st.sampled_from(earlier), min_size=2, max_size=3, unique=True))
            node.update(inputs=ins, join_type=draw(st.sampled_from(["inner", "left", "right",
                                                                    "outer"])),
                        probe=draw(st.sampled_from(ins)),
                        # the key: field k where every record has it, else (or by choice) a
                        # per-record template computing the same key
                        by_field={i: i in flat and draw(st.booleans()) for i in ins})
            if _join_rows_bound(node, expected, modulus) > JOIN_ROWS_BUDGET:
                node["kind"] = "passthrough"
        expected[node["name"]] = _expect(node, expected, modulus)
        if node["kind"] != "join" and all(i in flat for i in node["inputs"]):
            flat.add(node["name"])
        nodes.append(node)
    capacities = draw(st.lists(st.integers(0, 5), min_size=30, max_size=30))
    batch = draw(st.integers(1, 4))
    return {"nodes": nodes, "capacities": capacities, "batch": batch, "modulus": modulus}


def _join_params(n: dict[str, Any], modulus: int) -> dict[str, Any]:
    def key_template(record: Any, _m: int = modulus) -> int:
        return _weight(_canon(record)) % _m

    on = [{"stream": i, "role": "probe" if i == n["probe"] else "build",
           **({"field": "k"} if n["by_field"][i] else {"template": key_template})}
          for i in n["inputs"]]
    return {"join_type": n["join_type"], "on": on,
            "output": {"merge_strategy": "nested",
                       "nesting_keys": {i: _nest(i) for i in n["inputs"]}}}


async def _run_topology(topo: dict[str, Any]) -> tuple[
        dict[str, Any], dict[tuple[str, str], list], dict[str, Any]]:
    nodes = {n["name"]: n for n in topo["nodes"]}
    modulus = topo["modulus"]
    caps = itertools.cycle(topo["capacities"])
    consumers: dict[str, list[str]] = {name: [] for name in nodes}
    for n in topo["nodes"]:
        for i in n["inputs"]:
            consumers[i].append(n["name"])
    links: dict[tuple[str, str], Any] = {}
    for name in nodes:  # every node with no consumer gets a collecting sink
        for c in consumers[name] or [f"sink:{name}"]:
            links[(name, c)] = _channel_cy.Channel(next(caps))

    def output_of(name: str) -> tuple[StreamOutput, Any]:
        chans = [ch for (p, _c), ch in links.items() if p == name]  # the raw channels
        target = chans[0] if len(chans) == 1 else _channel_cy.FanOut(chans)
        return StreamOutput(target, batch_size=topo["batch"]), target

    summaries: dict[str, Any] = {}

    async def run_node(n: dict[str, Any]) -> None:
        out, target = output_of(n["name"])
        try:
            if n["kind"] == "source":
                for i in range(n["n"]):
                    await out.emit_one({"src": n["name"], "seq": i, "k": i % modulus})
            else:
                inputs = StreamInputs([(i, seen[(i, n["name"])]) for i in n["inputs"]])
                ctx = _ctx(n["name"], inputs, out)
                if n["kind"] == "passthrough":
                    summaries[n["name"]] = await Passthrough().perform(ctx, {})
                elif n["kind"] == "join":
                    summaries[n["name"]] = await Join().perform(ctx, _join_params(n, modulus))
                else:
                    m = n["mod"]
                    cond = lambda r, m=m: _weight(_canon(r)) % m != 0
                    summaries[n["name"]] = await Filter().perform(ctx, {"condition": cond})
            await out.flush()  # the kernel's part: flush, then the end mark
            target.close()
        except BaseException as exc:
            target.close_error(str(exc))
            raise

    async def sink(name: str) -> None:
        await StreamInputs([(name, seen[(name, f"sink:{name}")])]).drain()

    # consumers read every link through a recorder of the batches they take
    recorded: dict[tuple[str, str], list] = collections.defaultdict(list)
    seen = {key: _Recorder(ch, recorded[key]) for key, ch in links.items()}
    tasks = [run_node(n) for n in topo["nodes"]]
    tasks += [sink(name) for name in nodes if not consumers[name]]
    await asyncio.gather(*tasks)
    return nodes, recorded, summaries


class _Recorder:
    """A channel seen through a recorder of every batch the consumer takes."""

    def __init__(self, ch: Any, log: list) -> None:
        self._ch, self._log = ch, log

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ch, name)

    def poll(self) -> Any:
        batch = self._ch.poll()
        if batch is not None:
            self._log.extend(_canon(r) for r in batch)
        return batch


def _is_subsequence(sub: list, seq: list) -> bool:
    it = iter(seq)
    return all(x in it for x in sub)


def _is_stretched_subsequence(sub: list, seq: list) -> bool:
    """``sub`` is a subsequence of ``seq`` in which each element may be repeated in place (the
    probe records of a join's rows: one probe record gives its rows together)."""
    it, current, started = iter(seq), None, False
    for x in sub:
        if started and x == current:
            continue
        if x not in it:
            return False
        current, started = x, True
    return True


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topologies())
def test_random_topologies_deliver_every_record_exactly_once_in_order(topo: dict[str, Any]) -> None:
    """Sources, passthroughs, filters and joins (2 or 3 inputs, any join type, keys by field or
    template) on block channels of capacity 0..5: every consumer of a node reads the same
    sequence, each node emits exactly the multiset its inputs imply, order is kept per link, and
    nothing deadlocks (``run`` times out)."""
    nodes, recorded, summaries = run(_run_topology(topo))
    # what each node emitted: every consumer of it read exactly the same sequence (fan-out)
    emitted: dict[str, list] = {}
    for (p, _c), log in recorded.items():
        if p in emitted:
            assert log == emitted[p]
        emitted[p] = log
    expected: dict[str, collections.Counter] = {}
    for name, n in nodes.items():
        expected[name] = _expect(n, expected, topo["modulus"])
        assert collections.Counter(emitted[name]) == expected[name]  # exactly once per path
        if n["kind"] == "source":
            assert emitted[name] == [(name, i) for i in range(n["n"])]
        elif n["kind"] == "join":
            # order on the probe link: the rows of one probe record come together, in its order
            probe_parts = [dict(r[1])[_nest(n["probe"])] for r in emitted[name]]
            assert _is_stretched_subsequence([r for r in probe_parts if r is not None],
                                             emitted[n["probe"]])
            builds = [i for i in n["inputs"] if i != n["probe"]]
            assert summaries[name] == {
                "records_joined": len(emitted[name]),
                "probe_stream_records": len(emitted[n["probe"]]),
                "build_stream_records": sum(len(emitted[b]) for b in builds),
                "skipped_key_errors": 0}
        else:
            for i in n["inputs"]:
                # order per link: each input's records keep their order in the output
                assert _is_subsequence([r for r in emitted[i] if _keeps(n, r)], emitted[name])


def test_join_reference_on_a_hand_checked_case() -> None:
    """The reference itself, on one key matched by all sides and one partial key per side."""
    n = {"kind": "join", "inputs": ["p", "b", "c"], "probe": "p", "join_type": "inner"}
    inputs = {"p": collections.Counter([("p", 0), ("p", 1)]),     # keys 0, 1
              "b": collections.Counter([("b", 0), ("b", 2)]),     # keys 0, 2
              "c": collections.Counter([("c", 0), ("c", 3), ("c", 1)])}  # keys 0, 3 (0), 1

    def row(p: Any, b: Any, c: Any) -> tuple:
        return ("join", (("at_b", b), ("at_c", c), ("at_p", p)))

    full = [row(("p", 0), ("b", 0), ("c", 0)), row(("p", 0), ("b", 0), ("c", 3))]
    want = {
        "inner": full,
        "left": full + [row(("p", 1), None, ("c", 1))],
        "right": full + [row(None, ("b", 2), None), row(None, None, ("c", 1))],
        "outer": full + [row(("p", 1), None, ("c", 1)), row(None, ("b", 2), None)],
    }
    for jt, rows in want.items():
        assert _join_reference({**n, "join_type": jt}, inputs, 3) == collections.Counter(rows)


# --------------------------------------------------------------------------- lossy strategies


@st.composite
def lossy_schedules(draw: st.DrawFn) -> dict[str, Any]:
    links = draw(st.lists(st.fixed_dictionaries({
        "capacity": st.integers(0, 5),
        "overflow": st.sampled_from(["drop_new", "drop_oldest"]),
        # the consumer yields this many times after each batch it takes (cycled)
        "pauses": st.lists(st.integers(0, 3), min_size=1, max_size=6),
        # the consumer leaves (discard) after taking this many batches; None: reads to the end
        "leave_after": st.none() | st.integers(0, 8),
    }), min_size=1, max_size=3))
    # the producer: (batch size, yields after the send)
    sends = draw(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 3)), max_size=30))
    return {"impl": draw(st.sampled_from(sorted(IMPLS))), "links": links, "sends": sends}


@settings(max_examples=100, deadline=None)
@given(lossy_schedules())
def test_lossy_strategies_account_for_every_record(schedule: dict[str, Any]) -> None:
    """drop_new / drop_oldest on random send and consume schedules, one producer fanning out to
    1-3 links: once everything has ended, on every link in = out + dropped + discarded, what the
    consumer got is a subsequence of what was sent, in order, and the drops are reported."""
    impl = IMPLS[schedule["impl"]]

    async def main() -> None:
        violations: list[list[Any]] = [[] for _ in schedule["links"]]
        chans = [impl.Channel(link["capacity"], link["overflow"], on_violation=v.append)
                 for link, v in zip(schedule["links"], violations)]
        target = chans[0] if len(chans) == 1 else impl.FanOut(chans)

        async def consume(ch: Any, link: dict[str, Any]) -> list[int]:
            got: list[int] = []
            pauses = itertools.cycle(link["pauses"])
            taken = 0
            while link["leave_after"] is None or taken < link["leave_after"]:
                batch = await ch.receive()
                if batch is None:
                    break
                assert batch  # never an empty batch
                got.extend(batch)
                taken += 1
                for _ in range(next(pauses)):
                    await asyncio.sleep(0)
            else:
                ch.discard()
            return got

        readers = [asyncio.create_task(consume(ch, link))
                   for ch, link in zip(chans, schedule["links"])]
        sent, reported = 0, 0
        for size, pauses in schedule["sends"]:
            batch = list(range(sent, sent + size))
            sent += size
            if not target.offer(batch):  # as StreamOutput does: the fast path, then send
                reported += await target.send(batch)
            for _ in range(pauses):
                await asyncio.sleep(0)
        target.close()
        got = await asyncio.gather(*readers)
        for ch, link, mine, vs in zip(chans, schedule["links"], got, violations):
            c = ch.counters()
            assert c["records_in"] == sent
            assert c["records_in"] == c["records_out"] + c["records_dropped"] \
                + c["records_discarded"]
            assert c["buffered"] == 0 and ch.ended
            assert len(mine) == c["records_out"]
            assert _is_subsequence(mine, list(range(sent)))  # what survives keeps its order
            assert sum(v.dropped for v in vs) == c["records_dropped"]
            if link["leave_after"] is None:
                assert c["records_discarded"] == 0
        assert reported == sum(ch.records_dropped for ch in chans)

    run(main())


@pytest.mark.parametrize("overflow", ["drop_new", "drop_oldest", "error"])
def test_an_unbuffered_lossy_hand_over_reports_no_violation(impl: ModuleType, overflow: str) -> None:
    async def main() -> None:
        seen: list[Any] = []
        ch = impl.Channel(0, overflow, on_violation=seen.append)
        reader = asyncio.create_task(ch.receive())
        await asyncio.sleep(0)  # the reader is waiting now
        assert await ch.send([1]) == 0  # handed over, nothing dropped
        assert await reader == [1] and ch.records_dropped == 0
        assert seen == []

    run(main())


# --------------------------------------------------------------------------- direct hand-over


def test_hand_over_counts_a_batch_as_sent_and_taken_only_when_nothing_can_overtake(impl: ModuleType) -> None:
    async def main() -> None:
        ch = impl.Channel(4)
        assert ch.hand_over(3) and ch.counters() == {"records_in": 3, "records_out": 3,
                                                     "records_dropped": 0, "records_discarded": 0,
                                                     "buffered": 0}
        assert ch.offer([1])
        assert not ch.hand_over(2)  # a queued record would be overtaken
        assert ch.poll() == [1]
        assert ch.offer([1, 2, 3, 4])
        sender = asyncio.ensure_future(ch.send([5]))
        await asyncio.sleep(0)  # the sender waits for room
        assert not ch.hand_over(1)
        assert ch.poll() == [1, 2, 3, 4]
        await sender
        assert ch.poll() == [5] and ch.hand_over(1)
        ch.close()
        assert not ch.hand_over(1)  # no record after the end mark
        assert balanced(ch) and ch.records_in == 10
        for overflow in (impl.DROP_NEW, impl.DROP_OLDEST, impl.ERROR):
            assert not impl.Channel(4, overflow).hand_over(1)  # only a blocking link
        gone = impl.Channel(4)
        gone.discard()
        assert not gone.hand_over(1)

    run(main())


# --------------------------------------------------------------------------- compiled vs pure


def _trace(mod: ModuleType) -> list[Any]:
    """A deterministic script over every strategy; everything observable is recorded."""

    async def main() -> list[Any]:
        out: list[Any] = []
        for overflow, cap in itertools.product(mod.OVERFLOW_STRATEGIES, (0, 1, 3, 8)):
            ch = mod.Channel(cap, overflow, on_violation=lambda v: out.append(("v", str(v))))
            reader = asyncio.create_task(collect(ch))
            for i, size in enumerate([1, 4, 0, 9, 2, 3, 12, 1]):
                try:
                    out.append(("send", await ch.send(list(range(i * 100, i * 100 + size)))))
                except mod.PolicyViolation as exc:
                    out.append(("err", str(exc), exc.dropped))
                out.append(("offer", ch.offer([i]), ch.counters()))
                out.append(("hand_over", ch.hand_over(size), ch.counters()))
                if i % 3 == 0:
                    await asyncio.sleep(0)
            ch.close()
            out.append(("got", await reader, ch.counters(), ch.ended, ch.failed))
        return out

    return run(main())


def test_compiled_and_pure_channels_give_the_same_trace() -> None:
    assert _is_compiled_or_skip()
    assert _trace(_channel_cy) == _trace(PURE)


def _is_compiled_or_skip() -> bool:
    built = list(RUNTIME_DIR.glob("_channel_cy.*.so")) + list(RUNTIME_DIR.glob("_channel_cy.*.pyd"))
    if not built:
        pytest.skip("no compiled build next to the source (GXO_NO_EXTENSIONS install)")
    assert _channel_cy._is_compiled()
    assert not PURE._is_compiled()
    return True
