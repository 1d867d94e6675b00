"""Hostile input: secrets a workload could print before they are read, diagnostics of huge
source lines, and short inputs that would allocate gigabytes (printf widths, YAML aliases,
repeated strings).  Run as the real ``gxo``/``gxoc`` commands or through the real library."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

GXO = str(Path(sys.executable).with_name("gxo"))
GXOC = str(Path(sys.executable).with_name("gxoc"))


def _run(tool: str, args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GXO_")}
    proc = subprocess.run([tool, *args], capture_output=True, text=True, cwd=cwd, env={**base, **(env or {})},
                          timeout=120)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return proc


# --------------------------------------------------------------------------- secrets

ENV_FIRST = """\
name: p
schemaVersion: "1.0.0"
workloads:
  - name: a_env
    lifecycle: {policy: run_once}
    process:
      module: exec
      params: {command: /usr/bin/env}
  - name: b_secret
    lifecycle: {policy: run_once}
    needs: [a_env]
    process:
      module: exec
      params: {command: /bin/echo, args: ["${S}", '{{ secret "T" }}']}
"""


def test_secrets_are_tracked_before_the_first_workload(tmp_path: Path) -> None:
    """A workload that prints the environment before another reads the secret: hidden both in
    ``gxo run`` and in ``gxo exec`` of the built plan."""
    (tmp_path / "p.yaml").write_text(ENV_FIRST)
    env = {"S": "topsecretvalue", "T": "othersecret-42"}
    run = _run(GXO, ["run", "--json", "p.yaml"], tmp_path, env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "[REDACTED]" in run.stdout
    for value in env.values():
        assert value not in run.stdout + run.stderr
    build = _run(GXOC, ["build", "p.yaml", "-o", "p.gxp"], tmp_path)
    assert build.returncode == 0, build.stderr
    state = tmp_path / "state"
    ex = _run(GXO, ["exec", "--json", "--state-dir", str(state), "p.gxp"], tmp_path, env)
    assert ex.returncode == 0, ex.stdout + ex.stderr
    for value in env.values():
        assert value not in ex.stdout + ex.stderr
    runs = _run(GXO, ["runs", "--state-dir", str(state)], tmp_path)
    run_id = runs.stdout.splitlines()[1].split()[0]
    shown = _run(GXO, ["runs", "show", run_id, "--state-dir", str(state)], tmp_path)
    assert shown.returncode == 0, shown.stderr
    for value in env.values():
        assert value not in shown.stdout


def test_a_missing_secret_is_still_an_error_only_where_it_is_read(tmp_path: Path) -> None:
    """Resolving the plan's secrets up front changes nothing for one that is not set: a run
    that never reads it succeeds, one that reads it fails that workload with the same error."""
    (tmp_path / "skip.yaml").write_text(ENV_FIRST.replace("    needs: [a_env]\n",
                                                          "    needs: [a_env]\n    when: 'false'\n"))
    run = _run(GXO, ["run", "--json", "skip.yaml"], tmp_path, {"T": "othersecret-42"})
    assert run.returncode == 0, run.stdout + run.stderr
    assert "othersecret-42" not in run.stdout
    (tmp_path / "p.yaml").write_text(ENV_FIRST)
    run = _run(GXO, ["run", "--json", "p.yaml"], tmp_path, {"T": "othersecret-42"})
    assert run.returncode == 1
    ends = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    status = {e["workload"]: e for e in ends if e.get("type") == "WorkloadEnd"}
    assert status["a_env"]["final_status"] == "Completed"
    assert status["b_secret"]["final_status"] == "Failed"
    assert "secret 'S' not found" in json.dumps(status["b_secret"])


def test_plan_secret_names_are_the_literal_ones(tmp_path: Path) -> None:
    """``${NAME}`` and ``secret "NAME"`` count; ``$${X}`` is literal text and a name computed at
    run time is not known before it is read."""
    from gxo.compiler.inmemory import compile_in_memory
    from gxo.runtime.secrets import ChainProvider, EnvProvider, Tracker, plan_secret_names, track_plan_secrets

    (tmp_path / "n.yaml").write_text("""\
name: names
schemaVersion: "1.0.0"
vars:
  which: B
workloads:
  - name: w
    lifecycle: {policy: run_once}
    process:
      module: exec
      params:
        command: /bin/echo
        args: ["${A} $${LIT}", '{{ secret "C" }}', '{{ secret .which }}']
""")
    with open(os.devnull, "w") as devnull:
        loaded = compile_in_memory(str(tmp_path / "n.yaml"), devnull)
    assert plan_secret_names(loaded.plan) == ["A", "C"]
    tracker = Tracker()
    track_plan_secrets(loaded.plan, ChainProvider([EnvProvider({"A": "alpha-value", "LIT": "literal-x"})]), tracker)
    assert "alpha-value" in tracker and "literal-x" not in tracker and len(tracker) == 1
