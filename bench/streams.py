"""Stream benchmark: 1,000,000 records test:producer -> data:map -> data:filter -> counting sink.

The playbook runs on the real kernel (``gxo.runtime.run.execute``): four workloads, three
channels of capacity 100 under ``block``.  The sink is ``passthrough`` (its summary counts the
records it read).  Two ways of getting the plan are measured, each against its own baseline:

* ``gxo exec`` (the production path, the goal): the plan built by ``gxoc build`` and loaded by
  ``load_plan``, so its expressions are the Cython-compiled native shards (the bytecode when no
  C compiler is around; the line says which);
* ``gxo run``: the plan compiled in memory (``compile_in_memory``), expressions as bytecode.

Baseline, in the same process (design.md section 10: "the stream ratio's baseline calls the
same generated functions in a plain loop"): one Python ``for`` loop that makes each record as
the producer does (a deep copy of the literal template record), calls the SAME generated
function of the map template (plus the same text-to-record decoding ``data:map`` does), then
the SAME generated function of the filter condition (plus ``truthy``), and counts the kept
records.  No channels, no tasks, no batches.

Peak RSS is measured above the RSS just before the kernel runs: the kernel's high-water mark is
reset through /proc/self/clear_refs (Linux >= 4.0), then read from VmHWM; where that is not
possible, ru_maxrss is used (which then also counts what happened before the run).

Goals: >= 1,000,000 records/s end to end, >= 0.8x the plain loop, <= 64 MB peak RSS above
baseline.

Then the realistic pipeline, each side a whole process (interpreter start included), best of
``--repeat`` runs taken in turns (gxo, the loop, polars, gxo, ...), peak RSS and CPU time (user +
system, the ``seq`` child's included) from ``os.wait4`` of that process:

* ``gxo exec`` of the built plan of ``REALISTIC``: ``exec seq 1 N`` (registered) ->
  ``data:parse text_lines`` -> ``data:map`` (``int``) -> ``data:filter`` (odd) ->
  ``data:aggregate`` (count and sum over the whole stream) -> ``data:format json``;
* the same work as a plain Python loop (``PLAIN_LOOP``: run seq, split, int, test, count);
* polars (``POLARS``: read seq's output as a string column, cast, filter, count and sum), when
  installed (``pip install -e '.[bench]'``); otherwise the line says "polars: not installed".

Goals: >= 0.8x the plain loop's records/s and <= 1.5x its peak RSS.  The ratio by CPU time is
printed too: on a shared machine it moves less than the wall-clock one.  ``gxo exec`` keeps its
run history in the work folder (``--state-dir``), not in the user's.

    python bench/streams.py [--records 1000000] [--repeat 3] [--profile] [--only kernel|pipeline]
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

PLAYBOOK = """\
name: bench-streams
schemaVersion: "1.0.0"
channel_policy: {{buffer_size: 100, overflow_strategy: block}}
workloads:
  - name: gen
    lifecycle: {{policy: run_once}}
    process:
      module: test:producer
      params: {{count: {count}, template: '{{"id": 7, "name": "rec", "v": 3}}'}}
  - name: sq
    lifecycle: {{policy: run_once}}
    stream_inputs: [gen]
    process: {{module: data:map, params: {{template: '{{"id": {{{{ .id }}}}, "sq": {{{{ .v * .v }}}}}}'}}}}
  - name: keep
    lifecycle: {{policy: run_once}}
    stream_inputs: [sq]
    process: {{module: data:filter, params: {{condition: "{{{{ .sq }}}} > 4"}}}}
  - name: sink
    lifecycle: {{policy: run_once}}
    stream_inputs: [keep]
    process: {{module: passthrough}}
"""


#: the realistic pipeline, shared with the peak-RSS test (its count is a var)
REALISTIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "realistic_pipeline.yaml")

PLAIN_LOOP = """\
import json, subprocess, sys
out = subprocess.run(["seq", "1", sys.argv[1]], capture_output=True, text=True, check=True).stdout
records = total = 0
for line in out.splitlines():
    n = int(line)
    if n % 2 == 1:
        records += 1
        total += n
