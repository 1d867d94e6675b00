"""E4: an implicit state dependency. task_b reads task_a's register, so the compiler adds the
edge task_a -> task_b although task_b is listed first and declares no dependency; at run time
task_b starts only after task_a ended and its stdout carries task_a's stdout."""

from __future__ import annotations

import json
from pathlib import Path

from acceptance.harness import EXAMPLES, build, gxo_exec, run_tool

E4 = EXAMPLES / "e04_implicit_state_dependency.yaml"


def test_edge_is_inferred_with_the_consumer_listed_first(work: Path) -> None:
    plan = build(E4, work)
    shown = run_tool("gxoc", "show", "--json", plan)
    assert shown.rc == 0, shown.explain()
    manifest = json.loads(shown.stdout)
    order = [w["name"] for w in manifest["workloads"]]
    by_name = {w["name"]: w for w in manifest["workloads"]}
    assert order.index("task_b") < order.index("task_a")  # listed first in the file
    assert by_name["task_b"]["needs"] == []
    assert manifest["edges"] == [{"kinds": ["state"], "source": "task_a", "target": "task_b"}]
    assert by_name["task_a"]["level"] == 0 and by_name["task_b"]["level"] == 1


def test_consumer_runs_after_producer_and_gets_its_stdout(work: Path) -> None:
    plan = build(E4, work)
    run = gxo_exec(plan)
    assert run.rc == 0, run.explain()
    assert run.statuses == {"task_a": "Completed", "task_b": "Completed"}
    # task_b became Running only after task_a's WorkloadEnd
    idx = {(e["type"], e.get("workload"), e.get("new_status")): i for i, e in enumerate(run.events)}
    assert idx[("WorkloadEnd", "task_a", None)] < idx[("WorkloadStatusChanged", "task_b", "Running")]
    a, b = run.summary("task_a"), run.summary("task_b")
    assert a["exit_code"] == 0 and a["stdout"].strip()  # `date` printed something
    assert b["stdout"] == f"Task A finished at: {a['stdout']}"
    assert run.playbook_end["status"] == "Completed" and run.playbook_end["completed"] == 2


def test_chain_listed_backwards_runs_in_dependency_order(work: Path) -> None:
    pb = work / "chain.yaml"
    pb.write_text("""name: backwards-chain
schemaVersion: "1.0.0"
workloads:
  - name: third
    lifecycle: {policy: run_once}
    process: {module: exec, params: {command: echo, args: ["{{ .second_out.stdout }}-3"]}}
  - name: second
    lifecycle: {policy: run_once}
    process: {module: exec, params: {command: echo, args: ["{{ .first_out.stdout }}-2"]}}
    register: second_out
  - name: first
    lifecycle: {policy: run_once}
    process: {module: exec, params: {command: echo, args: ["1"]}}
    register: first_out
""")
    run = gxo_exec(build(pb, work))
    assert run.rc == 0, run.explain()
    running = [e["workload"] for e in run.of("WorkloadStatusChanged") if e["new_status"] == "Running"]
    assert running == ["first", "second", "third"]
    assert run.summary("third")["stdout"] == "1-2-3"
