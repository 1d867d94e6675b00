"""Kernel overhead: 10,000 no-op workloads as a chain and as a fan-out, in process and whole
process.

In process: GXO runs a precomputed plan (no graph work at run time); inline modules
(control:identity) run inside the scheduler step without a Task.  Baseline in the same run: a
bare asyncio loop that gives each of the same 10,000 no-op steps a Task under a semaphore,
chained by awaiting the previous one (chain) or all at once (fan-out).  Both are timed in CPU
seconds of this process (``time.process_time``: a busy machine counts less), min of 7 runs
interleaved.  Goal: <= 5 us per task and at least 2x the bare loop.

Whole process: ``gxo exec`` (the console script next to this interpreter, output to a file as
a CI log) of a written ``.gxp`` chain of N = 2,000 and 10,000 no-op workloads, minus the same of a
1-workload plan, per workload: reading, verifying and decoding the plan, start-up of the
kernel, the run and its output lines.  Baseline: a ``python -c`` process running the bare
asyncio + semaphore chain of N steps, minus the same of 1 step.  Min of 5 runs each; CPU is the
child's user + system time (the figure to trust on a busy machine), peak RSS its max RSS.
Goal: <= 25 us per workload.  ``--quick`` skips the in-process lines; ``--instructions`` adds
the instructions per workload at N = 10,000 (valgrind), which do not move with the machine's load.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gxo.runtime.events import Events
from gxo.runtime.kernel import Kernel, RunOptions
from gxo.runtime.plan import Edge, Lifecycle, Plan, Source, SourceSpan, Workload, lean
from gxo.runtime.secrets import Tracker
from gxo.runtime.state import StateStore

sys.path.insert(0, str(Path(__file__).parent))
from coldstart import instructions  # noqa: E402  (bench/coldstart.py, next to this file)

N = 10_000
SPAN = SourceSpan(path="bench.yaml", line=1, col=1, end_line=1, end_col=2)


def make_plan(shape: str, n: int = N, plan_code_sha256: str = "0") -> Plan:
    """``n`` no-op workloads, each after the one before (chain) or all after the first (fan-out),
    as ``gxoc build`` gives them for a playbook of ``control:identity`` workloads with ``needs``."""
    ws, edges = [], []
    for i in range(n):
        src = None if i == 0 else (f"w{i - 1}" if shape == "chain" else "w0")
        if src is not None:
            edges.append(Edge(source=src, target=f"w{i}", kinds=("needs",)))
        span = SourceSpan(path="bench.yaml", line=5 * i + 4, col=11, end_line=5 * i + 4, end_col=13)
        ws.append(Workload(name=f"w{i}", index=i, module="control:identity", module_version="bench",
                           lifecycle=Lifecycle(policy="run_once"), params={}, needs=(src,) if src else (),
                           level=min(i, 1) if shape != "chain" else i, inline=True, span=span))
    levels = [[w.name] for w in ws] if shape == "chain" else [["w0"], [w.name for w in ws[1:]]][: min(n, 2)]
    return Plan(compiler_version="bench", name="bench", source=Source(path="bench.yaml", sha256="0"), vars={},
                var_types=(), workloads=tuple(ws), edges=tuple(sorted(edges, key=lambda e: (e.source, e.target))),
                levels=tuple(tuple(sorted(lv)) for lv in levels), channels=(), expressions=(), modules=(),
                plan_code_sha256=plan_code_sha256)


class _Workspace:
    path = "/nonexistent"

    def resolve(self, p: str) -> str:  # pragma: no cover - no-op modules never resolve paths
        raise AssertionError(p)


def run_gxo(plan: Plan) -> float:
    tracker = Tracker()
    kernel = Kernel(plan, {}, state=StateStore(), workspace=_Workspace(), secrets=None, tracker=tracker,
                    events=Events(plan.name, tracker.redact_value), options=RunOptions())
    t0 = time.process_time()
    report = asyncio.run(kernel.run())
    dt = time.process_time() - t0
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

    t0 = time.process_time()
    asyncio.run(main())
    return time.process_time() - t0


# -- whole process ---------------------------------------------------------------------------

WHOLE_NS = (2_000, 10_000)
WHOLE_GOAL_US = 25.0
RUNS = 5
BARE_SCRIPT = """
import asyncio, sys
n = int(sys.argv[1])
async def noop(params):
    return params
async def main():
    sem = asyncio.Semaphore(8)
    async def step(prev):
        if prev is not None:
            await prev
        async with sem:
            await noop({})
    prev = None
    for _ in range(n):
        prev = asyncio.create_task(step(prev))
    await prev
