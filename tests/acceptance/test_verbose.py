"""``gxo run|exec -v``: each workload's summary under its status line (``exec``: stdout and
stderr), redacted and cut with a count of what was cut; ``-vv`` adds the rendered params; on a
terminal the live view's timers tick and the details follow the table."""

from __future__ import annotations

import os
import re
import select
import subprocess
import time
from pathlib import Path

from acceptance.harness import _env, build, gxo_exec, gxo_run, tool

TOKEN = "vrb-Token-8812"
ENV = {"GXO_VERBOSE_TOKEN": TOKEN}
PLAYBOOK = """\
name: verbose
schemaVersion: "1.0.0"
vars:
  word: hello
workloads:
  - name: greet
    lifecycle: {policy: run_once}
    process:
      module: exec
      params:
        command: /bin/sh
        args: ["-c", 'echo "{{ .word }} world"; echo "token is $T"; seq 1 30; echo "careful" >&2']
        environment: ['T={{ secret "GXO_VERBOSE_TOKEN" | upper }}']
  - name: facts
    lifecycle: {policy: run_once}
    process:
      module: control:identity
      params: {count: 3, long: '{{ printf "%0600d" 0 }}'}
  - name: quiet
    lifecycle: {policy: run_once}
    loop: [one, two]
    process:
      module: exec
      params: {command: /bin/true}
"""


def _playbook(work: Path) -> Path:
    pb = work / "verbose.yaml"
    pb.write_text(PLAYBOOK)
    return pb


def _block(stdout: str, name: str) -> list[str]:
    """The status line of ``name`` and the indented lines under it."""
    lines = stdout.splitlines()
    start = next(i for i, ln in enumerate(lines) if re.match(rf"^ok +{name} \(", ln))
    out = [lines[start]]
    for ln in lines[start + 1:]:
        if not ln.startswith(" " * 9):
            break
        out.append(ln)
    return out


def test_v_shows_exec_output_under_its_line(work: Path) -> None:
    run = gxo_run(_playbook(work), "-v", json_events=False, env=ENV)
    assert run.rc == 0, run.explain()
    greet = _block(run.stdout, "greet")
    assert greet[1:4] == ["         stdout: hello world",
                          "                 token is [REDACTED]",  # the secret, upper-cased: tainted
                          "                 1"]
    assert greet[-2:] == ["                 … (12 more lines)", "         stderr: careful"]
    assert len(greet) == 1 + 20 + 1 + 1  # 20 lines of stdout, the count of the rest, stderr
    facts = _block(run.stdout, "facts")
    assert facts[1] == "         count: 3"
    assert facts[2] == "         long: " + "0" * 600  # under the 2,000-character cut
    quiet = _block(run.stdout, "quiet")
    assert quiet[1:] == ["         [0] (no output)", "         [1] (no output)"]
    assert "params:" not in run.stdout
    assert TOKEN.upper() not in run.stdout + run.stderr and TOKEN not in run.stdout + run.stderr
    assert "PLAY RECAP verbose: COMPLETED" in run.stdout


def test_vv_adds_the_rendered_params_and_exec_takes_v(work: Path) -> None:
    plan = build(_playbook(work), work)
    run = gxo_exec(plan, "-vv", json_events=False, env=ENV)
    assert run.rc == 0, run.explain()
    greet = _block(run.stdout, "greet")
    # (a .gxp holds the params in canonical order: keys sorted)
    assert greet[1] == ('         params: {"args":["-c","echo \\"hello world\\"; echo \\"token is $T\\"; '
                        'seq 1 30; echo \\"careful\\" >&2"],"command":"/bin/sh","environment":["T=[REDACTED]"]}')
    # -vv also names each exec child's sandbox (-v only one other than the baseline)
    assert greet[2] == "         sandbox: seccomp default, no_new_privs on"
    assert greet[3] == "         stdout: hello world"
    assert _block(run.stdout, "quiet")[1:] == ["         sandbox: seccomp default, no_new_privs on",
                                                '         [0] params: {"command":"/bin/true"}', "         [0] (no output)",
                                                '         [1] params: {"command":"/bin/true"}', "         [1] (no output)"]
    # --json -vv: the params ride on ModuleExecutionStart, redacted like every event
    js = gxo_exec(plan, "-vv", env=ENV)
    start = js.of("ModuleExecutionStart", "greet")[0]
    assert start["params"]["environment"] == ["T=[REDACTED]"]
    assert "params" not in gxo_exec(plan, env=ENV).of("ModuleExecutionStart", "greet")[0]