print(json.dumps([{"records": records, "total": total}]))
"""

POLARS = """\
import io, json, subprocess, sys
import polars as pl
out = subprocess.run(["seq", "1", sys.argv[1]], capture_output=True, check=True).stdout
lines = pl.read_csv(io.BytesIO(out), has_header=False, new_columns=["line"], infer_schema=False)
result = (lines.select(n=pl.col("line").cast(pl.Int64)).filter(pl.col("n") % 2 == 1)
          .select(records=pl.len(), total=pl.col("n").sum()))
print(json.dumps(result.to_dicts()))
"""


# -- memory -----------------------------------------------------------------------------------


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak() -> bool:
    """Reset this process's RSS high-water mark (VmHWM); False when the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def rss_kb() -> int:
    return _status_kb("VmRSS") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def peak_kb(resettable: bool) -> int:
    hwm = _status_kb("VmHWM") if resettable else None
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# -- the two runs -----------------------------------------------------------------------------


def compile_plan(count: int, workdir: str) -> Any:
    from gxo.compiler.inmemory import compile_in_memory

    path = os.path.join(workdir, "streams.yaml")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(PLAYBOOK.format(count=count))
    loaded = compile_in_memory(path, sys.stderr)
    assert loaded is not None, "the benchmark playbook does not compile"
    return loaded


