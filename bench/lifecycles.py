"""Long-running lifecycles, each figure next to a plain asyncio baseline in the same run.

* **Restart latency** (supervise): a supervised ``sh -c 'exit 1'`` with a 1 ms back-off, run by
  ``gxo exec --json``; from the ``ModuleExecutionEnd`` of one run (the exit seen) to the
  ``ModuleExecutionStart`` of the next, minus the back-off.  Baseline: a plain asyncio loop that
  spawns the same program, waits for it, sleeps the same back-off and spawns it again (the time
  from one exit to the next spawn, minus the sleep).  Goal: <= 20 ms plus back-off.
* **Idle supervised programs**: ``gxo exec`` of 200 supervised ``sleep 3600``; its RSS once all
  200 run, and how long a SIGTERM takes to stop them all.  Baseline: a plain asyncio script
  holding 200 ``sleep`` children.

    python bench/lifecycles.py [--restarts 40] [--idle 200]
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--restarts", type=int, default=40)
    ap.add_argument("--idle", type=int, default=200)
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


if __name__ == "__main__":
    main()
