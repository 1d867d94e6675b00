"""Long-running lifecycles, each figure next to a plain asyncio baseline in the same run.

* **Restart latency** (supervise): a supervised ``sh -c 'exit 1'`` with a 1 ms back-off, run by
  ``gxo exec --json``; from the ``ModuleExecutionEnd`` of one run (the exit seen) to the
  ``ModuleExecutionStart`` of the next, minus the back-off.  Baseline: a plain asyncio loop that
  spawns the same program, waits for it, sleeps the same back-off and spawns it again (the time
  from one exit to the next spawn, minus the sleep).  Goal: <= 20 ms plus back-off.
* **Idle supervised programs**: ``gxo exec`` of 200 supervised ``sleep 3600``; its RSS once all
  200 run, and how long a SIGTERM takes to stop them all.  Baseline: a plain asyncio script
  holding 200 ``sleep`` children.
* **Schedule lateness**: ``@every 100ms`` with a ``control:identity`` job for 3 s; each
  instance's ``ModuleExecutionStart`` minus the fire time its ``LifecycleUpdate`` announced.
  Baseline: a plain asyncio loop sleeping until the same wall times.  Goal: median <= 10 ms.
* **Event-driven instances per second**: ``test:producer`` of 20,000 records feeding an
  event_driven ``control:identity`` handler (concurrency 8), whole ``gxo exec`` process minus a
  1-record run.  Baseline: a plain asyncio queue with 8 workers calling a function per record.
  Goal: >= 10,000 instances/s.
* **Durable commits**: ``gxo exec`` of a chain of 200 ``exec true`` workloads with the durable
  store (SQLite, synchronous=FULL: one commit per workload) and with ``--no-state``; the cost
  per workload.  And a chain of 10,000 inline no-op workloads, whose ends commit together.

    python bench/lifecycles.py [--restarts 40] [--idle 200] [--records 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESTART_GOAL_MS = 20.0
BACKOFF_S = 0.001


def tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        sys.exit(f"lifecycles: {path} not found: install gxo into this interpreter's environment")
    return str(path)


def build(workdir: str, body: str, name: str) -> str:
    pb = os.path.join(workdir, name + ".yaml")
    Path(pb).write_text(f'name: {name}\nschemaVersion: "1.0.0"\nworkloads:\n' + body)
    out = os.path.join(workdir, name + ".gxp")
    subprocess.run([tool("gxoc"), "build", "--no-native", pb, "-o", out], check=True, capture_output=True)
    return out


# -- restart latency ------------------------------------------------------------------------------

def gxo_restart_gaps(workdir: str, restarts: int) -> list[float]:
    plan = build(workdir, f"""\
  - name: crashy
    lifecycle:
      policy: supervise
      backoff: {{base: 1ms, cap: 1ms, jitter: 0, max_restarts: {restarts}, restart_window: 10m}}
    process:
      module: exec
      params: {{command: sh, args: ["-c", "exit 1"]}}
""", "restart")
    out = subprocess.run([tool("gxo"), "exec", plan, "--json"], capture_output=True, text=True,
                         env={**os.environ, "GXO_TRUSTED_KEYS": ""})
    events = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    gaps, ended = [], None
    for e in events:
        if e["type"] == "ModuleExecutionEnd":
            ended = e["timestamp"]
        elif e["type"] == "ModuleExecutionStart" and ended is not None:
            gaps.append((e["timestamp"] - ended - BACKOFF_S) * 1000)
            ended = None
    return gaps


BASELINE_RESTARTS = """\
import asyncio, sys, time
async def main(n, backoff):
    gaps = []
    ended = None
    for _ in range(n + 1):
        if ended is not None:
            gaps.append((time.time() - ended - backoff) * 1000)
        p = await asyncio.create_subprocess_exec("sh", "-c", "exit 1", stdout=asyncio.subprocess.PIPE,
                                                 stderr=asyncio.subprocess.PIPE, start_new_session=True)
        await p.communicate()
        ended = time.time()
        await asyncio.sleep(backoff)
    print(" ".join(f"{g:.3f}" for g in gaps))
asyncio.run(main(int(sys.argv[1]), float(sys.argv[2])))
"""


def baseline_restart_gaps(restarts: int) -> list[float]:
    out = subprocess.run([sys.executable, "-c", BASELINE_RESTARTS, str(restarts), str(BACKOFF_S)],
                         capture_output=True, text=True, check=True)
    return [float(x) for x in out.stdout.split()]


# -- idle supervised programs -----------------------------------------------------------------------

BASELINE_IDLE = """\
import asyncio, sys
async def main(n):
    procs = [await asyncio.create_subprocess_exec("sleep", "3600", start_new_session=True) for _ in range(n)]
    print("up", flush=True)
    await asyncio.sleep(3600)
