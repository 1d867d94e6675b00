"""E26, the failure paths: a failure halts the run (the rest stays Pending, exit 1); a run
deadline cancels a slow workload (exit 124); a param that reads a skipped workload's register
fails at run time; secrets stay redacted in registers, errors and a parallel loop."""

from __future__ import annotations

import time
from pathlib import Path

from acceptance.harness import PLAYBOOKS, build, gxo_exec, pid_alive

SECRET = "pa55-W0rd-For-E26-0123456789"


def test_failure_halts_the_run(work: Path) -> None:
    plan = build(PLAYBOOKS / "e26_halt.yaml", work)
    run = gxo_exec(plan)
    assert run.rc == 1, run.explain()
    assert run.statuses == {"a": "Completed", "b": "Failed"}
    assert run.status("c") == run.status("d") == "Pending"
    assert not run.started("c") and not run.started("d")
    assert "exited with code 3: disk on fire" in run.end("b")["error"]
    pe = run.playbook_end
    assert pe["status"] == "Failed" and pe["error_message"].startswith("run halted by b: command /bin/sh exited")
    assert (pe["total_workloads"], pe["completed"], pe["failed"], pe["pending"]) == (4, 1, 1, 2)

    plain = gxo_exec(plan, json_events=False)
    assert plain.rc == 1
    recap = plain.stdout[plain.stdout.index("PLAY RECAP"):].splitlines()
    assert recap[0].startswith("PLAY RECAP engine-halt: FAILED in ")
    assert recap[1] == "  failed: b: command /bin/sh exited with code 3: disk on fire"  # the cause first
    assert "  not run: c: run halted by b" in recap and "  not run: d: run halted by b" in recap
    assert recap[-1] == "  ok=1  changed=0  failed=1  ignored=0  cancelled=0  skipped=0  not run=2"


def test_run_deadline_cancels_the_slow_workload(work: Path) -> None:
    plan = build(PLAYBOOKS / "e26_cancel.yaml", work)
    t0 = time.monotonic()
    run = gxo_exec(plan, "--timeout", "200ms")
    elapsed = time.monotonic() - t0
    assert run.rc == 124, run.explain()
    assert elapsed < 6, elapsed  # nowhere near the 10 s sleep
    assert run.statuses == {"slow": "Failed"}
    assert run.end("slow")["error"] == "cancelled: run timed out after 0.2s"
    assert run.status("after_slow") == "Pending"
    pe = run.playbook_end
    assert pe["status"] == "Failed" and pe["error_message"] == "run timed out after 0.2s"
    assert 150 <= pe["duration_ms"] < 6000
    child = next(e["pid"] for e in run.of("Log", "slow") if e.get("message") == "started")
    assert not pid_alive(child)

    plain = gxo_exec(plan, "--timeout", "200ms", json_events=False)
    assert plain.rc == 124
    assert "PLAY RECAP engine-cancel: TIMED OUT in 0." in plain.stdout
    assert "cancelled: slow: run timed out after 0.2s" in plain.stdout


def test_workload_timeout_fails_only_that_workload(work: Path) -> None:
    pb = work / "wtimeout.yaml"
    pb.write_text((PLAYBOOKS / "e26_cancel.yaml").read_text().replace(
        "  - name: slow\n    lifecycle: {policy: run_once}\n",
        "  - name: slow\n    lifecycle: {policy: run_once}\n    timeout: 300ms\n    ignore_errors: true\n"))
    run = gxo_exec(build(pb, work))
    assert run.rc == 0, run.explain()
    assert run.statuses == {"slow": "Failed", "after_slow": "Skipped"}
    assert run.end("slow")["error"] == "timed out after 0.3s" and run.end("slow")["ignored"]


def test_reading_a_skipped_workloads_register_fails_at_run_time(work: Path) -> None:
    run = gxo_exec(build(PLAYBOOKS / "e26_skipped_register.yaml", work))
    assert run.rc == 1, run.explain()
    assert run.statuses == {"producer": "Skipped", "reader": "Failed"}
    err = run.end("reader")["error"]
    assert err.startswith("param resolution failed") and "'produced'" in err
    assert not run.of("ModuleExecutionStart", "reader")  # failed before the module ran
    assert run.summaries("producer") == []


def test_secret_redaction_in_register_error_and_parallel_loop(work: Path) -> None:
    run = gxo_exec(build(PLAYBOOKS / "e26_secrets.yaml", work), env={"TEST_API_KEY": SECRET})
    assert run.rc == 0, run.explain()
    assert run.statuses == {"build_dsn": "Completed", "use_dsn": "Completed", "leaky_failure": "Failed",
                            "secret_loop": "Completed"}
    # the registered DSN holds the marker, never the value, and so does what reads it
    assert run.summary("build_dsn") == {"dsn": "postgres://user:[REDACTED]@host/db"}
    assert run.summary("use_dsn")["stdout"] == "postgres://user:[REDACTED]@host/db"
    # the error quoted the key: redacted, the keyword rule leaves "[REDACTED]"
    err = run.end("leaky_failure")["error"]
    assert "[REDACTED]" in err and SECRET not in err and err.startswith("command /bin/sh exited with code 1")
    # a parallel loop of ten, four at a time, each iteration reading the secret
    outs = run.summaries("secret_loop")
    assert [s["stdout"] for s in outs] == [f"iteration {i} uses [REDACTED]" for i in range(1, 11)]
    live = peak = 0
    for e in run.events:
        if e.get("workload") == "secret_loop" and e["type"] in ("ModuleExecutionStart", "ModuleExecutionEnd"):
            live += 1 if e["type"] == "ModuleExecutionStart" else -1
            peak = max(peak, live)
    assert 2 <= peak <= 4, peak
    assert SECRET not in run.stdout + run.stderr


def test_missing_secret_fails_the_workload(work: Path) -> None:
    run = gxo_exec(build(PLAYBOOKS / "e26_secrets.yaml", work), env={"TEST_API_KEY": None})
    assert run.rc == 1, run.explain()
    assert run.status("build_dsn") == "Failed"  # the first to read it (inline, at once)
    err = run.end("build_dsn")["error"]
    assert err.startswith("param resolution failed: e26_secrets.yaml:12:14 (params.dsn): secret 'TEST_API_KEY' not found"), err
    assert run.playbook_end["pending"] == 3