def build_plan(count: int, workdir: str) -> tuple[Any, str]:
    """The plan as ``gxo exec`` runs it: ``gxoc build`` (native shards, cached), then
    ``load_plan``; and which functions it runs ("native" or "bytecode")."""
    from gxo.runtime.planfile import load_plan

    path = os.path.join(workdir, "streams.yaml")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(PLAYBOOK.format(count=count))
    out = os.path.join(workdir, "streams.gxp")
    gxoc = os.path.join(os.path.dirname(sys.executable), "gxoc")
    done = subprocess.run([gxoc, "build", path, "-o", out], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    loaded = load_plan(out)
    native = all(type(f).__name__ in ("cython_function_or_method", "builtin_function_or_method")
                 for f in loaded.functions.values())
    return loaded, "native" if native else "bytecode"


def run_kernel(loaded: Any, count: int) -> tuple[float, dict[str, Any]]:
    from gxo.runtime.kernel import RunOptions
    from gxo.runtime.run import Outputs, execute

    sink = io.StringIO()
    t0 = time.perf_counter()
    code, report = execute(loaded.plan, loaded.functions, RunOptions(),
                           Outputs(json=True, stream=sink, recap=False))
    dt = time.perf_counter() - t0
    assert code == 0 and report is not None, sink.getvalue()[-2000:]
    links = {(s["producer"], s["consumer"]): s for s in report.streams}
    last = links[("keep", "sink")]
    assert last["records_out"] == count, report.streams
    assert all(s["records_dropped"] == 0 for s in report.streams), report.streams
    return dt, links


def plain_loop_fns(loaded: Any) -> tuple[Any, bool, Any, bool]:
    """The generated functions of the map template and the filter condition (by workload)."""
    fns = {}
    for e in loaded.plan.expressions:
        if e.workload in ("sq", "keep"):
            fns[e.workload] = (loaded.functions[e.id], e.as_text)
    (map_fn, map_text), (filter_fn, filter_text) = fns["sq"], fns["keep"]
    return map_fn, map_text, filter_fn, filter_text


def run_plain(loaded: Any, count: int) -> float:
    import json

    from gxo.runtime._state_cy import deep_copy
    from gxo.runtime.exprlib import truthy
    from gxo.runtime.kernel import ExprContext
    from gxo.stdlib.data import _as_record

    map_fn, _map_text, filter_fn, _filter_text = plain_loop_fns(loaded)
    ctx = ExprContext(None, None)
    constant = json.loads('{"id": 7, "name": "rec", "v": 3}')
    kept = 0
    t0 = time.perf_counter()
    for _ in range(count):
        record = deep_copy(constant)  # what test:producer does per record
        value = map_fn(record, ctx)  # data:map (a JSON-shaped template builds the record itself)
        if type(value) is not dict:
            value = _as_record(value)
        cond = filter_fn(value, ctx)  # data:filter
        if truthy(cond):
            kept += 1  # the counting sink
    dt = time.perf_counter() - t0
    assert kept == count, kept
    return dt


# -- the realistic pipeline, whole processes ----------------------------------------------------


def _child_env() -> dict[str, str]:
    """The environment of the measured processes: bytecode caches allowed (a deployed gxo
    imports from them; the first, unmeasured run writes them)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


# A fresh, small process forks and execs the measured one: a process forked straight from this
# (larger) one would start with this one's resident pages counted in its peak RSS.
LAUNCHER = """\
import os, sys, time
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(time.perf_counter() - t0, usage.ru_utime + usage.ru_stime, usage.ru_maxrss,
      os.waitstatus_to_exitcode(status), file=sys.stderr)
"""


def run_process(argv: list[str]) -> tuple[float, float, float, str]:
    """Run ``argv`` to its end: wall seconds, CPU seconds (user + system, its children's
    included), peak RSS in MB, stdout."""
    with tempfile.TemporaryFile() as out:
        done = subprocess.run([sys.executable, "-c", LAUNCHER, *argv], stdout=out,
                              stderr=subprocess.PIPE, env=_child_env(), check=False)
        err = done.stderr.decode()
        out.seek(0)
        text = out.read().decode()
    last = err.strip().splitlines()[-1] if err.strip() else ""
    dt, cpu, maxrss, rc = last.split()
    assert done.returncode == 0 and rc == "0", (argv, err[-2000:], text[-2000:])
    return float(dt), float(cpu), int(maxrss) / 1024, text


def realistic(n: int, repeat: int, workdir: str) -> list[str]:
    """The realistic pipeline as ``gxo exec`` runs it, next to a plain loop and polars."""
    path = REALISTIC
    plan = os.path.join(workdir, "realistic.gxp")
    bindir = os.path.dirname(sys.executable)
    done = subprocess.run([os.path.join(bindir, "gxoc"), "build", path, "-o", plan],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    expected = [{"records": (n + 1) // 2, "total": ((n + 1) // 2) ** 2}]
    # the run history in the work folder: each run registers seq's whole output (about 8 MB at
    # 1,000,000 lines), which the user's own history would keep for good
    gxo = [os.path.join(bindir, "gxo"), "exec", plan, "--var", f"count={n}",
           "--state-dir", os.path.join(workdir, "state")]
    sides: list[tuple[str, list[str]]] = [
        ("gxo exec", gxo),
        ("plain loop", [sys.executable, "-c", PLAIN_LOOP, str(n)]),
    ]
    try:
        import polars  # noqa: F401, PLC0415 - only to know whether it is there

        sides.append(("polars", [sys.executable, "-c", POLARS, str(n)]))
    except ImportError:
        pass
    for label, argv in sides:
        # warm-up (bytecode caches, page cache), which also checks the result
        _, _, _, out = run_process(argv + ["--json"] if label == "gxo exec" else argv)
        if label == "gxo exec":
            events = [json.loads(line) for line in out.splitlines() if line.strip()]
            report = next(e["summary"] for e in events
                          if e["type"] == "ModuleExecutionEnd" and e["workload"] == "report")
            assert json.loads(report["formatted_content"]) == expected, report
            del events, out
        else:
            assert json.loads(out) == expected, out
    # the sides take turns, so that a change in the machine's load meets each of them alike
    runs: dict[str, list[tuple[float, float, float]]] = {label: [] for label, _ in sides}
    for _ in range(repeat):
        for label, argv in sides:
            dt, cpu, peak, _ = run_process(argv)
            runs[label].append((dt, cpu, peak))
    best = {label: (min(r[0] for r in rs), min(r[1] for r in rs), max(r[2] for r in rs))
            for label, rs in runs.items()}
    lines = [f"realistic pipeline: seq 1 {n} -> data:parse text_lines -> data:map -> "
             f"data:filter -> data:aggregate -> data:format, whole process, best of {repeat} "
             f"taken in turns (peak RSS: the highest; CPU: user + system, seq's included)"]
    plain_t, plain_cpu, plain_rss = best["plain loop"]
    for label, _argv in sides:
        t, cpu, rss = best[label]
        line = (f"  {label:<11}: {t * 1000:8.1f} ms  {n / t:12,.0f} records/s  "
                f"peak RSS {rss:6.1f} MB  CPU {cpu * 1000:7.1f} ms")
        if label == "gxo exec":
            rate, mem = plain_t / t, rss / plain_rss
            line += (f"  ({rate:.2f}x the plain loop's rate, goal >= 0.8: "
                     f"{'ok' if rate >= 0.8 else 'MISSED'}; {mem:.2f}x its peak RSS, goal <= 1.5: "
                     f"{'ok' if mem <= 1.5 else 'MISSED'}; by CPU time {plain_cpu / cpu:.2f}x, "
                     f"which a busy machine moves less)")
        lines.append(line)
    if "polars" not in best:
        lines.append("  polars     : not installed (pip install -e '.[bench]')")
    return lines


# -- main -------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3, help="best of N for each side")
    ap.add_argument("--profile", action="store_true", help="cProfile one kernel run")
    ap.add_argument("--only", choices=("kernel", "pipeline"),
                    help="run only the kernel ratio or only the realistic pipeline")
    args = ap.parse_args()
    n = args.records
    if args.only == "pipeline":
        with tempfile.TemporaryDirectory(prefix="gxo-bench-streams-") as workdir:
            print("\n".join(realistic(n, args.repeat, workdir)))
        return 0

    with tempfile.TemporaryDirectory(prefix="gxo-bench-streams-") as workdir:
        built, kind = build_plan(n, workdir)
        in_memory = compile_plan(n, workdir)
        small = compile_plan(1000, workdir)
        run_kernel(small, 1000)  # warm-up: imports, first-call costs
        run_plain(small, 1000)
        gc.collect()

        base = rss_kb()
        resettable = reset_peak()
        exec_times = []
        for _ in range(args.repeat):
            dt, links = run_kernel(built, n)
            exec_times.append(dt)
        peak = peak_kb(resettable)
        exec_plain = [run_plain(built, n) for _ in range(args.repeat)]
        run_times = [run_kernel(in_memory, n)[0] for _ in range(args.repeat)]
        run_plain_times = [run_plain(in_memory, n) for _ in range(args.repeat)]

        if args.profile:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.enable()
            run_kernel(built, n)
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(15)

        pipeline = [] if args.only == "kernel" else realistic(n, args.repeat, workdir)

    print(f"stream benchmark: {n:,} records, test:producer -> data:map -> data:filter -> "
          f"passthrough (capacity 100, block), best of {args.repeat}")
    for (prod, cons), s in links.items():
        print(f"  link {prod} -> {cons}: in {s['records_in']:,} out {s['records_out']:,} "
              f"dropped {s['records_dropped']:,}")
    for label, goal, kt, pt in (
        (f"gxo exec ({kind} expressions)", True, exec_times, exec_plain),
        ("gxo run (bytecode expressions)", False, run_times, run_plain_times),
    ):
        k, p = min(kt), min(pt)
        k_rate, p_rate = n / k, n / p
        ratio = k_rate / p_rate
        print(f"  {label}:")
        mark = (lambda good: ("ok" if good else "MISSED")) if goal else (lambda _good: "info")
        print(f"    GXO kernel : {k * 1000:8.1f} ms  {k_rate:12,.0f} records/s  "
              f"(goal >= 1,000,000: {mark(k_rate >= 1_000_000)})")
        print(f"    plain loop : {p * 1000:8.1f} ms  {p_rate:12,.0f} records/s  "
              f"(same generated functions)")
        print(f"    ratio      : {ratio:.2f}x the plain loop (goal >= 0.8: {mark(ratio >= 0.8)})")
    above_mb = (peak - base) / 1024
    how = "VmHWM after reset" if resettable else "ru_maxrss (not reset: includes pre-run peak)"
    print(f"  peak RSS   : {above_mb:.1f} MB above the {base / 1024:.1f} MB baseline [{how}] "
          f"(goal <= 64 MB: {'ok' if above_mb <= 64 else 'MISSED'})")
    if pipeline:
        print("\n".join(pipeline))
    return 0

if __name__ == "__main__":
    sys.exit(main())