asyncio.run(main(int(sys.argv[1])))
"""


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def children_of(pid: int) -> int:
    n = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                n += 1
    return n


def wait_children(pid: int, n: int, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while children_of(pid) < n:
        if time.monotonic() > end:
            raise SystemExit(f"lifecycles: only {children_of(pid)} of {n} children started")
        time.sleep(0.05)


def gxo_idle(workdir: str, n: int) -> tuple[int, float]:
    body = "".join(f"""\
  - name: idle{i}
    lifecycle: {{policy: supervise, restart: always}}
    process: {{module: exec, params: {{command: sleep, args: ["3600"]}}}}
""" for i in range(n))
    plan = build(workdir, body, "idle")
    proc = subprocess.Popen([tool("gxo"), "exec", plan, "--json"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_children(proc.pid, n)
        time.sleep(0.5)
        rss = rss_kb(proc.pid)
        t0 = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        return rss, time.perf_counter() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def baseline_idle(n: int) -> int:
    proc = subprocess.Popen([sys.executable, "-c", BASELINE_IDLE, str(n)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        time.sleep(0.5)
        return rss_kb(proc.pid)
    finally:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as fh:
                        if int(fh.read().rsplit(")", 1)[1].split()[1]) == proc.pid:
                            os.kill(int(entry), signal.SIGKILL)
                except OSError:
                    pass
        proc.kill()
        proc.wait()


# -- schedule lateness -------------------------------------------------------------------------------

BASELINE_LATENESS = """\
import asyncio, sys, time, statistics
async def main(period, seconds):
    late = []
    t = time.time()
    end = t + seconds
    while t + period < end:
        t += period
        await asyncio.sleep(max(0.0, t - time.time()))
        late.append((time.time() - t) * 1000)
    print(" ".join(f"{x:.3f}" for x in late))
asyncio.run(main(float(sys.argv[1]), float(sys.argv[2])))
"""


def gxo_lateness(workdir: str, seconds: float = 3.0) -> list[float]:
    plan = build(workdir, """\
  - name: tick
    lifecycle: {policy: scheduled, cron: "@every 100ms"}
    process: {module: control:identity, params: {value: 1}}
""", "lateness")
    proc = subprocess.Popen([tool("gxo"), "exec", plan, "--json", "--no-state"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    time.sleep(seconds)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(30)
    fires, starts = set(), []
    for line in out.splitlines():
        e = json.loads(line)
        if e["type"] == "LifecycleUpdate" and e.get("next_fire"):
            fires.add(e["next_fire"])
        elif e["type"] == "ModuleExecutionStart":
            starts.append(e["timestamp"])
    late = []
    for t in starts:  # each start against the latest fire time announced before it came
        due = [f for f in fires if f <= t]
        if due:
            late.append((t - max(due)) * 1000)
    return late


def baseline_lateness(seconds: float = 3.0) -> list[float]:
    out = subprocess.run([sys.executable, "-c", BASELINE_LATENESS, "0.1", str(seconds)], capture_output=True,
                         text=True, check=True)
    return [float(x) for x in out.stdout.split()]


# -- event-driven instances per second ---------------------------------------------------------------

BASELINE_EVENTS = """\
import asyncio, sys, time
def handle(record):
    return {"value": record["n"]}
async def main(n):
    q = asyncio.Queue(100)
    done = 0
    async def worker():
        nonlocal done
        while True:
            r = await q.get()
            if r is None:
                return
            handle(r)
            done += 1
    t0 = time.process_time()
    ws = [asyncio.create_task(worker()) for _ in range(8)]
    for i in range(n):
        await q.put({"n": i})
    for _ in ws:
        await q.put(None)
    await asyncio.gather(*ws)
    print(time.process_time() - t0)
asyncio.run(main(int(sys.argv[1])))
"""


def gxo_events_cpu(workdir: str, n: int) -> float:
    plan = build(workdir, f"""\
  - name: events
    lifecycle: {{policy: run_once}}
    process: {{module: test:producer, params: {{count: {n}, template: '{{"n": {{{{ .index }}}}}}'}}}}
  - name: handle
    lifecycle: {{policy: event_driven, source: events, concurrency: 8}}
    process: {{module: control:identity, params: {{value: "{{{{ .n }}}}"}}}}
