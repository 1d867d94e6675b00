"""`gxoc check` and `gxoc build --no-native` on large generated playbooks.

Playbooks (each near what the limits allow: 10 MiB, 250,000 YAML nodes):
- workloads: 2,000 workloads with params, templates, registers, `needs:` and loops;
- table: `vars` holding a list of small maps (45,000 of them: 100,000 maps of two keys would
  be 500,001 nodes, past the node limit; that file is timed too, as the refusal it gets);
- scalars: `vars` holding a flow list of 240,000 one-digit scalars (a 480 KB file).
Goal: `gxoc check` within about 10x of a bare libyaml parse for `scalars`, and under 3 s for
`workloads`.  Baseline in the same run: `python -c "import yaml; yaml.load(f, CSafeLoader)"`
of the same file, i.e. only parsing with libyaml; the ratio says what the check costs on top.
Wall seconds (median), CPU seconds (user + sys, median: what the other processes of a shared
machine do not inflate) and the peak RSS of the process (os.wait4), whole command each.

    .venv/bin/python bench/compiler_large.py [--runs N] [--only workloads,table,...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def workloads(n: int = 2000) -> str:
    out = ["name: large", 'schemaVersion: "1.0.0"', "vars:", "  env: staging", "  hosts: [a, b, c]",
           "  limits: {cpu: 2, mem: 512}", "workloads:"]
    for i in range(n):
        name = f"w{i:04d}"
        out += [f"  - name: {name}", "    lifecycle: {policy: run_once}"]
        if i % 4 == 0:
            out += ["    process:", "      module: exec", "      params:", "        command: echo",
                    f'        args: ["{{{{ .env }}}}-{i}", "{{{{ .limits.cpu }}}}", "--flag"]',
                    "        ok_exit_codes: [0, 1]", f"    register: r{i}"]
        elif i % 4 in (1, 2):
            prev = i - 1
            out += [f"    needs: [w{prev:04d}]", "    process:", "      module: exec", "      params:",
                    "        command: echo",
                    f'        args: ["{{{{ .r{prev}.stdout | upper }}}}", "{{{{ len .r{prev}.stdout_lines }}}}"]',
                    f'    when: "{{{{ .r{prev}.exit_code }}}} == 0 and {{{{ .env }}}} != \\"prod\\""',
                    f"    register: r{i}"]
        else:
            head = i - 3
            out += [f"    needs: [w{head:04d}, w{i - 1:04d}]", "    process:", "      module: control:identity",
                    "      params:", '        host: "{{ .item }}"', f'        out: "{{{{ .r{head}.stdout }}}}"',
                    '    loop: "{{ .hosts }}"', "    loop_control: {parallel: 3}", f"    register: r{i}"]
    return "\n".join(out) + "\n"


def table(n: int = 45_000) -> str:
    out = ["name: table", 'schemaVersion: "1.0.0"', "vars:", "  rows:"]
    out += [f"    - {{id: {i}, host: h{i % 97}}}" for i in range(n)]
    out += ["workloads:", "  - name: report", "    lifecycle: {policy: run_once}", "    process:",
            "      module: exec", "      params:", "        command: echo",
            '        args: ["{{ len .rows }}"]']
    return "\n".join(out) + "\n"


def scalars(n: int = 240_000) -> str:
    head = 'name: scalars\nschemaVersion: "1.0.0"\nvars:\n  big: ['
    tail = ("]\nworkloads:\n  - name: count\n    lifecycle: {policy: run_once}\n    process:\n"
            "      module: exec\n      params: {command: echo, args: [\"{{ len .big }}\"]}\n")
    return head + ",".join(str(i % 10) for i in range(n)) + tail


PLAYBOOKS = {
    "workloads": (workloads, 0),
    "table": (table, 0),
    "table100k": (lambda: table(100_000), 1),  # refused: past the node limit
    "scalars": (scalars, 0),
}


def run(cmd: list[str], expect: int, cwd: str) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS in MB) of one process."""
    with tempfile.TemporaryFile() as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != expect:
            log.seek(0)
            sys.exit(f"command exited {proc.returncode}, expected {expect}: {' '.join(cmd)}\n"
                     f"{log.read()[-3000:].decode(errors='replace')}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def timed(cmd: list[str], expect: int, cwd: str, runs: int) -> tuple[float, float, float]:
    samples = [run(cmd, expect, cwd) for _ in range(runs)]
    return (statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples),
            max(s[2] for s in samples))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default=",".join(PLAYBOOKS))
    ap.add_argument("--no-build", action="store_true", help="time only gxoc check")
    args = ap.parse_args()
    gxoc = str(Path(sys.executable).with_name("gxoc"))
    with tempfile.TemporaryDirectory() as tmp:
        for label in args.only.split(","):
            gen, expect = PLAYBOOKS[label]
            pb = Path(tmp) / f"{label}.yaml"
            pb.write_text(gen(), encoding="utf-8")
            size = pb.stat().st_size
            base_cmd = [sys.executable, "-c",
                        f"import yaml; yaml.load(open({str(pb)!r}, 'rb'), Loader=yaml.CSafeLoader)"]
            base, base_cpu, base_rss = timed(base_cmd, 0, tmp, args.runs)
            print(f"{label}: {size / 1024:,.0f} KB; libyaml parse (baseline): {base:.2f} s wall, {base_cpu:.2f} s CPU, "
                  f"{base_rss:.0f} MB")
            cmds = [("check", [gxoc, "check", str(pb)])]
            if not args.no_build and expect == 0:
                cmds.append(("build --no-native", [gxoc, "build", "--no-native", str(pb), "-o",
                                                   str(Path(tmp) / f"{label}.gxp")]))
            for what, cmd in cmds:
                wall, cpu, rss = timed(cmd, expect, tmp, args.runs)
                print(f"  gxoc {what}: {wall:.2f} s wall, {cpu:.2f} s CPU (medians of {args.runs}), peak RSS {rss:.0f} MB; "
                      f"ratio to baseline {wall / base:.1f}x wall, {cpu / base_cpu:.1f}x CPU")


if __name__ == "__main__":
    main()
