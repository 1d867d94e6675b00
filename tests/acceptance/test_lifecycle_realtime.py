"""Long-running lifecycles in a real ``gxo`` process, in real time (a few seconds in all)."""

from __future__ import annotations

import signal
from pathlib import Path

from acceptance.harness import build, group_alive, gxo_run, pid_alive, read_events_until, spawn, wait_until


def write(work: Path, body: str) -> Path:
    p = work / "pb.yaml"
    p.write_text('name: lc\nschemaVersion: "1.0.0"\nworkloads:\n' + body)
    return p


def test_a_crashing_program_restarts_with_growing_gaps_then_fails_at_the_start_limit(work):
    pb = write(work, """\
  - name: crashy
    lifecycle:
      policy: supervise
      backoff: {base: 100ms, jitter: 0, max_restarts: 3}
    process:
      module: exec
      params: {command: sh, args: ["-c", "exit 1"]}
""")
    run = gxo_run(pb)
    assert run.rc == 1, run.explain()
    updates = [e for e in run.events if e["type"] == "LifecycleUpdate"]
    gaps = [round(e["next_attempt"] - e["timestamp"], 2) for e in updates if e.get("next_attempt")]
    assert gaps == [0.1, 0.2, 0.4]
    end = [e for e in run.events if e["type"] == "WorkloadEnd"][0]
    assert end["final_status"] == "Failed"
    assert "start limit reached: 3 restart(s)" in end["error"]


def test_sigterm_stops_a_supervised_program_within_its_stop_timeout_and_exits_0(work):
    pidfile = work / "pid"
    pb = write(work, f"""\
  - name: server
    lifecycle: {{policy: supervise, restart: always, stop_timeout: 2s}}
    process:
      module: exec
      params: {{command: sh, args: ["-c", "echo $$ > {pidfile}; trap 'exit 0' TERM; while true; do sleep 0.05; done"]}}
  - name: setup
    lifecycle: {{policy: run_once}}
    process: {{module: control:identity, params: {{value: 1}}}}
""")
    plan = build(pb, work)
    proc = spawn("gxo", "exec", plan, "--json")
    try:
        assert wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=20)
        pid = int(pidfile.read_text())
        read_events_until(proc, lambda e: e.get("type") == "WorkloadEnd" and e.get("workload") == "setup")
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(20)
        err = proc.stderr.read().decode() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    assert rc == 0, err
    assert not pid_alive(pid)
    assert not group_alive(pid)


def test_dry_run_makes_one_dry_pass_of_a_supervised_program_and_ends(work):
    pb = write(work, """\
  - name: server
    lifecycle: {policy: supervise, restart: always}
    process: {module: exec, params: {command: sleep, args: ["300"]}}
""")
    run = gxo_run(pb, "--dry-run", json_events=False)
    assert run.rc == 0, run.explain()
    assert "ok       server" in run.stdout