""", f"events{n}")
    return cpu_of([tool("gxo"), "exec", plan, "--no-state"])


def cpu_of(argv: list[str], runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        pid = os.fork()
        if pid == 0:
            fd = os.open(os.devnull, os.O_WRONLY)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.execv(argv[0], argv)
        _, status, ru = os.wait4(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"lifecycles: {' '.join(argv)} failed")
        best = min(best, ru.ru_utime + ru.ru_stime)
    return best


# -- durable commits ---------------------------------------------------------------------------------

def durable_cost(workdir: str, n: int, inline: bool) -> tuple[float, float]:
    """Wall time per workload of a chain, with the durable store and with --no-state."""
    body = "".join(f"""\
  - name: w{i}
    lifecycle: {{policy: run_once}}
{f"    needs: [w{i - 1}]" + chr(10) if i else ""}    process: {'{module: control:identity, params: {value: 1}}' if inline else '{module: exec, params: {command: "true"}}'}
""" for i in range(n))
    plan = build(workdir, body, f"chain{n}{'i' if inline else 'e'}")
    out = []
    for extra in ([], ["--no-state"]):
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            subprocess.run([tool("gxo"), "exec", plan, "--state-dir", os.path.join(workdir, "state"), *extra]
                           if not extra else [tool("gxo"), "exec", plan, *extra],
                           check=True, capture_output=True)
            best = min(best, time.perf_counter() - t0)
        out.append(best / n)
    return out[0], out[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--restarts", type=int, default=40)
    ap.add_argument("--idle", type=int, default=200)
    ap.add_argument("--records", type=int, default=20000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        g = gxo_restart_gaps(workdir, args.restarts)
        b = baseline_restart_gaps(args.restarts)
        gm, bm = statistics.median(g), statistics.median(b)
        print(f"supervise restart latency (exit seen -> next start, minus the {BACKOFF_S * 1000:g} ms back-off), "
              f"median of {len(g)}:")
        print(f"  gxo exec     {gm:7.2f} ms   (p90 {sorted(g)[int(len(g) * 0.9)]:.2f} ms)")
        print(f"  plain asyncio{bm:7.2f} ms   ratio {gm / bm if bm else float('inf'):.1f}x   "
              f"(goal <= {RESTART_GOAL_MS:g} ms: {'ok' if gm <= RESTART_GOAL_MS else 'MISSED'})")
        rss, stop_s = gxo_idle(workdir, args.idle)
        base = baseline_idle(args.idle)
        print(f"{args.idle} idle supervised programs (sleep 3600):")
        print(f"  gxo exec     RSS {rss / 1024:6.1f} MB   SIGTERM stops all in {stop_s * 1000:.0f} ms")
        print(f"  plain asyncio RSS {base / 1024:6.1f} MB   ratio {rss / base:.1f}x")
        g = gxo_lateness(workdir)
        b = baseline_lateness()
        gm, bm = statistics.median(g), statistics.median(b)
        print(f"schedule lateness (@every 100ms, 3 s), median of {len(g)}:")
        print(f"  gxo exec     {gm:7.2f} ms   (p90 {sorted(g)[int(len(g) * 0.9)]:.2f} ms)   "
              f"(goal <= 10 ms: {'ok' if gm <= 10 else 'MISSED'})")
        print(f"  plain asyncio{bm:7.2f} ms")
        n = args.records
        per = (gxo_events_cpu(workdir, n) - gxo_events_cpu(workdir, 1)) / (n - 1)
        out = subprocess.run([sys.executable, "-c", BASELINE_EVENTS, str(n)], capture_output=True, text=True,
                             check=True)
        base_per = float(out.stdout) / n
        print(f"event_driven instances (control:identity, concurrency 8), CPU per instance, {n:,} records:")
        print(f"  gxo exec     {per * 1e6:7.1f} us   {1 / per:10,.0f} instances/s   "
              f"(goal >= 10,000/s: {'ok' if 1 / per >= 10_000 else 'MISSED'})")
        print(f"  plain asyncio{base_per * 1e6:7.1f} us   {1 / base_per:10,.0f} per s   ratio {per / base_per:.1f}x")
        for n, inline in ((200, False), (10_000, True)):
            dur, mem = durable_cost(workdir, n, inline)
            kind = "inline no-op" if inline else "exec true"
            print(f"durable commits, chain of {n:,} {kind} workloads, wall per workload:")
            print(f"  durable store {dur * 1e6:8.1f} us   --no-state {mem * 1e6:8.1f} us   "
                  f"cost {max(0.0, dur - mem) * 1e6:7.1f} us per workload ({dur / mem:.2f}x)")


if __name__ == "__main__":
    main()
