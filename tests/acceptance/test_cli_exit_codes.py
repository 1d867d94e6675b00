"""``gxo exec`` exit codes on the failure paths: a damaged or untrusted plan (3, one line, no
traceback, nothing run), a bad ``--var`` (2, before anything runs), SIGINT (130) and SIGTERM
(143) while a child runs (its process group killed, the workspace removed), and a halt that
kills a running child's whole process group."""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from test_plan_tamper import make_plan, tampered_variants

from acceptance.harness import (
    PLAYBOOKS,
    build,
    group_alive,
    gxo_exec,
    pid_alive,
    read_events_until,
    run_tool,
    spawn,
    wait_until,
)


def _assert_refused(run, label: str) -> None:
    assert run.rc == 3, (label, run.explain())
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gxo: plan refused: "), (label, run.stderr)
    assert run.stdout == "" and run.events == [], label  # nothing ran: not even PlaybookStart


def test_damaged_plans_exit_3_with_one_line(work: Path, ws_root: Path) -> None:
    plan = make_plan(work)
    (work / "bad").mkdir()
    variants = tampered_variants(plan, work / "bad")
    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda v: (v[0], v[1], gxo_exec(v[1])), variants))
    for label, path, run in runs:
        _assert_refused(run, label)
        member = label.split(":", 1)[1] if label.startswith(("flip:", "raw-flip:")) else None
        if member:
            assert member in run.stderr or path.name in run.stderr, (label, run.stderr)
    assert not ws_root.exists()  # no run started, so no workspace was ever made
    ok = gxo_exec(plan)
    assert ok.rc == 0 and ok.statuses == {"greet": "Completed", "check": "Completed"}, ok.explain()


def test_signatures_fail_closed(work: Path) -> None:
    assert run_tool("gxoc", "keygen", "-o", work / "k").rc == 0
    assert run_tool("gxoc", "keygen", "-o", work / "other").rc == 0
    pb = work / "pb.yaml"
    pb.write_text("name: signed\nschemaVersion: \"1.0.0\"\nworkloads:\n  - name: a\n    lifecycle: {policy: run_once}\n"
                  "    process: {module: exec, params: {command: echo, args: [signed]}}\n")
    unsigned = build(pb, work, name="unsigned.gxp")
    signed = build(pb, work, "--sign", str(work / "k"), name="signed.gxp")
    _assert_refused(gxo_exec(unsigned, "--trusted-key", work / "k.pub"), "unsigned")
    wrong = gxo_exec(signed, "--trusted-key", work / "other.pub")
    _assert_refused(wrong, "wrong key")
    assert "signature" in wrong.stderr
    good = gxo_exec(signed, "--trusted-key", work / "k.pub")
    assert good.rc == 0 and good.statuses == {"a": "Completed"}, good.explain()


@pytest.fixture
def sleeper(work: Path) -> Path:
    return build(PLAYBOOKS / "sleeper.yaml", work)


@pytest.mark.parametrize("args, needle", [
    (["--var", "colour=blue"], "'colour' is not a var of this playbook"),
    (["--var", "count=many"], "var 'count' must be int"),
    (["--var", "label=[1,2]"], "var 'label' must be str"),
    (["--var", "count"], "not KEY=VALUE"),
    (["--vars-file", "missing.json"], "cannot read"),
    (["--timeout", "soon"], "not a duration"),
])
def test_bad_vars_exit_2_before_anything_runs(sleeper: Path, work: Path, ws_root: Path, args, needle) -> None:
    pidfile = work / "pids"
    t0 = time.monotonic()
    run = gxo_exec(sleeper, "--var", f"pidfile={pidfile}", *args, cwd=work)
    assert run.rc == 2, run.explain()
    assert needle in run.stderr, run.stderr
    assert run.events == [] and not pidfile.exists() and not ws_root.exists()
    assert time.monotonic() - t0 < 30


def test_vars_file_with_wrong_type(sleeper: Path, work: Path, ws_root: Path) -> None:
    (work / "vars.json").write_text('{"count": "three"}')
    run = gxo_exec(sleeper, "--vars-file", work / "vars.json")
    assert run.rc == 2 and "var 'count' must be int" in run.stderr, run.explain()
    assert not ws_root.exists()


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_the_run_kills_the_child_and_removes_the_workspace(sleeper: Path, work: Path, ws_root: Path,
                                                                         sig, code) -> None:
    pidfile = work / "pids"
    proc = spawn("gxo", "exec", sleeper, "--json", "--var", f"pidfile={pidfile}")
    try:
        read_events_until(proc, lambda e: e.get("message") == "started")
        assert wait_until(lambda: pidfile.exists() and len(pidfile.read_text().split()) == 2)
        shell, bg = map(int, pidfile.read_text().split())
        workspaces = [p for p in os.listdir(ws_root) if not p.endswith(".lock")]
        assert len(workspaces) == 1  # the run's workspace exists while it runs
        t0 = time.monotonic()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    assert time.monotonic() - t0 < 10
    assert b"Traceback" not in out + err
    assert not group_alive(shell) and not pid_alive(bg)  # the whole group (shell leads it)
    assert os.listdir(ws_root) == []
    lines = [json.loads(x) for x in out.decode().splitlines()]
    ends = {e["workload"]: e for e in lines if e["type"] == "WorkloadEnd"}
    assert set(ends) == {"nap"} and ends["nap"]["final_status"] == "Failed"
    assert ends["nap"]["error"] == f"cancelled: run interrupted by {sig.name}"
    end = lines[-1]
    assert end["type"] == "PlaybookEnd" and end["pending"] == 1 and end["error_message"] == f"run interrupted by {sig.name}"


def test_sigint_plain_output_recap(sleeper: Path, work: Path, ws_root: Path) -> None:
    pidfile = work / "pids"
    proc = spawn("gxo", "exec", sleeper, "--var", f"pidfile={pidfile}")
    try:
        assert wait_until(lambda: pidfile.exists() and len(pidfile.read_text().split()) == 2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    text = out.decode()
    assert "PLAY RECAP sleeper: INTERRUPTED in " in text and "Traceback" not in text + err.decode()
    assert "cancelled: nap: run interrupted by SIGINT" in text
    assert "not run: after_nap" in text
    assert not group_alive(int(pidfile.read_text().split()[0]))
    assert os.listdir(ws_root) == []


def test_halt_kills_the_running_childs_process_group(work: Path) -> None:
    pidfile = work / "pids"
    t0 = time.monotonic()
    run = gxo_exec(build(PLAYBOOKS / "halt_kills_group.yaml", work), "--var", f"pidfile={pidfile}")
    assert run.rc == 1, run.explain()
    assert time.monotonic() - t0 < 20
    assert run.statuses == {"failer": "Failed", "slow": "Failed"}
    assert run.status("never") == "Pending"
    assert run.end("slow")["error"] == "cancelled: run halted"
    assert run.playbook_end["error_message"].startswith("run halted by failer: ")
    shell, bg = map(int, pidfile.read_text().split())
    assert not group_alive(shell) and not pid_alive(bg)
