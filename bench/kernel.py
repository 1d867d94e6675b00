"""Kernel overhead: 10,000 no-op workloads as a chain and as a fan-out.

GXO runs a precomputed plan (no graph work at run time); inline modules (control:identity)
run inside the scheduler step without a Task.  Baseline in the same run: a bare asyncio loop
that gives each of the same 10,000 no-op steps a Task under a semaphore, chained by awaiting
the previous one (chain) or all at once (fan-out).  Goal: <= 10 us per task and faster than
the bare loop.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from gxo.runtime.events import Events
from gxo.runtime.kernel import Kernel, RunOptions
from gxo.runtime.plan import Lifecycle, Plan, Source, SourceSpan, Workload
from gxo.runtime.secrets import Tracker
from gxo.runtime.state import StateStore

N = 10_000
SPAN = SourceSpan(path="bench.yaml", line=1, col=1, end_line=1, end_col=2)


def make_plan(shape: str, n: int = N) -> Plan:
    ws = []
    for i in range(n):
        if shape == "chain":
            deps = (f"w{i - 1}",) if i else ()
            dependents = (f"w{i + 1}",) if i < n - 1 else ()
        else:
            deps = ("w0",) if i else ()
            dependents = tuple(f"w{j}" for j in range(1, n)) if i == 0 else ()
        ws.append(Workload(name=f"w{i}", index=i, module="control:identity", module_version="bench",
                           lifecycle=Lifecycle(policy="run_once"), params={}, deps=deps, dependents=dependents,
                           inline=True, span=SPAN))
    return Plan(compiler_version="bench", name="bench", source=Source(path="bench.yaml", sha256="0"), vars={},
                var_types=(), workloads=tuple(ws), edges=(), levels=(), channels=(), expressions=(), modules=(),
                plan_code_sha256="0")


class _Workspace:
    path = "/nonexistent"

    def resolve(self, p: str) -> str:  # pragma: no cover - no-op modules never resolve paths
        raise AssertionError(p)


def run_gxo(plan: Plan) -> float:
    tracker = Tracker()
    kernel = Kernel(plan, {}, state=StateStore(), workspace=_Workspace(), secrets=None, tracker=tracker,
                    events=Events(plan.name, tracker.redact_value), options=RunOptions())
    t0 = time.perf_counter()
    report = asyncio.run(kernel.run())
    dt = time.perf_counter() - t0
    assert not report.failed and all(r.status == "Completed" for r in report.results.values())
    return dt


def run_bare(shape: str, n: int = N) -> float:
    async def noop(params: dict) -> dict:
        return params

    async def main() -> None:
        sem = asyncio.Semaphore(max(8, 4 * 2))
        results: dict[int, dict] = {}

        async def step(i: int, prev: asyncio.Task | None) -> None:
            if prev is not None:
                await prev
            async with sem:
                results[i] = await noop({})

        if shape == "chain":
            prev = None
            for i in range(n):
                prev = asyncio.create_task(step(i, prev))
            await prev
        else:
            first = asyncio.create_task(step(0, None))
            await asyncio.gather(first, *(asyncio.create_task(step(i, first)) for i in range(1, n)))

    t0 = time.perf_counter()
    asyncio.run(main())
    return time.perf_counter() - t0


def main() -> None:
    for shape in ("chain", "fan-out"):
        plan = make_plan(shape)
        gx = statistics.median(run_gxo(plan) for _ in range(5))
        bare = statistics.median(run_bare(shape) for _ in range(5))
        print(f"{shape:8} GXO {gx / N * 1e6:6.2f} us/task   bare asyncio+semaphore {bare / N * 1e6:6.2f} us/task   "
              f"ratio bare/GXO {bare / gx:.2f}x (goal: <= 10 us/task, ratio > 1)")


if __name__ == "__main__":
    main()
