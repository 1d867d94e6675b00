"""`gxoc build` of 10, 100 and 1,000 generated workloads (bench/check_scale.py's playbook).

For each size, in a fresh native cache ($XDG_CACHE_HOME in a temporary folder):
- cold: the first native build (every shard compiled);
- no edit: the same build again (every shard from the cache);
- one-line edit: one expression evaluated per loop item changed (the fan-out's `out` param of
  the first block): the worst one-line edit, since an edit of a param rendered once per task
  changes no shard at all;
- --no-native: the bytecode-only build.
Goal (design.md section 7): <= 60 s cold and <= 3 s after a one-line edit for 1,000 workloads.
Wall seconds of the whole command, and its CPU seconds (user + sys of gxoc and its compilers),
which the other processes of a shared machine do not inflate.

    .venv/bin/python bench/build.py [--sizes 10,100,1000] [-j N]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from check_scale import generate  # noqa: E402


def timed(cmd: list[str], env: dict[str, str], cwd: str) -> tuple[float, float, str]:
    before = os.times()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, check=False)
    wall = time.perf_counter() - t0
    after = os.times()
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    native = re.search(r"native: .*", proc.stderr)
    return wall, cpu, native.group(0) if native else ""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10,100,1000")
    ap.add_argument("-j", "--jobs", type=int, default=None)
    args = ap.parse_args()
    gxoc = str(Path(sys.executable).with_name("gxoc"))
    jobs = ["-j", str(args.jobs)] if args.jobs else []
    print(f"{'workloads':>9}  {'step':<14} {'wall s':>7} {'cpu s':>7}  native")
    for n in [int(x) for x in args.sizes.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "XDG_CACHE_HOME": os.path.join(tmp, "xdg")}
            text = generate(n)
            pb = Path(tmp) / "scale.yaml"
            pb.write_text(text, encoding="utf-8")
            build = [gxoc, "build", "scale.yaml", "-o", "scale.gxp", *jobs]
            rows = [("cold", build), ("no edit", build)]
            for name, cmd in rows:
                wall, cpu, native = timed(cmd, env, tmp)
                print(f"{n:>9}  {name:<14} {wall:>7.2f} {cpu:>7.2f}  {native}", flush=True)
            edited = text.replace('out: "{{ .r0.stdout }}"', 'out: "{{ .r0.stdout | lower }}"', 1)
            assert edited != text
            pb.write_text(edited, encoding="utf-8")
            wall, cpu, native = timed(build, env, tmp)
            print(f"{n:>9}  {'one-line edit':<14} {wall:>7.2f} {cpu:>7.2f}  {native}", flush=True)
            wall, cpu, _ = timed([gxoc, "build", "scale.yaml", "-o", "pure.gxp", "--no-native"], env, tmp)
            print(f"{n:>9}  {'--no-native':<14} {wall:>7.2f} {cpu:>7.2f}", flush=True)


if __name__ == "__main__":
    main()
