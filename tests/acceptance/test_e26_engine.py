"""E26, the engine behaviours of the Go suite that make a passing run (design.md section 10
semantics): single success, vars -> register -> consumer with native types, an ignored failure
next to an independent branch, a when-false Skipped that satisfies its dependents; and the
load-time refusals (a cycle through two `when` status references, a bad access mode)."""

from __future__ import annotations

from pathlib import Path

from acceptance.harness import EXAMPLES, PLAYBOOKS, build, gxo_exec, gxo_run, run_tool


def test_single_success_and_native_register_chain(work: Path) -> None:
    run = gxo_exec(build(PLAYBOOKS / "e26_register_chain.yaml", work))
    assert run.rc == 0, run.explain()
    assert set(run.statuses.values()) == {"Completed"} and len(run.statuses) == 4
    single = run.summary("single")
    assert single == {"stdout": "ok", "stderr": "", "stdout_lines": ["ok"], "exit_code": 0}
    # the registered value is the module's output itself plus failed/error; the status key reads Completed
    ok = {"failed": False, "error": None}
    assert run.summary("copy_single") == {"registered": {**single, **ok}, "status": "Completed"}
    profile = {"name": "jdoe", "uid": 1001, "admin": False, "groups": ["users", "docker"]}
    built = run.summary("make_profile")
    assert built == {"user": profile, "retries": 3, "first_group": "users"}
    used = run.summary("use_profile")
    assert used["received"] == {**built, **ok}  # the whole map, natively (not its text)
    assert used["uid_plus_one"] == 1002 and used["as_text"] == "uid=1001"
    pe = run.playbook_end
    assert (pe["status"], pe["total_workloads"], pe["completed"], pe["failed"]) == ("Completed", 4, 4, 0)


def test_ignored_failure_with_independent_branch(work: Path) -> None:
    run = gxo_exec(build(PLAYBOOKS / "e26_ignored.yaml", work))
    assert run.rc == 0, run.explain()
    assert run.statuses == {"a": "Completed", "b": "Failed", "c": "Skipped", "d": "Completed",
                            "maybe": "Skipped", "after_maybe": "Completed"}
    assert run.end("b")["ignored"] is True and "exited with code 1" in run.end("b")["error"]
    assert run.end("c")["error"] == "dependency failed (ignored)" and not run.started("c")
    # when-false: Skipped, and its dependent still ran and saw the status
    assert run.end("maybe")["error"] == "when evaluated false"
    assert run.summary("after_maybe")["stdout"] == "maybe was Skipped"
    pe = run.playbook_end
    assert pe["status"] == "Completed" and pe["error_message"] is None
    assert (pe["completed"], pe["failed"], pe["ignored"], pe["skipped"], pe["pending"]) == (3, 0, 1, 2, 0)
    plain = gxo_exec(build(PLAYBOOKS / "e26_ignored.yaml", work, name="p.gxp"), json_events=False)
    assert plain.rc == 0
    assert "stall" not in plain.stdout.lower() and "COMPLETED" in plain.stdout
    assert "ok=3  changed=0  failed=0  ignored=1  cancelled=0  skipped=2  not run=0" in plain.stdout


def test_example_playbook_runs(work: Path) -> None:
    run = gxo_run(EXAMPLES / "e26_engine_behaviour.yaml", env={"TEST_API_KEY": "k3y-Of-The-Example-42"})
    assert run.rc == 0, run.explain()
    assert run.statuses == {
        "single_ok": "Completed", "make_profile": "Completed", "use_profile": "Completed",
        "maybe_skipped": "Skipped", "after_skipped": "Completed", "flaky": "Failed", "needs_flaky": "Skipped",
        "independent": "Completed", "parallel_secret_loop": "Completed", "leak_dsn": "Completed",
    }
    assert run.summary("leak_dsn")["stdout"] == "postgres://user:[REDACTED]@host/db"
    assert [s["stdout"] for s in run.summaries("parallel_secret_loop")] == [f"iteration {i}" for i in range(1, 11)]
    assert "k3y-Of-The-Example-42" not in run.stdout + run.stderr


def test_cycle_through_when_status_references_is_refused(work: Path) -> None:
    pb = work / "cycle.yaml"
    pb.write_text("""name: cycle
schemaVersion: "1.0.0"
workloads:
  - name: x
    lifecycle: {policy: run_once}
    when: '{{ eq ._gxo.workloads.y.status "Completed" }}'
    process: {module: exec, params: {command: echo}}
  - name: y
    lifecycle: {policy: run_once}
    when: '{{ eq ._gxo.workloads.x.status "Completed" }}'
    process: {module: exec, params: {command: echo}}
""")
    check = run_tool("gxoc", "check", pb)
    assert check.rc == 1 and "error[dependency-cycle]" in check.stdout, check.explain()
    assert "x" in check.stdout and "y" in check.stdout
    ran = gxo_run(pb, json_events=False)
    assert ran.rc == 1 and "dependency-cycle" in ran.stderr + ran.stdout, ran.explain()
    assert not ran.stdout.startswith("PLAY RECAP")


def test_invalid_state_access_mode_is_refused_at_load(work: Path) -> None:
    pb = work / "policy.yaml"
    pb.write_text("""name: policy
schemaVersion: "1.0.0"
state_policy: {access_mode: telepathy}
workloads:
  - name: x
    lifecycle: {policy: run_once}
    process: {module: exec, params: {command: echo}}
""")
    check = run_tool("gxoc", "check", pb)
    assert check.rc == 1 and "access_mode" in check.stdout, check.explain()
    assert run_tool("gxoc", "build", pb, "-o", work / "p.gxp").rc == 1
    assert not (work / "p.gxp").exists()
