"""gxo exec's durable run history: commits at workload boundaries, --resume, refusals."""

from __future__ import annotations

import asyncio
import os
import json
import signal
from pathlib import Path

from acceptance.harness import build, gxo_exec, run_tool, spawn, wait_until
from acceptance.inproc import Running, wait_for

CHAIN = """\
name: chain
schemaVersion: "1.0.0"
workloads:
  - name: a
    lifecycle: {{policy: run_once}}
    register: ra
    process: {{module: exec, params: {{command: sh, args: ["-c", "echo a >> {log}; echo va"]}}}}
  - name: b
    lifecycle: {{policy: run_once}}
    register: rb
    process: {{module: exec, params: {{command: sh, args: ["-c", "echo b-{{{{ .ra.stdout }}}} >> {log}; {wait}; echo vb"]}}}}
  - name: c
    lifecycle: {{policy: run_once}}
    process: {{module: exec, params: {{command: sh, args: ["-c", "echo c-{{{{ .rb.stdout }}}} >> {log}"]}}}}
"""


def gxo_json(*args: object) -> object:
    """What ``gxo ARGS --json`` prints (one JSON document)."""
    import subprocess

    from acceptance.harness import tool

    out = subprocess.run([tool("gxo"), *map(str, args), "--json"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def chain(work: Path, wait: str = "true", name: str = "chain.yaml") -> tuple[Path, Path]:
    log = work / "log"
    pb = work / name
    pb.write_text(CHAIN.format(log=log, wait=wait))
    return build(pb, work), log


def kill_during_b(work: Path, plan: Path, log: Path, state: Path) -> None:
    gate = work / "gate"
    proc = spawn("gxo", "exec", plan, "--state-dir", state)
    try:
        assert wait_until(lambda: log.exists() and "b-va" in log.read_text(), timeout=20)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    del gate


def test_resume_last_continues_without_rerunning_what_finished(work: Path) -> None:
    plan, log = chain(work, wait=f"while [ ! -e {work}/go ]; do sleep 0.02; done")
    state = work / "state"
    kill_during_b(work, plan, log, state)
    listed = gxo_json("runs", "--state-dir", state)
    assert [r["status"] for r in listed] == ["Interrupted"], listed
    old = listed[0]["id"]
    (work / "go").write_text("")
    # without --resume: one line says how to continue
    note = gxo_exec(plan, "--state-dir", state, "--dry-run", json_events=False)
    assert f"run {old} of this plan was interrupted; continue it with: gxo exec {plan} --resume {old}" in note.stderr
    res = gxo_exec(plan, "--state-dir", state, "--resume", "last", json_events=False)
    assert res.rc == 0, res.explain()
    assert f"resumed run {old}: 1 workload(s) it had finished were not run again" in res.stdout
    # a ran once; b ran again (it was killed before its end was committed) and read a's register
    assert log.read_text().splitlines() == ["a", "b-va", "b-va", "c-vb"]
    again = gxo_exec(plan, "--state-dir", state, "--resume", old)
    assert again.rc == 3 and "is resumed, not interrupted" in again.stderr, again.explain()


def test_a_run_resumes_only_with_its_own_plan(work: Path) -> None:
    plan, log = chain(work, wait="sleep 30")
    state = work / "state"
    kill_during_b(work, plan, log, state)
    other, _ = chain(work, wait="sleep 1", name="chain2.yaml")
    res = gxo_exec(other, "--state-dir", state, "--resume", "last")
    assert res.rc == 3, res.explain()
    assert res.stderr.strip().splitlines()[-1].startswith("gxo: state refused: run ")
    assert "ran a different plan" in res.stderr
    assert log.read_text().splitlines() == ["a", "b-va"]  # nothing ran
    from gxo.runtime.workspace import Workspace

    Workspace.sweep_stale()  # the killed run's workspace (a later run would sweep it)


def test_resume_refusals_and_usage_errors(work: Path) -> None:
    plan, _ = chain(work)
    state = work / "state"
    none = gxo_exec(plan, "--state-dir", state, "--resume", "last")
    assert none.rc == 3 and "no interrupted run of plan 'chain' to resume" in none.stderr, none.explain()
    unknown = gxo_exec(plan, "--state-dir", state, "--resume", "20260101-000000-abcdef")
    assert unknown.rc == 3 and "20260101-000000-abcdef" in unknown.stderr, unknown.explain()
    both = gxo_exec(plan, "--no-state", "--resume", "last")
    assert both.rc == 2 and "--no-state keeps no run history" in both.stderr, both.explain()
    ok = gxo_exec(plan, "--no-state")
    default = Path(os.environ["XDG_STATE_HOME"]) / "gxo"
    assert ok.rc == 0 and not default.exists()  # nothing kept
    kept = gxo_exec(plan)
    assert kept.rc == 0 and len(list(default.glob("chain-*.db"))) == 1  # the default place


def test_a_completed_run_is_recorded_with_its_workloads(work: Path) -> None:
    plan, _ = chain(work)
    state = work / "state"
    res = gxo_exec(plan, "--state-dir", state)
    assert res.rc == 0, res.explain()
    runs = gxo_json("runs", "--state-dir", state)
    assert len(runs) == 1 and runs[0]["status"] == "Completed"
    run_id = runs[0]["id"]
    assert run_id == next(e for e in res.events if e["type"] == "PlaybookStart")["run_id"]
    shown = gxo_json("runs", "show", run_id, "--state-dir", state)
    assert shown["status"] == "Completed"
    assert [(w["name"], w["status"]) for w in shown["workloads"]] == [
        ("a", "Completed"), ("b", "Completed"), ("c", "Completed")]


def test_a_failing_store_stops_the_run_instead_of_hanging(work: Path, tmp_path: Path) -> None:
    from gxo.runtime.store import open_store

    log = work / "log"
    pb = work / "pb.yaml"
    pb.write_text(CHAIN.format(log=log, wait=f"while [ ! -e {work}/go ]; do sleep 0.02; done"))
    store = open_store("chain", str(tmp_path / "state"))

    async def main():
        r = Running(pb, store=store, plan_digest="d")
        r.start()
        await wait_for(lambda: log.exists() and "b-va" in log.read_text())
        store.close()  # the database goes away under the run: b's end cannot be committed
        (work / "go").write_text("")
        report = await r.wait_ended(timeout=20)
        r.close()
        return report

    report = asyncio.run(asyncio.wait_for(main(), 60))
    assert report.failed
    assert report.error.startswith("the run history could not be written:")
    assert report.results["c"].status == "Pending"  # nothing started after the failed commit
    assert log.read_text().splitlines() == ["a", "b-va"]


LINES = """\
name: lines
schemaVersion: "1.0.0"
workloads:
  - name: a
    lifecycle: {{policy: run_once}}
    register: ra
    process: {{module: exec, params: {{command: sh, args: ["-c", "echo a >> {log}; printf 'l1\\\\nl2\\\\r\\\\nl3\\\\n'"]}}}}
  - name: b
    lifecycle: {{policy: run_once}}
    needs: [a]
    process: {{module: exec, params: {{command: sh, args: ["-c", "echo b-va >> {log}; {wait}"]}}}}
  - name: c
    lifecycle: {{policy: run_once}}
    needs: [b]
    process: {{module: exec, params: {{command: sh, args: ["-c", "echo c-{{{{ len .ra.stdout_lines }}}}-{{{{ .ra.stdout_lines.1 }}}}-{{{{ .ra.exit_code }}}} >> {log}"]}}}}
"""


def test_a_resumed_run_restores_registers_with_their_derived_fields(work: Path) -> None:
    """exec's ``stdout_lines`` is ``stdout`` split into lines: the history keeps ``stdout`` only
    (a million lines are not stored twice) and a resumed run computes the lines again."""
    log = work / "log"
    pb = work / "lines.yaml"
    pb.write_text(LINES.format(log=log, wait=f"while [ ! -e {work}/go ]; do sleep 0.02; done"))
    plan = build(pb, work)
    state = work / "state"
    kill_during_b(work, plan, log, state)
    import sqlite3

    db = next(state.glob("lines-*.db"))
    with sqlite3.connect(db) as conn:
        stored = conn.execute("SELECT register_value FROM workloads WHERE name='a'").fetchone()[0]
    assert json.loads(stored) == {"stdout": "l1\nl2\r\nl3", "stderr": "", "exit_code": 0, "failed": False,
                                  "error": None}
    (work / "go").write_text("")
    res = gxo_exec(plan, "--state-dir", state, "--resume", "last")
    assert res.rc == 0, res.explain()
    assert log.read_text().splitlines() == ["a", "b-va", "b-va", "c-3-l2-0"]


def test_a_resumed_run_carries_on_the_restarts_toward_the_start_limit(work: Path) -> None:
    """A crash loop does not start over because gxo itself was killed: the restarts a
    supervised workload made within its start-limit window are durable with the run, and the
    resumed run reaches the limit after the restarts that were left (systemd's StartLimitBurst)."""
    calls = work / "calls"
    pb = work / "crashloop.yaml"
    pb.write_text(f"""\
name: crashloop
schemaVersion: "1.0.0"
workloads:
  - name: flaky
    lifecycle:
      policy: supervise
      backoff: {{base: 300ms, jitter: 0, max_restarts: 3, restart_window: 10m}}
    process: {{module: exec, params: {{command: sh, args: ["-c", "echo x >> {calls}; exit 1"]}}}}
""")
    plan = build(pb, work)
    state = work / "state"
    proc = spawn("gxo", "exec", plan, "--state-dir", state)
    try:  # the first run and two restarts (0.3 s, 0.6 s); the third would come 1.2 s later
        assert wait_until(lambda: calls.exists() and calls.read_text().count("x") == 3, timeout=20)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    assert calls.read_text().count("x") == 3
    res = gxo_exec(plan, "--state-dir", state, "--resume", "last")
    assert res.rc == 1, res.explain()
    end = res.end("flaky")
    assert end["final_status"] == "Failed"
    assert "start limit reached: 3 restart(s) within 10m" in end["error"]
    # the resumed run's start and the one restart that was left
    assert calls.read_text().count("x") == 5


SEALED = """\
name: sealed
schemaVersion: "1.0.0"
workloads:
  - name: fetch
    lifecycle: {policy: run_once}
    register: fetched
    process: {module: exec, params: {command: sh, args: ["-c", "echo plain-marker-4711; echo token=$0", "{{ secret \\"API_TOKEN\\" }}"]}}
"""


def test_a_sealed_history_keeps_no_value_in_clear_and_refuses_a_wrong_key(work: Path) -> None:
    """With a key every stored value is sealed (AES-256-GCM); a secret is redacted before it is
    stored at all; a wrong key is refused (exit 3) before anything runs, never read as garbage."""
    import base64

    pb = work / "sealed.yaml"
    pb.write_text(SEALED)
    plan = build(pb, work)
    state = work / "state"
    key, wrong = work / "k1", work / "k2"
    key.write_text(base64.b64encode(os.urandom(32)).decode())
    wrong.write_text(base64.b64encode(os.urandom(32)).decode())
    env = {"API_TOKEN": "s3cr3t-value-93xq"}
    res = gxo_exec(plan, "--state-dir", state, "--state-key-file", key, env=env)
    assert res.rc == 0, res.explain()
    raw = b"".join(p.read_bytes() for p in state.iterdir())
    assert b"plain-marker-4711" not in raw and b"s3cr3t-value-93xq" not in raw
    run_id = gxo_json("runs", "--state-dir", state)[0]["id"]
    shown = gxo_json("runs", "show", run_id, "--state-dir", state, "--state-key-file", key)
    assert [(w["name"], w["status"]) for w in shown["workloads"]] == [("fetch", "Completed")]
    # the history opens with its key; the secret was redacted before it was stored
    from gxo.runtime.store import open_store, resolve_key

    store = open_store("sealed", str(state), resolve_key(str(key)))
    try:
        value = store.load_run(run_id).workloads["fetch"].register_value
    finally:
        store.close()
    assert value["stdout"] == "plain-marker-4711\ntoken=[REDACTED]"
    before = sorted((p.name, p.stat().st_size) for p in state.iterdir() if p.suffix == ".db")
    refused = gxo_exec(plan, "--state-dir", state, "--state-key-file", wrong, env=env)
    assert refused.rc == 3, refused.explain()
    assert "sealed with another key" in refused.stderr and "Traceback" not in refused.stderr
    assert refused.events == []  # nothing ran
    missing = gxo_exec(plan, "--state-dir", state, env=env)
    assert missing.rc == 3 and "is sealed: set GXO_STATE_KEY or pass --state-key-file" in missing.stderr, \
        missing.explain()
    assert missing.events == []
    assert sorted((p.name, p.stat().st_size) for p in state.iterdir() if p.suffix == ".db") == before
