"""Cold start: ``gxo exec`` of a one-task plan, as a user runs it, median of 20.

The plan (one ``exec`` of ``true``) is built once with ``gxoc build --no-native``; each run is a
new ``gxo`` process (the console script next to this interpreter) with stdout to a pipe, so no
live view.  Baselines in the same run, same interpreter: ``python -c pass``, ``python -c
"import asyncio"`` (the kernel's floor) and ``python -c "import asyncio, click"`` (the CLI's).
Goal: GXO <= 100 ms.  ``--profile`` then prints the slowest imports of one run (``python -X
importtime``), which is how to see what start-up costs; ``--gxo PATH`` times another install's
``gxo`` script (a base install without the compiler extra); ``--instructions`` adds the
instructions each command executes (valgrind), which do not move with the machine's load.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_MS = 100.0
RUNS = 20
PLAYBOOK = """\
name: coldstart
schemaVersion: "1.0.0"
workloads:
  - name: one
    lifecycle: {policy: run_once}
    process:
      module: exec
      params:
        command: "true"
"""


def script(name: str) -> str:
    if name == "gxo" and "--gxo" in sys.argv[1:]:  # time another install's gxo (a base install)
        return sys.argv[sys.argv.index("--gxo") + 1]
    path = Path(sys.executable).parent / name
    if not path.exists():
        sys.exit(f"coldstart: {path} not found: install gxo into this interpreter's environment")
    return str(path)


def median_ms(commands: list[list[str]], env: dict[str, str], runs: int = RUNS) -> list[float]:
    """The median wall time of each command, the commands taking turns (a change in the
    machine's load hits all of them alike)."""
    for argv in commands:
        for _ in range(2):  # warm the page cache and __pycache__
            subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    times: list[list[float]] = [[] for _ in commands]
    for _ in range(runs):
        for i, argv in enumerate(commands):
            t0 = time.perf_counter()
            proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
            times[i].append((time.perf_counter() - t0) * 1000)
            if proc.returncode != 0:
                sys.exit(f"coldstart: {' '.join(argv)} exited {proc.returncode}: {proc.stderr.decode()[-500:]}")
    return [statistics.median(t) for t in times]


def instructions(argv: list[str], env: dict[str, str]) -> float | None:
    """Instructions one run of ``argv`` executes (valgrind's callgrind, that process only): a
    figure that does not move with the machine's load.  None without valgrind.  bench/kernel.py
    uses it too."""
    if shutil.which("valgrind") is None:
        return None
    with tempfile.TemporaryDirectory(prefix="gxo-bench-ir-") as tmp:
        out = os.path.join(tmp, "callgrind.out")
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        for line in Path(out).read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return float(line.split()[1])
    return None


def profile(plan: str, env: dict[str, str], top: int = 15) -> None:
    """The slowest top-level imports (cumulative) of one ``gxo exec``, from ``-X importtime``."""
    proc = subprocess.run([script("gxo"), "exec", plan], env={**env, "PYTHONPROFILEIMPORTTIME": "1"},
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
    rows: list[tuple[int, str]] = []
    count = 0
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        count += 1
        _, cum_us, name = line[len("import time:"):].split("|", 2)
        if not name.startswith("   "):  # top level: imported by the program itself
            rows.append((int(cum_us), name.strip()))
    rows.sort(reverse=True)
    print(f"  -X importtime: {count} modules; the slowest top-level imports (cumulative):")
    for cum, name in rows[:top]:
        print(f"    {cum / 1000:7.1f} ms  {name}")
    print("  (importlib.import_module bypasses -X importtime: gxo.stdlib namespaces do not show)")


def main() -> None:
    # Installed code runs from __pycache__: let the warm-up runs write it (PYTHONDONTWRITEBYTECODE
    # would make every run compile the runtime from source, which no installed gxo does).
    drop = ("PYTHONPROFILEIMPORTTIME", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    with tempfile.TemporaryDirectory(prefix="gxo-coldstart-") as tmp:
        env["XDG_STATE_HOME"] = os.path.join(tmp, "state")  # a fresh run history, never the user's
        src = Path(tmp, "coldstart.yaml")
        src.write_text(PLAYBOOK, "utf-8")
        plan = str(Path(tmp, "coldstart.gxp"))
        subprocess.run([script("gxoc"), "build", "--no-native", str(src), "-o", plan], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        commands = {
            "gxo exec": [script("gxo"), "exec", plan],
            "python -c pass": [sys.executable, "-c", "pass"],
            "python -c 'import asyncio'": [sys.executable, "-c", "import asyncio"],
            "python -c 'import asyncio, click'": [sys.executable, "-c", "import asyncio, click"],
        }
        gxo_ms, pass_ms, asyncio_ms, click_ms = median_ms(list(commands.values()), env)
        print(f"cold start of `gxo exec` on a one-task plan, median of {RUNS} (Python {sys.version.split()[0]})")
        print(f"  gxo  gxo exec                        {gxo_ms:7.1f} ms")
        print(f"  base python -c pass                  {pass_ms:7.1f} ms")
        print(f"  base python -c 'import asyncio'      {asyncio_ms:7.1f} ms")
        print(f"  base python -c 'import asyncio, click' {click_ms:5.1f} ms (gxo's own start-up past it: "
              f"{gxo_ms - click_ms:.1f} ms)")
        print(f"  ratio gxo / python {gxo_ms / pass_ms:.1f}x, gxo / asyncio {gxo_ms / asyncio_ms:.1f}x"
              f" (gxo's own start-up past asyncio: {gxo_ms - asyncio_ms:.1f} ms)")
        print(f"  goal <= {GOAL_MS:g} ms: {'ok' if gxo_ms <= GOAL_MS else 'MISSED'}")
        if "--instructions" in sys.argv[1:]:
            counts = {name: instructions(argv, env) for name, argv in commands.items()}
            if None in counts.values():
                print("  --instructions: valgrind not found")
            else:
                base = counts["python -c 'import asyncio'"]
                print("  instructions (callgrind, one run each; the same on a busy machine):")
                for name, n in counts.items():
                    print(f"    {name:36} {n / 1e6:8.1f} M  ({n / base:.2f}x import asyncio)")
        if "--profile" in sys.argv[1:]:
            profile(plan, env)


if __name__ == "__main__":
    main()
