"""The durable store survives SIGKILL at any moment: a child process commits workloads in a loop
(one by one, or in batches of 4 with ``commit_workloads``) and prints each index once its commit
has returned; it is killed at random moments (30 times, alternating a clear and a sealed
database).  After every kill the database is reopened: every commit the child reported is there
and intact, what is there is a prefix of the loop made of whole batches (nothing half-written),
and SQLite's integrity check passes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from gxo.runtime.store import INTERRUPTED, open_store

KEY = bytes(range(32))
PLAN = "crash"
KILLS = 30

CHILD = """
import sys, time
from gxo.runtime.store import open_store

state, sealed, run, batch = sys.argv[1], sys.argv[2] == "1", sys.argv[3], int(sys.argv[4])
store = open_store("crash", state, bytes(range(32)) if sealed else None)
store.begin_run(run, "crash", "digest", time.time())
print("begun", flush=True)
i = 0
while True:
    t = time.time()
    rows = [(f"w{j}", "Completed", f"reason {j}", f"r{j}", {"i": j, "pad": "x" * (j % 50)}, t, t)
            for j in range(i, i + batch)]
    if batch == 1:
        store.commit_workload(run, *rows[0])
    else:
        store.commit_workloads(run, rows)
    if i % 7 == 0:
        store.save_operator_state(run, "agg", {"cells": {"n": i}, "regions": {}})
    for j in range(i, i + batch):
        print(j, flush=True)
    i += batch
"""


def _reported(out: bytes) -> tuple[bool, int]:
    """Whether the child reported its run begun, and how many commits it reported (complete
    lines only: a kill may cut the last one)."""
    lines = out.split(b"\n")[:-1]
    begun = bool(lines) and lines[0] == b"begun"
    return begun, len(lines) - 1 if begun else 0


def test_sigkill_loses_no_commit(tmp_path: Path) -> None:
    seed = int(os.environ.get("GXO_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    total_reported = 0
    outcomes: list[int] = []
    for k in range(KILLS):
        sealed = k % 2 == 1
        batch = 1 if k % 4 < 2 else 4  # commit_workload, or commit_workloads of 4 at once
        state = str(tmp_path / ("sealed" if sealed else "clear"))
        run = f"run{k:02d}"
        child = subprocess.Popen([sys.executable, str(script), state, "1" if sealed else "0", run,
                                  str(batch)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # a random moment: some kills land while the child starts or creates the database
        time.sleep(rng.uniform(0.0, 0.6))
        child.send_signal(signal.SIGKILL)
        out, err = child.communicate()
        assert child.returncode == -signal.SIGKILL, (seed, err.decode())
        begun, reported = _reported(out)
        total_reported += reported
        outcomes.append(reported)

        store = open_store(PLAN, state, KEY if sealed else None)
        try:
            assert store.integrity_check() == "ok", seed
            ids = [r.run_id for r in store.list_runs()]
            if begun:
                assert run in ids, (seed, run)
            if run in ids:
                assert store.interrupted_run(PLAN) == run
                rec = store.load_run(run)
                assert rec.status == INTERRUPTED and rec.plan_digest == "digest"
                n = len(rec.workloads)
                assert n >= reported, (seed, run, n, reported)
                assert list(rec.workloads) == [f"w{i}" for i in range(n)], (seed, run)
                assert n % batch == 0, (seed, run, n, batch)  # a batch lands whole or not at all
                for i in range(n):
                    w = rec.workloads[f"w{i}"]
                    assert (w.status, w.reason, w.register_key) == ("Completed", f"reason {i}", f"r{i}")
                    assert w.register_value == {"i": i, "pad": "x" * (i % 50)}
                snap = store.load_operator_state(run, "agg")
                if snap is None:  # the first snapshot follows the first commit
                    assert n <= batch and reported == 0, seed
                else:
                    assert snap["cells"]["n"] % 7 == 0 and snap["cells"]["n"] < n, seed
        finally:
            store.close()
    print(f"seed {seed}: commits reported before each kill: {outcomes}")
    assert total_reported > 0, f"no commit was reported in {KILLS} runs (seed {seed})"


WRITER = """
import sys, time
from gxo.runtime.store import open_store

store = open_store("crash", sys.argv[1])
run = sys.argv[2]
store.begin_run(run, "crash", "digest", time.time())
for i in range(300):
    store.commit_workload(run, f"w{i}", "Completed", None, f"r{i}", {"run": run, "i": i}, 1.0, 2.0)
store.end_run(run, "COMPLETED", time.time(), 0)
store.close()
"""


def test_concurrent_writers_wait_for_each_other(tmp_path: Path) -> None:
    """Processes writing one database take turns (the busy timeout): none fails, nothing is lost."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    state = str(tmp_path / "state")
    children = [subprocess.Popen([sys.executable, str(script), state, f"run{k}"], stderr=subprocess.PIPE)
                for k in range(3)]
    for child in children:
        _, err = child.communicate(timeout=120)
        assert child.returncode == 0, err.decode()
    store = open_store(PLAN, state)
    try:
        assert sorted((r.run_id, r.status) for r in store.list_runs()) == [
            (f"run{k}", "COMPLETED") for k in range(3)]
        for k in range(3):
            regs = store.load_run(f"run{k}").registers
            assert regs == {f"r{i}": {"run": f"run{k}", "i": i} for i in range(300)}
        assert store.integrity_check() == "ok"
    finally:
        store.close()