asyncio.run(main())
"""


def write_gxp(path: Path, n: int) -> None:
    """The chain of ``n`` no-op workloads as a verified, loadable ``.gxp`` (``gxoc build
    --no-native`` writes the same members)."""
    from gxo.compiler.codegen import render_plan_code
    from gxo.compiler.emit import BuiltPlan, members_of, write_gxp as write
    from gxo.runtime.planfile import sha256_hex

    code = render_plan_code([], header="bench chain\n")
    plan = lean(make_plan("chain", n, plan_code_sha256=sha256_hex(code.encode("utf-8"))))
    write(str(path), members_of(BuiltPlan(plan, code, [], "")))


# Each run goes through this small launcher, so that the child's peak RSS is its own: a child
# forked straight from this process would count this process's memory (the 10,000-workload
# plans built here) in its high-water mark until it execs.
LAUNCHER = """
import json, os, sys, time
out = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.execv(sys.argv[2], sys.argv[2:])
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - t0
print(json.dumps([wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss, os.waitstatus_to_exitcode(status)]))
"""


def measure(argv: list[str], env: dict[str, str], runs: int = RUNS) -> tuple[float, float, int]:
    """Min of ``runs`` wall and CPU seconds, and the max peak RSS (KiB), of a child process
    whose output goes to a file (as a CI log)."""
    import json

    walls, cpus, rss = [], [], 0
    with tempfile.NamedTemporaryFile(prefix="gxo-bench-out-") as out:
        for _ in range(runs):
            proc = subprocess.run([sys.executable, "-c", LAUNCHER, out.name, *argv], env=env, capture_output=True,
                                  text=True, check=True)
            wall, cpu, peak, code = json.loads(proc.stdout)
            if code != 0:
                sys.exit(f"kernel bench: {' '.join(argv)} exited {code}: {Path(out.name).read_text()[-500:]}")
            walls.append(wall)
            cpus.append(cpu)
            rss = max(rss, peak)
    return min(walls), min(cpus), rss


def whole_process() -> None:
    gxo = str(Path(sys.executable).parent / "gxo")
    if not Path(gxo).exists():
        sys.exit(f"kernel bench: {gxo} not found: install gxo into this interpreter's environment")
    # as a user runs it: bytecode caches on, default stdout buffering
    drop = ("PYTHONPROFILEIMPORTTIME", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    with tempfile.TemporaryDirectory(prefix="gxo-kernel-bench-") as tmp:
        # the run history in the work folder: a fresh one each time, never the user's
        env["XDG_STATE_HOME"] = os.path.join(tmp, "state")
        plans = {}
        for n in (1, *WHOLE_NS):
            plans[n] = Path(tmp, f"chain{n}.gxp")
            write_gxp(plans[n], n)
        subprocess.run([gxo, "exec", str(plans[1])], env=env, capture_output=True, check=False)  # warm caches
        g1 = measure([gxo, "exec", str(plans[1])], env)
        b1 = measure([sys.executable, "-c", BARE_SCRIPT, "1"], env)
        print(f"whole process, min of {RUNS} (wall / CPU = user+sys of the child; per workload = (N - 1-workload run) / N)")
        print(f"  1 workload:  gxo exec {g1[0] * 1e3:6.1f} ms wall {g1[1] * 1e3:6.1f} ms CPU {g1[2] / 1024:5.1f} MB"
              f"   bare asyncio {b1[0] * 1e3:6.1f} ms wall {b1[1] * 1e3:6.1f} ms CPU")
        for n in WHOLE_NS:
            g = measure([gxo, "exec", str(plans[n])], env)
            b = measure([sys.executable, "-c", BARE_SCRIPT, str(n)], env)
            gw, gc = (g[0] - g1[0]) / n * 1e6, (g[1] - g1[1]) / n * 1e6
            bw, bc = (b[0] - b1[0]) / n * 1e6, (b[1] - b1[1]) / n * 1e6
            size = plans[n].stat().st_size / 1e6
            print(f"  N={n:<6} gxo exec {gw:6.1f} us/wl wall {gc:6.1f} us/wl CPU, peak RSS {g[2] / 1024:5.1f} MB"
                  f" ({size:.1f} MB plan)   bare asyncio+semaphore {bw:5.1f} us/wl wall {bc:5.1f} us/wl CPU"
                  f"   (goal: <= {WHOLE_GOAL_US:g} us/wl: {'ok' if gc <= WHOLE_GOAL_US else 'MISSED'} by CPU)")
        if "--instructions" in sys.argv[1:]:
            n = WHOLE_NS[-1]
            g1, gn = instructions([gxo, "exec", str(plans[1])], env), instructions([gxo, "exec", str(plans[n])], env)
            b1 = instructions([sys.executable, "-c", BARE_SCRIPT, "1"], env)
            bn = instructions([sys.executable, "-c", BARE_SCRIPT, str(n)], env)
            if None in (g1, gn, b1, bn):
                print("  --instructions: valgrind not found")
            else:
                gi, bi = (gn - g1) / n, (bn - b1) / n  # type: ignore[operator]
                print(f"  N={n:<6} by instructions (callgrind, one run each; the same on a busy machine): gxo exec "
                      f"{gi / 1e3:6.1f} k/wl, bare asyncio+semaphore {bi / 1e3:5.1f} k/wl ({gi / bi:.1f}x)")



def main() -> None:
    if "--quick" not in sys.argv[1:]:
        for shape in ("chain", "fan-out"):
            plan = make_plan(shape)
            runs = [(run_gxo(plan), run_bare(shape)) for _ in range(7)]
            gx, bare = min(r[0] for r in runs), min(r[1] for r in runs)
            print(f"{shape:8} GXO {gx / N * 1e6:6.2f} us/task   bare asyncio+semaphore {bare / N * 1e6:6.2f} us/task   "
                  f"ratio bare/GXO {bare / gx:.2f}x (goal: <= 5 us/task, ratio >= 2)")
    whole_process()


if __name__ == "__main__":
    main()
