"""Crash safety of the durable run history, with real processes and SIGKILL.

A run_once DAG of 50 workloads (five chains of ten ``exec`` steps; each appends a line to a file
and registers a value that the next step reads) is killed with SIGKILL at 200 random points (the
``gxo`` process and every process it started, as a power loss would).  After each kill,
``gxo exec --resume last`` finishes the run.  Counted over all kills, each must be 0:

* **lost registers**: a step of the resumed run that read a wrong or missing value from its
  predecessor's register, or a register missing from the finished run's record;
* **ran twice after their commit**: a workload whose end the killed run had committed and that
  the resumed run ran again;
* **could not resume**: a resumed run that failed or was refused.

``GXO_CRASH_POINTS`` sets the number of kills (default 200).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

from acceptance.harness import tool

CHAINS, STEPS = 5, 10
POINTS = int(os.environ.get("GXO_CRASH_POINTS", "200"))
KILLER = str(Path(__file__).with_name("killer.py"))


def playbook() -> str:
    out = ['name: crash\nschemaVersion: "1.0.0"\nvars:\n  lines: /dev/null\nworkloads:\n']
    for c in range(CHAINS):
        for s in range(STEPS):
            name = f"w{c}{s}"
            got = f"{{{{ .r{c}{s - 1}.stdout }}}}" if s else "start"
            needs = f"    needs: [w{c}{s - 1}]\n" if s else ""
            out.append(f"""\
  - name: {name}
    lifecycle: {{policy: run_once}}
{needs}    register: r{c}{s}
    process:
      module: exec
      params: {{command: sh, args: ["-c", "sleep 0.02; echo {name} {got} >> {{{{ .lines }}}}; echo v{c}{s}"]}}
""")
    return "".join(out)


def expected_input(name: str) -> str:
    c, s = int(name[1]), int(name[2])
    return f"v{c}{s - 1}" if s else "start"


class Trial:
    """One kill and its resume; the three counts."""

    def __init__(self, plan: Path, work: Path, env: dict[str, str], delay: float) -> None:
        self.plan, self.work, self.env, self.delay = plan, work, env, delay
        self.lost = self.twice = self.unresumable = 0
        self.resumed = False

    def run(self) -> Trial:
        from gxo.runtime.store import open_store

        lines, state = self.work / "lines", self.work / "state"
        plan = str(self.plan)
        killed = subprocess.run([sys.executable, KILLER, f"{self.delay:.4f}", "--", tool("gxo"), "exec", plan,
                                 "--state-dir", str(state), "--var", f"lines={lines}"],
                                capture_output=True, text=True, env=self.env, check=True)
        before = lines.read_text().splitlines() if lines.exists() else []
        store = open_store("crash", str(state))
        try:
            old = store.interrupted_run("crash")
            committed = set() if old is None else {n for n, st in store.load_run(old).statuses.items()
                                                   if st == "Completed"}
        finally:
            store.close()
        if killed.stdout.strip() != "killed" or old is None:
            return self  # it ended before the kill, or was killed before its run began
        self.resumed = True
        res = subprocess.run([tool("gxo"), "exec", plan, "--state-dir", str(state), "--resume", "last",
                              "--var", f"lines={lines}"], capture_output=True, text=True, env=self.env)
        after = lines.read_text().splitlines()[len(before):]
        store = open_store("crash", str(state))
        try:
            record = store.load_run(store.latest_run("crash"))
        finally:
            store.close()
        if res.returncode != 0 or record.status != "Completed":
            self.unresumable += 1
        for line in after:
            name, got = line.split()
            if name in committed:
                self.twice += 1
            if got != expected_input(name):
                self.lost += 1
        registers = record.registers
        self.lost += sum(1 for c in range(CHAINS) for s in range(STEPS)
                         if (registers.get(f"r{c}{s}") or {}).get("stdout") != f"v{c}{s}")
        return self


def test_sigkill_at_200_points_loses_nothing_committed(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    env = {**os.environ, "GXO_WORKSPACE_ROOT": str(tmp_path / "ws")}
    pb = tmp_path / "crash.yaml"
    pb.write_text(playbook())
    plan = tmp_path / "crash.gxp"
    subprocess.run([tool("gxoc"), "build", "--no-native", str(pb), "-o", str(plan)], check=True, capture_output=True)
    # how long a whole run takes here (no kill): the kill points fall within it
    work0 = tmp_path / "full"
    work0.mkdir()
    t0 = time.monotonic()
    subprocess.run([tool("gxo"), "exec", str(plan), "--state-dir", str(work0 / "state"), "--var",
                    f"lines={work0 / 'lines'}"], check=True, capture_output=True, env=env)
    full = time.monotonic() - t0
    rng = random.Random(20261206)
    runs = []
    for point in range(POINTS):
        work = tmp_path / f"t{point}"
        work.mkdir()
        runs.append(Trial(plan, work, env, rng.uniform(0.3 * full, full)))
    with ThreadPoolExecutor(2) as pool:  # two at a time: each mostly waits for its processes
        done = list(pool.map(Trial.run, runs))
    resumed = sum(t.resumed for t in done)
    lost, twice, unresumable = (sum(t.lost for t in done), sum(t.twice for t in done),
                                sum(t.unresumable for t in done))
    print(f"\ncrash test: {POINTS} kills, {resumed} mid-run; lost registers {lost}, "
          f"ran twice after their commit {twice}, could not resume {unresumable}")
    assert resumed >= POINTS // 2, f"only {resumed} of {POINTS} kills landed mid-run"
    assert (lost, twice, unresumable) == (0, 0, 0)
