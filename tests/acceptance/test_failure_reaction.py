"""Reacting to failure: a dependent may opt in to an ignored failure through its `when`; a
failed workload registers its failure; `on_failure` handlers run when a workload fails for
good, even while the run halts; `exec.ok_exit_codes`; the recap counts cancelled workloads as
cancelled; a `when` reading the loop variable decides per item; under `--dry-run` checks of
dry-run summaries end Skipped; `skip_on_no_input` skips a consumer that got no record."""

from __future__ import annotations

from pathlib import Path

from acceptance.harness import PLAYBOOKS, build, gxo_exec, gxo_run, run_tool


def test_a_dependent_opts_in_to_an_ignored_failure(work: Path) -> None:
    run = gxo_exec(build(PLAYBOOKS / "failure_opt_in.yaml", work))
    assert run.rc == 0, run.explain()
    assert run.statuses == {
        "deploy": "Failed",
        "rollback": "Completed",  # its when reads deploy's status
        "notify": "Completed",  # its when reads the register's failed field
        "use_output": "Skipped",
        "celebrate": "Skipped",
    }
    assert run.end("deploy")["ignored"] is True
    assert run.end("use_output")["error"] == "dependency failed (ignored)"
    assert run.end("celebrate")["error"] == "when evaluated false"
    # the opted-in dependents read the failed workload's register
    assert run.summary("rollback") == {
        "exit_code": 3,
        "stderr": "no route to host",
        "error": "command /bin/sh exited with code 3: no route to host",
    }
    assert run.summary("notify") == {"failed": True}
    pe = run.playbook_end
    assert (pe["status"], pe["completed"], pe["failed"], pe["ignored"], pe["skipped"]) == ("Completed", 2, 0, 1, 2)


def test_on_success_the_opted_in_dependents_see_failed_false(work: Path) -> None:
    run = gxo_exec(build(PLAYBOOKS / "failure_opt_in.yaml", work), "--var", "code=0")
    assert run.rc == 0, run.explain()
    assert run.statuses == {"deploy": "Completed", "rollback": "Skipped", "notify": "Skipped",
                            "use_output": "Completed", "celebrate": "Completed"}
    assert run.summary("celebrate") == {"error": None, "failed": False}
    assert run.summary("use_output") == {"out": "deploying"}


def test_a_failed_workload_registers_its_failure(work: Path) -> None:
    """exec's summary as far as it got (exit_code, stdout, stderr) plus failed and error; the
    type checker knows both fields (the playbook reads .deploy_out.error and .failed)."""
    run = gxo_exec(build(PLAYBOOKS / "on_failure.yaml", work))
    assert run.rc == 1, run.explain()
    # rollback reads deploy's failed register: stdout as far as it got, and the error
    assert run.summary("rollback")["stdout"] == (
        "rolled back v1.2.3 after: command /bin/sh exited with code 3 (deploying v1.2.3)")


def test_on_failure_runs_the_handler_while_the_run_halts(work: Path) -> None:
    run = gxo_exec(build(PLAYBOOKS / "on_failure.yaml", work))
    assert run.rc == 1, run.explain()  # the exit code is unchanged
    assert run.statuses == {
        "build": "Completed",
        "deploy": "Failed",
        "rollback": "Completed",
        "cleanup": "Skipped",
        "slow": "Failed",
    }
    assert run.status("report") == "Pending" and not run.started("report")
    assert run.end("deploy")["error"] == "command /bin/sh exited with code 3"
    assert len(run.of("WorkloadRetry", "deploy")) == 1  # the handler waited for the last attempt
    assert run.end("cleanup")["error"] == "not needed" and not run.started("cleanup")
    assert run.end("slow")["error"] == "cancelled: run halted" and run.end("slow")["cancelled"] is True
    pe = run.playbook_end
    assert pe["status"] == "Failed" and pe["error_message"].startswith("run halted by deploy: ")
    assert (pe["completed"], pe["failed"], pe["ignored"], pe["cancelled"], pe["skipped"], pe["pending"]) == \
        (2, 1, 0, 1, 1, 1)


def test_on_failure_handler_is_not_needed_when_the_workload_succeeds(work: Path) -> None:
    pb = work / "succeeds.yaml"  # its slow neighbour sleeps for a moment, not 30 s
    pb.write_text((PLAYBOOKS / "on_failure.yaml").read_text().replace('args: ["30"]', 'args: ["0.2"]'))
    run = gxo_exec(build(pb, work), "--var", "code=0")
    assert run.rc == 0, run.explain()
    assert run.statuses["rollback"] == run.statuses["cleanup"] == "Skipped"
    assert run.end("rollback")["error"] == "not needed" and not run.started("rollback")
    assert run.statuses["report"] == "Completed" and run.statuses["slow"] == "Completed"


def test_on_failure_of_an_ignored_failure_runs_without_halting(work: Path) -> None:
    pb = work / "ignored.yaml"
    pb.write_text((PLAYBOOKS / "on_failure.yaml").read_text().replace(
        "    register: deploy_out\n", "    register: deploy_out\n    ignore_errors: true\n").replace(
        'args: ["30"]', 'args: ["0"]'))
    run = gxo_exec(build(pb, work))
    assert run.rc == 0, run.explain()
    assert run.statuses == {"build": "Completed", "deploy": "Failed", "rollback": "Completed",
                            "cleanup": "Skipped", "slow": "Completed", "report": "Skipped"}
    assert run.end("report")["error"] == "dependency failed (ignored)"


