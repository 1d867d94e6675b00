"""``gxo exec`` of a large plan runs every workload and stays lean in memory, whole process.

A chain of 2,000 no-op workloads (the shape of ``bench/kernel.py``'s whole-process line) is
written as a ``.gxp`` and run by the ``gxo`` console script: every workload runs, in order, and
the peak RSS the 2,000 workloads add over a 1-workload plan is bounded (28 MB when deps,
dependents and edges were all stored and the manifest was parsed twice; about 7 MB now).  Its
CPU time per workload is a benchmark figure (``bench/kernel.py``), not asserted here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from test_plan_decode import chain

from gxo.compiler.codegen import render_plan_code
from gxo.compiler.emit import BuiltPlan, members_of, write_gxp
from gxo.runtime.planfile import sha256_hex

GXO = str(Path(sys.executable).parent / "gxo")
BOUND_RSS_MB = 16.0
# Runs the command from a small process, so that the child's peak RSS is its own (a child forked
# from pytest would count pytest's memory until it execs); prints CPU seconds and peak KiB.
LAUNCHER = """
import json, os, sys
out = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
pid = os.fork()
if pid == 0:
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.execv(sys.argv[2], sys.argv[2:])
_, status, ru = os.wait4(pid, 0)
print(json.dumps([os.waitstatus_to_exitcode(status), ru.ru_utime + ru.ru_stime, ru.ru_maxrss]))
"""


def write_chain(path: Path, n: int) -> Path:
    import msgspec

    code = render_plan_code([], header="chain\n")
    plan = msgspec.structs.replace(chain(n), plan_code_sha256=sha256_hex(code.encode("utf-8")))
    write_gxp(str(path), members_of(BuiltPlan(plan, code, [], "")))
    return path


def peak_rss(plan: Path, out: Path) -> float:
    """Max peak RSS (MB) of ``gxo exec plan`` over two runs."""
    import json

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONUNBUFFERED", "PYTHONPROFILEIMPORTTIME")}
    rss = 0.0
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", LAUNCHER, str(out), GXO, "exec", str(plan)], env=env,
                              capture_output=True, text=True, check=True)
        code, _seconds, peak = json.loads(proc.stdout)
        assert code == 0, out.read_text()[-2000:]
        rss = max(rss, peak / 1024)
    return rss


def test_gxo_exec_of_2000_no_op_workloads(tmp_path: Path) -> None:
    n = 2_000
    one_rss = peak_rss(write_chain(tmp_path / "one.gxp", 1), tmp_path / "one.out")
    many_rss = peak_rss(write_chain(tmp_path / "many.gxp", n), tmp_path / "many.out")
    lines = [line for line in (tmp_path / "many.out").read_text().splitlines() if line.startswith("ok ")]
    assert len(lines) == n and lines[0].startswith("ok       w0 ") and lines[-1].startswith(f"ok       w{n - 1} ")
    assert f"ok={n} " in (tmp_path / "many.out").read_text()
    assert many_rss - one_rss < BOUND_RSS_MB, f"peak RSS {many_rss:.1f} MB, {one_rss:.1f} MB for 1 workload"
