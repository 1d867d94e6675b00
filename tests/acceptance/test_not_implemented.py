"""Nothing is ever run another way: a playbook or plan that holds what this release cannot run
(a security_context key, a declared-only module, a loop under a long-running policy) is refused before anything
runs, by ``gxoc check``/``build`` (exit 1, ``not-implemented`` at the key) and by ``gxo run`` /
``gxo exec`` (exit 3), also for a plan built by an older compiler or by hand."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from acceptance.harness import gxo_exec, gxo_run, run_tool

LOOKUP = """\
name: lookup
schemaVersion: "1.0.0"
vars:
  marker: /dev/null
workloads:
  - name: before
    lifecycle: {policy: run_once}
    process: {module: exec, params: {command: touch, args: ["{{ .marker }}"]}}
  - name: lookup
    lifecycle: {policy: run_once}
    process:
      module: control:wait_for_signal
      params: {context: {host: example.com}}
"""

SANDBOXED = """\
name: sandboxed
schemaVersion: "1.0.0"
vars:
  marker: /dev/null
workloads:
  - name: build
    lifecycle: {policy: run_once}
    process:
      module: exec
      params: {command: touch, args: ["{{ .marker }}"]}
    security_context: {no_new_privileges: true, resources: {cpu_weight: 50}}
  - name: items
    lifecycle: {policy: run_once}
    process:
      module: data:generate_from_list
      params: {items: [1, 2]}
    security_context: {seccomp: default}
"""

LOOPED = """\
name: looped
schemaVersion: "1.0.0"
vars:
  marker: /dev/null
workloads:
  - name: before
    lifecycle: {policy: run_once}
    process: {module: exec, params: {command: touch, args: ["{{ .marker }}"]}}
  - name: workers
    lifecycle: {policy: supervise, restart: always}
    loop: [1, 2]
    process: {module: exec, params: {command: sleep, args: ["60"]}}
"""


def write_playbook(work: Path, text: str) -> Path:
    path = work / "pb.yaml"
    path.write_text(text)
    return path


def _plan_built_by_an_older_compiler(work: Path, text: str) -> Path:
    """A .gxp whose IR holds a not-implemented feature: built through lower/emit directly, as
    a compiler from before the check (or a hand) would."""
    from gxo.compiler.emit import build_plan, emit_gxp
    from gxo.compiler.pipeline import check_source

    result = check_source(text, "playbook.yaml")
    assert {d.code for d in result.diags.items if d.severity == "error"} == {"not-implemented"}
    result.diags.items = []
    out = work / "old.gxp"
    emit_gxp(str(out), build_plan(result, source_bytes=text.encode()))
    return out


@pytest.mark.parametrize("text, needle", [
    (LOOKUP, "workload 'lookup': module 'control:wait_for_signal' is not implemented"),
    (SANDBOXED, "workload 'items': security_context on module 'data:generate_from_list' is not implemented"),
    (LOOPED, "workload 'workers': loop under lifecycle policy 'supervise' is not implemented"),
], ids=["module", "security_context", "loop"])
def test_gxo_exec_refuses_a_plan_with_a_not_implemented_feature(work: Path, ws_root: Path, text: str,
                                                               needle: str) -> None:
    marker = work / "ran"
    run = gxo_exec(_plan_built_by_an_older_compiler(work, text), "--var", f"marker={marker}")
    assert run.rc == 3, run.explain()
    assert run.stderr.startswith(f"gxo: plan refused: {needle}"), run.stderr
    assert run.events == [] and not marker.exists()  # nothing ran: not even PlaybookStart
    assert not ws_root.exists()


@pytest.mark.parametrize("text, code", [(LOOKUP, "12:15"), (SANDBOXED, "17:5"), (LOOPED, "11:5")],
                         ids=["module", "security_context", "loop"])
def test_gxo_run_refuses_and_gxoc_reports_the_key(work: Path, ws_root: Path, text: str, code: str) -> None:
    marker = work / "ran"
    pb = write_playbook(work, text)
    run = gxo_run(pb, "--var", f"marker={marker}")
    assert run.rc == 3, run.explain()
    assert f"pb.yaml:{code}: error[not-implemented]" in run.stderr
    assert "gxo: plan refused:" in run.stderr.splitlines()[-1]
    assert run.events == [] and not marker.exists()
    assert not ws_root.exists()
    check = run_tool("gxoc", "check", pb)
    assert check.rc == 1 and f"pb.yaml:{code}: error[not-implemented]" in check.stdout, check.explain()
    build = run_tool("gxoc", "build", "--no-native", pb, "-o", work / "pb.gxp")
    assert build.rc == 1 and not os.path.exists(work / "pb.gxp")


def test_declared_only_module_is_refused_at_check(work: Path) -> None:
    pb = write_playbook(work, """\
name: wait
schemaVersion: "1.0.0"
workloads:
  - name: lookup
    lifecycle: {policy: run_once}
    process:
      module: control:wait_for_signal
      params: {context: {host: example.com}}
""")
    check = run_tool("gxoc", "check", pb)
    assert check.rc == 1, check.explain()
    assert "pb.yaml:7:15: error[not-implemented]: module 'control:wait_for_signal' is declared but its code is not in this release" \
        in check.stdout


def test_several_refused_features_make_one_line(work: Path, ws_root: Path) -> None:
    text = LOOKUP.replace('    process: {module: exec, params: {command: touch, args: ["{{ .marker }}"]}}\n',
                          '    process: {module: exec, params: {command: touch, args: ["{{ .marker }}"]}}\n'
                          '    security_context: {seccomp: default, resources: {cpu_weight: 50}}\n'
                          '  - name: items\n'
                          '    lifecycle: {policy: run_once}\n'
                          '    process: {module: data:generate_from_list, params: {items: [1]}}\n'
                          '    security_context: {seccomp: default}\n')
    run = gxo_exec(_plan_built_by_an_older_compiler(work, text))
    assert run.rc == 3, run.explain()
    assert run.stderr.splitlines() == [
        "gxo: plan refused: workload 'items': security_context on module 'data:generate_from_list' is not "
        "implemented (it reads or writes a stream, whose records pass through gxo's own process) "
        "(and 1 more: gxoc check lists them); gxo never runs it another way"]
    assert not ws_root.exists()
