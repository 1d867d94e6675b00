"""E3: the example uses one process block under four lifecycles.  They run side by side in one
``gxo exec``; under ``run_once`` the health check runs exactly once, and is not re-run when it
fails (that is ``supervise``'s job)."""

from __future__ import annotations

import copy
import json
import signal
import socket
import threading
import time
from pathlib import Path

import yaml

from acceptance.harness import EXAMPLES, build, close_proc, gxo_exec, run_tool, spawn, wait_until

E3 = EXAMPLES / "e03_lifecycle_polymorphism.yaml"
CHECKS = ("health_check_once", "health_check_supervised", "health_check_scheduled", "health_check_on_event")


def _example() -> dict:
    return yaml.safe_load(E3.read_text())


def test_same_process_block_under_four_lifecycles() -> None:
    """The language takes the block under every lifecycle and this release runs all four, its
    event source (a ``connection:listen``) included: the example checks clean."""
    doc = _example()
    by_name = {w["name"]: w for w in doc["workloads"]}
    blocks = [by_name[n]["process"] for n in CHECKS]
    assert all(b == blocks[0] for b in blocks)
    assert {by_name[n]["lifecycle"]["policy"] for n in CHECKS} == {"run_once", "supervise", "scheduled", "event_driven"}
    res = run_tool("gxoc", "check", E3)
    assert res.rc == 0, res.explain()
    assert "error[" not in res.stdout + res.stderr, res.explain()


def test_the_four_lifecycles_run_side_by_side(work: Path) -> None:
    """E3 in one ``gxo exec``: the block, its binary a stub, under its four lifecycles; the
    schedule is ``@every 1s`` (instead of every five minutes) and the event source is the
    example's TCP listener, on a free port: each connection is one event.  The
    run_once check runs once; the supervised one exits 0 and, ``restart: on_failure``, is not
    restarted; the scheduled one fires about once a second; the event-driven one runs once per
    line; SIGTERM stops them all and the run exits 0."""
    calls = work / "calls"
    stub = work / "my-health-check"
    stub.write_text(f'#!/bin/sh\necho "call $$" >> "{calls}"\necho healthy\n')
    stub.chmod(0o755)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    doc = _example()
    for w in doc["workloads"]:
        if w["name"] in CHECKS:
            w["process"]["params"]["command"] = str(stub)
        if w["name"] == "health_check_scheduled":
            w["lifecycle"]["cron"] = "@every 1s"
        if w["name"] == "some_event_stream":
            w["process"]["params"]["address"] = f"127.0.0.1:{port}"
    pb = work / "e03.yaml"
    pb.write_text(yaml.safe_dump(doc, sort_keys=False))
    plan = build(pb, work)
    proc = spawn("gxo", "exec", plan, "--json")
    seen: list[dict] = []

    def reader() -> None:
        assert proc.stdout is not None
        for line in iter(proc.stdout.readline, b""):
            seen.append(json.loads(line))

    def count(kind: str, name: str) -> int:
        return sum(1 for e in list(seen) if e.get("type") == kind and e.get("workload") == name)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: count("WorkloadEnd", "health_check_supervised") == 1, timeout=20)
        assert wait_until(lambda: count("Log", "some_event_stream") >= 1, timeout=20)  # listening
        for _ in range(3):
            socket.create_connection(("127.0.0.1", port), timeout=10).close()
        assert wait_until(lambda: count("ModuleExecutionEnd", "health_check_on_event") == 3, timeout=20)
        time.sleep(2.5)
        stopped = time.time()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        thread.join(10)
    finally:
        close_proc(proc)
    assert proc.returncode == 0, seen[-5:]
    runs = {n: sum(1 for e in seen if e.get("type") == "ModuleExecutionStart" and e.get("workload") == n)
            for n in CHECKS}
    assert runs["health_check_once"] == 1
    assert runs["health_check_supervised"] == 1
    first = min(e["timestamp"] for e in seen if e.get("type") == "ModuleExecutionStart"
                and e.get("workload") == "health_check_scheduled")
    assert abs(runs["health_check_scheduled"] - (int(stopped - first) + 1)) <= 1, (runs, stopped - first)
    assert runs["health_check_on_event"] == 3, runs
    assert len(calls.read_text().splitlines()) == sum(runs.values())
    ends = {e["workload"]: e["final_status"] for e in seen if e.get("type") == "WorkloadEnd"}
    assert ends == {n: "Completed" for n in (*CHECKS, "some_event_stream")}, ends


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
