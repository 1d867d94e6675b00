"""E3, its run_once part: the example uses one process block under four lifecycles; under
``run_once`` the health check runs exactly once, and is not re-run when it fails (that is
``supervise``'s job)."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from acceptance.harness import EXAMPLES, build, gxo_exec, run_tool

E3 = EXAMPLES / "e03_lifecycle_polymorphism.yaml"
CHECKS = ("health_check_once", "health_check_supervised", "health_check_scheduled", "health_check_on_event")


def _example() -> dict:
    return yaml.safe_load(E3.read_text())


def test_same_process_block_under_four_lifecycles() -> None:
    """The language takes the block under every lifecycle; this release refuses the three it
    cannot run, at their policy, and nothing else."""
    doc = _example()
    by_name = {w["name"]: w for w in doc["workloads"]}
    blocks = [by_name[n]["process"] for n in CHECKS]
    assert all(b == blocks[0] for b in blocks)
    assert {by_name[n]["lifecycle"]["policy"] for n in CHECKS} == {"run_once", "supervise", "scheduled", "event_driven"}
    res = run_tool("gxoc", "check", E3)
    assert res.rc == 1, res.explain()
    errors = [line for line in res.stdout.splitlines() if "error[" in line]
    assert errors and all("error[not-implemented]" in line for line in errors), res.explain()
    refused = {line.split("lifecycle policy '")[1].split("'")[0] for line in errors if "lifecycle policy" in line}
    assert refused == {"supervise", "scheduled", "event_driven"}


def _run_once_playbook(work: Path, exit_code: int) -> tuple[Path, Path]:
    """The example's run_once workload, its process block kept, the binary a stub."""
    counter = work / "calls"
    stub = work / "my-health-check"
    stub.write_text(f'#!/bin/sh\necho "call $$" >> "{counter}"\necho healthy\nexit {exit_code}\n')
    stub.chmod(0o755)
    doc = _example()
    once = copy.deepcopy(next(w for w in doc["workloads"] if w["name"] == "health_check_once"))
    assert once["lifecycle"] == {"policy": "run_once"}
    once["process"]["params"]["command"] = str(stub)
    pb = work / "e03_once.yaml"
    pb.write_text(yaml.safe_dump({"name": doc["name"], "schemaVersion": doc["schemaVersion"], "workloads": [once]}))
    return build(pb, work), counter


def test_run_once_runs_exactly_once(work: Path) -> None:
    plan, counter = _run_once_playbook(work, 0)
    run = gxo_exec(plan)
    assert run.rc == 0, run.explain()
    assert run.statuses == {"health_check_once": "Completed"}
    assert len(run.of("ModuleExecutionStart", "health_check_once")) == 1
    assert len(counter.read_text().splitlines()) == 1
    assert run.summary("health_check_once")["stdout"] == "healthy"


def test_run_once_failure_is_not_restarted(work: Path) -> None:
    plan, counter = _run_once_playbook(work, 1)
    run = gxo_exec(plan)
    assert run.rc == 1, run.explain()
    assert run.statuses == {"health_check_once": "Failed"}
    assert "exited with code 1" in run.end("health_check_once")["error"]
    assert len(counter.read_text().splitlines()) == 1