def test_v_shows_what_a_failed_exec_printed(work: Path) -> None:
    pb = work / "fail.yaml"
    pb.write_text('name: failing\nschemaVersion: "1.0.0"\nworkloads:\n  - name: build\n'
                  '    lifecycle: {policy: run_once}\n    process:\n      module: exec\n      params:\n'
                  '        command: /bin/sh\n'
                  '        args: ["-c", "echo compiling; echo \'error: missing semicolon\' >&2; exit 3"]\n')
    run = gxo_run(pb, "-v", json_events=False)
    assert run.rc == 1, run.explain()
    lines = run.stdout.splitlines()
    at = next(i for i, ln in enumerate(lines) if ln.startswith("failed   build ("))
    assert lines[at + 1:at + 3] == ["         stdout: compiling", "         stderr: error: missing semicolon"]
    # --json: the summary as far as it got rides on ModuleExecutionEnd, marked failed
    end = gxo_run(pb).of("ModuleExecutionEnd", "build")[0]
    assert end["failed"] is True and end["summary"]["exit_code"] == 3


def test_long_values_are_cut_with_a_count(work: Path) -> None:
    pb = work / "long.yaml"
    pb.write_text(PLAYBOOK.replace('%0600d', '%05000d'))
    run = gxo_run(pb, "-v", json_events=False, env=ENV)
    assert run.rc == 0, run.explain()
    assert _block(run.stdout, "facts")[2] == "         long: " + "0" * 2000 + "… (3,000 more characters)"


def test_without_v_no_output_is_shown(work: Path) -> None:
    run = gxo_run(_playbook(work), json_events=False, env=ENV)
    assert run.rc == 0, run.explain()
    assert "hello world" not in run.stdout and "stdout:" not in run.stdout


def _on_a_terminal(args: list[str], env: dict[str, str], timeout: float = 30) -> str:
    """Run ``gxo`` with a pseudo-terminal as its stdout; everything it wrote, escapes removed."""
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen([tool("gxo"), *args], stdout=slave, stderr=slave, stdin=subprocess.DEVNULL,
                            env=_env({**env, "COLUMNS": "100", "TERM": "xterm"}))
    os.close(slave)
    chunks: list[bytes] = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    proc.wait(timeout=10)
    os.close(master)
    text = b"".join(chunks).decode("utf-8", "replace")
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r", "", text)


def test_live_view_timers_tick_and_details_follow_the_table(work: Path) -> None:
    pb = work / "slow.yaml"
    pb.write_text("""\
name: slow
schemaVersion: "1.0.0"
workloads:
  - name: nap
    lifecycle: {policy: run_once}
    process:
      module: exec
      params: {command: /bin/sh, args: ["-c", "sleep 1.5; echo rested"]}
""")
    text = _on_a_terminal(["run", str(pb), "-v"], ENV)
    ticks = set(re.findall(r"nap\s+Running\s+([0-9]+\.[0-9])s", text))
    assert len(ticks) >= 4, text  # refreshed while nothing else happened (8 times a second)
    assert "PLAY RECAP slow: COMPLETED" in text
    details = text[text.rindex("Completed"):]
    assert re.search(r"\nnap\n +stdout: rested\n", details), details
