"""Channels of the data plane: order, backpressure, overflow strategies, ends, fan-out, fan-in,
random topologies of real stream modules, and the compiled channel against its pure twin."""

from __future__ import annotations

import asyncio
import collections
import importlib.util
import itertools
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import gxo.runtime
import pytest
from gxo.runtime import _channel_cy
from gxo.runtime.streams import RecordErrorSink, StreamInputs, StreamOutput
from gxo.stdlib.core import Passthrough
from gxo.stdlib.data import Filter
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


# --------------------------------------------------------------------------- random topologies


def _ctx(name: str, inputs: StreamInputs | None, out: StreamOutput | None) -> Any:
    extras: dict[str, Any] = {"record_errors": RecordErrorSink()}
    if inputs is not None:
        extras["inputs"] = inputs
    if out is not None:
        extras["output"] = out
    return SimpleNamespace(workload=name, extras=extras)


@st.composite
def topologies(draw: st.DrawFn) -> dict[str, Any]:
    n_sources = draw(st.integers(1, 3))
    nodes: list[dict[str, Any]] = [
        {"name": f"s{i}", "kind": "source", "inputs": [], "n": draw(st.integers(0, 25))}
        for i in range(n_sources)
    ]
    for j in range(draw(st.integers(1, 5))):
        earlier = [n["name"] for n in nodes]
        kind = draw(st.sampled_from(["passthrough", "filter"]))
        if kind == "filter":
            ins = [draw(st.sampled_from(earlier))]
        else:
            ins = draw(st.lists(st.sampled_from(earlier), min_size=1, max_size=3, unique=True))
        nodes.append({"name": f"n{j}", "kind": kind, "inputs": ins,
                      "mod": draw(st.integers(2, 4))})
    capacities = draw(st.lists(st.integers(0, 5), min_size=30, max_size=30))
    batch = draw(st.integers(1, 4))
    return {"nodes": nodes, "capacities": capacities, "batch": batch}


async def _run_topology(topo: dict[str, Any]) -> tuple[dict[str, Any], dict[tuple[str, str], list]]:
    nodes = {n["name"]: n for n in topo["nodes"]}
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

    async def run_node(n: dict[str, Any]) -> None:
        out, target = output_of(n["name"])
        try:
            if n["kind"] == "source":
                for i in range(n["n"]):
                    await out.emit_one({"src": n["name"], "seq": i})
            else:
                inputs = StreamInputs([(i, seen[(i, n["name"])]) for i in n["inputs"]])
                if n["kind"] == "passthrough":
                    await Passthrough().perform(_ctx(n["name"], inputs, out), {})
                else:
                    m = n["mod"]
                    cond = lambda r, m=m: r["seq"] % m != 0
                    await Filter().perform(_ctx(n["name"], inputs, out), {"condition": cond})
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
    return nodes, recorded


class _Recorder:
    """A channel seen through a recorder of every batch the consumer takes."""

    def __init__(self, ch: Any, log: list) -> None:
        self._ch, self._log = ch, log

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ch, name)

    def poll(self) -> Any:
        batch = self._ch.poll()
        if batch is not None:
            self._log.extend((r["src"], r["seq"]) for r in batch)
        return batch


def _is_subsequence(sub: list, seq: list) -> bool:
    it = iter(seq)
    return all(x in it for x in sub)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topologies())
def test_random_topologies_deliver_every_record_exactly_once_in_order(topo: dict[str, Any]) -> None:
    nodes, recorded = run(_run_topology(topo))
    # what each node emitted: every consumer of it read exactly the same sequence (fan-out)
    emitted: dict[str, list] = {}
    for (p, _c), log in recorded.items():
        if p in emitted:
            assert log == emitted[p]
        emitted[p] = log
    expected: dict[str, collections.Counter] = {}
    for name, n in nodes.items():
        if n["kind"] == "source":
            assert emitted[name] == [(name, i) for i in range(n["n"])]
            expected[name] = collections.Counter(emitted[name])
            continue
        keep = (lambda r: True) if n["kind"] == "passthrough" \
            else (lambda r, m=n["mod"]: r[1] % m != 0)
        want: collections.Counter = collections.Counter()
        for i in n["inputs"]:
            want.update(r for r in expected[i].elements() if keep(r))
            # order per link: each input's records keep their order in the output
            assert _is_subsequence([r for r in emitted[i] if keep(r)], emitted[name])
        expected[name] = want
        assert collections.Counter(emitted[name]) == want  # exactly once per path


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
