"""E12: a best-effort notification. The POST gets a 500: the notification ends Failed
(ignored), everything depending on it (transitively) is Skipped with the reason, the other
branches complete, and the run exits 0."""

from __future__ import annotations

import json
from pathlib import Path

from acceptance.harness import EXAMPLES, PLAYBOOKS, HttpMock, build, gxo_exec


def test_example_ignored_failure_exits_zero(work: Path) -> None:
    run = gxo_exec(build(EXAMPLES / "e12_best_effort_notification.yaml", work))
    assert run.rc == 0, run.explain()
    assert run.statuses == {
        "slack_stub": "Completed",
        "run_critical_tests": "Completed",
        "post_success_notification": "Failed",
        "archive_test_report": "Completed",
    }
    end = run.end("post_success_notification")
    assert end["ignored"] is True and "status 500" in end["error"]
    pe = run.playbook_end
    assert (pe["status"], pe["completed"], pe["failed"], pe["ignored"]) == ("Completed", 3, 0, 1)
    assert run.summary("archive_test_report")["bytes_written"] == len("42 passed, 0 failed\n")


def test_dependents_of_the_ignored_failure_are_skipped(work: Path) -> None:
    plan = build(PLAYBOOKS / "e12_with_dependents.yaml", work)
    with HttpMock([500]) as mock:
        run = gxo_exec(plan, "--var", f"webhook={mock.url}/services/T000/B000/XXXX")
    assert run.rc == 0, run.explain()
    assert run.statuses == {
        "run_critical_tests": "Completed",
        "post_success_notification": "Failed",
        "log_notification": "Skipped",
        "after_log": "Skipped",
        "archive_test_report": "Completed",
        "audit": "Completed",
    }
    assert run.end("post_success_notification")["ignored"] is True
    for name in ("log_notification", "after_log"):
        assert run.end(name)["error"] == "dependency failed (ignored)"
        assert not run.started(name)
    # exactly one POST (no retry), carrying the run id and the tests' output
    assert len(mock.calls) == 1
    _, method, path, body = mock.calls[0]
    run_id = run.of("PlaybookStart")[0]["run_id"]
    assert (method, path) == ("POST", "/services/T000/B000/XXXX")
    assert json.loads(body) == {"text": f"Build {run_id} passed tests! (42 passed, 0 failed)"}
    assert run.summary("audit")["content"] == "42 passed, 0 failed\n"


def test_recap_counts_ignored_and_skipped(work: Path) -> None:
    plan = build(PLAYBOOKS / "e12_with_dependents.yaml", work)
    with HttpMock([500]) as mock:
        run = gxo_exec(plan, "--var", f"webhook={mock.url}/hook", json_events=False)
    assert run.rc == 0, run.explain()
    out = run.stdout
    assert "COMPLETED" in out
    assert "ok=3  changed=0  failed=0  ignored=1  cancelled=0  skipped=2  not run=0" in out
    assert "ignored: post_success_notification: HTTP POST" in out
    assert "skipped: log_notification: dependency failed (ignored)" in out


def test_successful_notification_runs_its_dependents(work: Path) -> None:
    plan = build(PLAYBOOKS / "e12_with_dependents.yaml", work)
    with HttpMock([200]) as mock:
        run = gxo_exec(plan, "--var", f"webhook={mock.url}/hook")
    assert run.rc == 0, run.explain()
    assert set(run.statuses.values()) == {"Completed"}
    assert run.summary("log_notification")["stdout"] == "slack said 200"