def test_recap_counts_cancelled_workloads_apart(work: Path) -> None:
    """One failure halts the run: the workload it cancels (an ignore_errors one here) is
    counted cancelled, not failed."""
    run = gxo_exec(build(PLAYBOOKS / "on_failure.yaml", work), json_events=False)
    assert run.rc == 1, run.explain()
    recap = run.stdout[run.stdout.index("PLAY RECAP"):].splitlines()
    assert recap[0].startswith("PLAY RECAP on-failure: FAILED in ")
    assert recap[1] == "  failed: deploy: command /bin/sh exited with code 3"
    assert "  cancelled: slow: run halted" in recap
    assert "  skipped: cleanup: not needed" in recap
    assert recap[-1] == "  ok=2  changed=0  failed=1  ignored=0  cancelled=1  skipped=1  not run=1"
    assert "cancelled slow " in run.stdout  # its own line says so too


def test_ok_exit_codes(work: Path) -> None:
    plan = build(PLAYBOOKS / "ok_exit_codes.yaml", work)
    run = gxo_exec(plan)
    assert run.rc == 0, run.explain()
    assert run.summary("search")["exit_code"] == 1
    assert run.summary("after") == {"code": 1, "failed": False, "count": "0"}
    missing = gxo_exec(plan, "--var", f"file={work}/no-such-file")
    assert missing.rc == 1, missing.explain()
    assert missing.end("search")["error"].startswith("command grep exited with code 2")


def test_when_reading_the_loop_variable_is_evaluated_per_item(work: Path) -> None:
    run = gxo_exec(build(PLAYBOOKS / "loop_when.yaml", work))
    assert run.rc == 0, run.explain()
    assert run.statuses == {"restart": "Completed", "none": "Skipped", "once": "Skipped", "summary": "Completed",
                            "check": "Failed", "report_checks": "Completed"}
    assert [s["service"] for s in run.summaries("restart")] == ["api", "db"]  # web was skipped
    assert run.summary("summary") == {"first": "api", "second": None, "third_failed": False}
    assert run.end("none")["error"] == "when evaluated false for every item"
    assert not run.of("ModuleExecutionStart", "none")
    assert run.end("once")["error"] == "when evaluated false"  # once, before the loop


def test_a_failed_loop_registers_its_items_as_far_as_they_got(work: Path) -> None:
    run = gxo_exec(build(PLAYBOOKS / "loop_when.yaml", work))
    assert run.rc == 0, run.explain()
    error = "command /bin/sh exited with code 3"
    assert run.end("check")["error"] == error
    assert run.summary("report_checks") == {
        "first": {"stdout": "item 0", "stderr": "", "stdout_lines": ["item 0"], "exit_code": 0,
                  "failed": False, "error": None},
        "second": {"stdout": "item 3", "stderr": "", "stdout_lines": ["item 3"], "exit_code": 3,
                   "failed": True, "error": error},
        "third": None,  # never ran
    }


def test_dry_run_skips_checks_of_dry_run_summaries(work: Path) -> None:
    run = gxo_run(PLAYBOOKS / "dry_run_ci.yaml", "--dry-run")
    assert run.rc == 0, run.explain()
    assert run.statuses == {"unit_tests": "Completed", "copy": "Completed", "tests_passed": "Skipped",
                            "copy_checked": "Skipped", "literal_check": "Completed"}
    for name in ("tests_passed", "copy_checked"):
        assert run.end(name)["error"] == "dry run: input not real"
    real = gxo_run(PLAYBOOKS / "dry_run_ci.yaml")
    assert real.rc == 0, real.explain()
    assert set(real.statuses.values()) == {"Completed"}


def test_skip_on_no_input(work: Path) -> None:
    plan = build(PLAYBOOKS / "skip_on_no_input.yaml", work)
    run = gxo_exec(plan)
    assert run.rc == 0, run.explain()
    assert run.statuses == {"rows": "Completed", "forward": "Skipped", "forward_always": "Completed"}
    assert run.end("forward")["error"] == "no input records" and not run.of("ModuleExecutionStart", "forward")
    assert run.summary("forward_always")["records_processed"] == 0
    fed = gxo_exec(plan, "--var", 'rows=[{"a": 1}]')
    assert fed.rc == 0, fed.explain()
    assert fed.statuses == {"rows": "Completed", "forward": "Completed", "forward_always": "Completed"}
    assert fed.summary("forward")["records_processed"] == 1


def test_check_refuses_bad_on_failure(work: Path) -> None:
    pb = work / "bad.yaml"
    pb.write_text("""name: bad
schemaVersion: "1.0.0"
workloads:
  - name: a
    lifecycle: {policy: run_once}
    process: {module: exec, params: {command: "true"}}
    on_failure: [b, nope]
  - name: b
    lifecycle: {policy: run_once}
    process: {module: exec, params: {command: "true"}}
    on_failure: [a]
""")
    res = run_tool("gxoc", "check", pb)
    assert res.rc == 1, res.explain()
    assert "error[undefined-name]: on_failure: 'nope' is not a workload" in res.stdout + res.stderr
    assert "error[dependency-cycle]: dependency cycle: a -> b -> a" in res.stdout + res.stderr
