"""`gxoc check` on a generated 1,000-workload playbook (chains, fan-outs, templates, streams).

Goal: <= 1.5 s wall on a 2-core machine, for the whole command (interpreter start included).
Baseline in the same run: `python -c "import yaml; yaml.safe_load(...)"` of the same file, i.e.
only reading the YAML; the ratio says what the full check costs on top of a bare parse.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

N = 1000


def generate(n: int = N) -> str:
    out = ['name: scale', 'schemaVersion: "1.0.0"', "vars:", "  env: staging", "  hosts: [a, b, c]",
           "  limits: {cpu: 2, mem: 512}", "workloads:"]
    for i in range(n):
        kind = i % 10
        name = f"w{i:04d}"
        out.append(f"  - name: {name}")
        out.append("    lifecycle: {policy: run_once}")
        if kind == 0:  # chain head: exec with templated args
            out += ["    process:", "      module: exec", "      params:", "        command: echo",
                    f'        args: ["{{{{ .env }}}}-{i}", "{{{{ .limits.cpu }}}}"]', f"    register: r{i}"]
        elif kind in (1, 2, 3):  # chain: reads the previous register
            prev = i - 1
            out += ["    process:", "      module: exec", "      params:", "        command: echo",
                    f'        args: ["{{{{ .r{prev}.stdout | upper }}}}", "{{{{ len .r{prev}.stdout_lines }}}}"]',
                    f'    when: "{{{{ .r{prev}.exit_code }}}} == 0 and {{{{ .env }}}} != \\"prod\\""',
                    f"    register: r{i}"]
        elif kind == 4:  # fan-out from the chain head of this block
            head = i - 4
            out += ["    process:", "      module: control:identity", "      params:",
                    '        host: "{{ .item }}"', f'        out: "{{{{ .r{head}.stdout }}}}"',
                    '    loop: "{{ .hosts }}"', "    loop_control: {parallel: 3}", f"    register: r{i}"]
        elif kind == 5:  # stream producer
            out += ["    process:", "      module: data:generate_from_list", "      params:",
                    "        items: [{id: 1, v: 2}, {id: 2, v: 3}]"]
        elif kind == 6:  # per-record map
            out += [f"    stream_inputs: [w{i - 1:04d}]", "    process:", "      module: data:map", "      params:",
                    "        template: '{\"id\": {{ .id }}, \"double\": {{ .v * 2 }}}'"]
        elif kind == 7:  # filter
            out += [f"    stream_inputs: [w{i - 1:04d}]", "    process:", "      module: data:filter", "      params:",
                    "        condition: '{{ .double }} > 4'"]
        elif kind == 8:  # sink
            out += [f"    stream_inputs: [w{i - 1:04d}]", "    process:", "      module: data:format", "      params:",
                    "        format: json", f"    register: r{i}"]
        else:  # assertion over several registers
            out += ["    process:", "      module: control:assert", "      params:",
                    f"        condition: '{{{{ .r{i - 9}.exit_code }}}} == 0 and {{{{ len .r{i - 5} }}}} == 3'",
                    f'        fail_message: "block {i // 10} failed"']
    return "\n".join(out) + "\n"


def timed(cmd: list[str], runs: int = 5) -> float:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        samples.append(time.perf_counter() - t0)
        if proc.returncode not in (0,):
            sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
    return statistics.median(samples)


def main() -> None:
    gxoc = str(Path(sys.executable).with_name("gxoc"))
    with tempfile.TemporaryDirectory() as tmp:
        pb = Path(tmp) / "scale.yaml"
        pb.write_text(generate(), encoding="utf-8")
        gx = timed([gxoc, "check", str(pb)])
        base = timed([sys.executable, "-c", f"import yaml; yaml.safe_load(open({str(pb)!r}))"])
    print(f"gxoc check, {N} workloads: {gx:.3f} s wall (median of 5; goal <= 1.5 s)")
    print(f"baseline yaml.safe_load only: {base:.3f} s wall")
    print(f"ratio gxoc/baseline: {gx / base:.2f}x")


if __name__ == "__main__":
    main()
