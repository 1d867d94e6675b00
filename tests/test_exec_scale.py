"""``gxo exec`` of a large plan costs microseconds per workload, whole process.

A chain of 2,000 no-op workloads (the shape of ``bench/kernel.py``'s whole-process line) is
written as a ``.gxp`` and run by the ``gxo`` console script; the CPU time (user + system) of the
process, minus that of a 1-workload plan, is divided by the workloads.  Reading, verifying and
decoding the plan, the kernel and the output lines are all in it.  It was about 700 us per
workload when the manifest was decoded by reflection; the bound leaves room for a busy machine.
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
BOUND_US = 150.0


def write_chain(path: Path, n: int) -> Path:
    import msgspec

    code = render_plan_code([], header="chain\n")
    plan = msgspec.structs.replace(chain(n), plan_code_sha256=sha256_hex(code.encode("utf-8")))
    write_gxp(str(path), members_of(BuiltPlan(plan, code, [], "")))
    return path


def cpu_seconds(plan: Path, out: Path) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONUNBUFFERED", "PYTHONPROFILEIMPORTTIME")}
    best = float("inf")
    for _ in range(2):
        with out.open("wb") as fh:
            proc = subprocess.Popen([GXO, "exec", str(plan)], stdout=fh, stderr=subprocess.STDOUT, env=env)
            _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        assert proc.returncode == 0, out.read_text()[-2000:]
        best = min(best, usage.ru_utime + usage.ru_stime)
    return best


def test_gxo_exec_of_2000_no_op_workloads(tmp_path: Path) -> None:
    n = 2_000
    one = cpu_seconds(write_chain(tmp_path / "one.gxp", 1), tmp_path / "one.out")
    many = cpu_seconds(write_chain(tmp_path / "many.gxp", n), tmp_path / "many.out")
    lines = (tmp_path / "many.out").read_text().splitlines()
    assert lines[0].startswith("ok       w0 ") and lines[n - 1].startswith(f"ok       w{n - 1} ")
    assert f"ok={n} " in (tmp_path / "many.out").read_text()
    per_us = (many - one) / n * 1e6
    assert per_us < BOUND_US, f"{per_us:.1f} us of CPU per workload (1 workload: {one * 1e3:.0f} ms)"
