"""Long-running lifecycles in a real ``gxo`` process, in real time (a few seconds in all)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from acceptance.harness import build, close_proc, group_alive, gxo_run, pid_alive, read_events_until, spawn, wait_until


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


def test_every_second_fires_two_to_four_times_in_three_seconds(work):
    marks = work / "marks"
    pb = write(work, f"""\
  - name: tick
    lifecycle: {{policy: scheduled, cron: "@every 1s"}}
    process: {{module: exec, params: {{command: sh, args: ["-c", "echo x >> {marks}"]}}}}
""")
    plan = build(pb, work)
    proc = spawn("gxo", "exec", plan, "--json")
    try:
        time.sleep(3.0)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(20)
    finally:
        _close(proc)
    assert rc == 0
    assert 2 <= marks.read_text().count("x") <= 4


def test_a_tail_f_source_feeds_an_event_driven_handler_one_file_per_line(work):
    source = work / "app.log"
    source.write_text("")
    out = work / "out"
    out.mkdir()
    pb = write(work, f"""\
  - name: follow
    lifecycle: {{policy: supervise, restart: always}}
    process: {{module: exec, params: {{command: tail, args: ["-n", "0", "-F", "{source}"], stdout_records: true}}}}
  - name: handle
    lifecycle: {{policy: event_driven, source: follow, concurrency: 2}}
    process:
      module: exec
      params: {{command: sh, args: ["-c", "echo \\"$0\\" > {out}/$(echo \\"$0\\" | cut -d' ' -f1)", "{{{{ .line }}}}"]}}
""")
    plan = build(pb, work)
    proc = spawn("gxo", "exec", plan, "--json")
    try:
        time.sleep(1.0)  # tail is following
        with source.open("a") as fh:
            for i in range(5):
                fh.write(f"line{i} hello {i}\n")
                fh.flush()
                time.sleep(0.05)
        assert wait_until(lambda: len(list(out.iterdir())) == 5, timeout=20), sorted(os.listdir(out))
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(20)
    finally:
        _close(proc)
    assert rc == 0
    assert sorted(p.read_text() for p in out.iterdir()) == [f"line{i} hello {i}\n" for i in range(5)]


def test_sigterm_stops_a_supervised_child_a_scheduled_job_and_a_stream_and_leaves_no_process(work):
    pids = work / "pids"
    pids.mkdir()
    pb = write(work, f"""\
  - name: server
    lifecycle: {{policy: supervise, restart: always, stop_timeout: 2s}}
    process: {{module: exec, params: {{command: sh, args: ["-c", "echo $$ > {pids}/server; exec sleep 300"]}}}}
  - name: job
    lifecycle: {{policy: scheduled, cron: "@every 1s", stop_timeout: 2s}}
    process: {{module: exec, params: {{command: sh, args: ["-c", "echo $$ > {pids}/job-$$; exec sleep 300"]}}}}
  - name: ticks
    lifecycle: {{policy: supervise, restart: always, stop_timeout: 2s}}
    process:
      module: exec
      params: {{command: sh, args: ["-c", "echo $$ > {pids}/ticks; while true; do echo t; sleep 0.1; done"],
               stdout_records: true}}
  - name: sink
    lifecycle: {{policy: event_driven, source: ticks}}
    process: {{module: control:identity, params: {{value: "{{{{ .line }}}}"}}}}
""")
    plan = build(pb, work)
    proc = spawn("gxo", "exec", plan, "--json")
    try:
        assert wait_until(lambda: {"server", "ticks"} <= set(os.listdir(pids))
                          and any(n.startswith("job-") for n in os.listdir(pids)), timeout=20)
        time.sleep(0.3)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(20)
        took = time.monotonic() - started
        out = proc.stdout.read().decode() if proc.stdout else ""
    finally:
        _close(proc)
    assert rc == 0
    assert took < 2 + 2 + 2  # each within its stop_timeout (and the stream's drain within its own)
    for f in pids.iterdir():
        pid = int(f.read_text())
        assert not pid_alive(pid) and not group_alive(pid), f.name
    ends = {e["workload"]: e for e in map(json.loads, out.splitlines()) if e["type"] == "WorkloadEnd"}
    assert {n: e["final_status"] for n, e in ends.items()} == {n: "Completed" for n in ("server", "job", "ticks", "sink")}


def _close(proc) -> None:
    close_proc(proc)


def test_an_event_driven_pipeline_with_an_aggregate_is_one_topology_across_events(work):
    """A stream:pipeline handler with a data:aggregate step (design.md §3): one long-lived
    topology fed by the source, so its groups span the events (100 of them here, with the
    per-record steps at concurrency 8); with neither window nor count, the groups are emitted
    when the source's stream ends."""
    out = work / "out"
    pb = write(work, f"""\
  - name: src
    lifecycle: {{policy: supervise, restart: never}}
    process: {{module: exec, params: {{command: seq, args: ["1", "100"], stdout_records: true}}}}
  - name: h
    lifecycle: {{policy: event_driven, source: src, concurrency: 8}}
    process:
      module: stream:pipeline
      params:
        concurrency: 8
        steps:
          - {{id: pause, uses: exec, with: {{command: "true"}}}}
          - {{id: num, uses: data:map, with: {{template: '{{ "n": {{{{ .line | int }}}}, "odd": {{{{ (.line | int) % 2 }}}} }}'}}}}
          - id: n
            uses: data:aggregate
            with:
              group_by_fields: [odd]
              aggregate_fields: [{{name: c, op: count}}, {{name: total, op: sum, source_field: n}}]
          - id: write
            uses: exec
            with: {{command: sh, args: ["-c", 'echo "$0 $1 $2" >> {out}', "{{{{ .odd }}}}", "{{{{ .c }}}}", "{{{{ .total }}}}"]}}
""")
    run = gxo_run(pb)
    assert run.rc == 0, run.explain()
    assert sorted(out.read_text().splitlines()) == ["0 50 2550", "1 50 2500"]
    assert not run.of("RecordErrorOccurred") and not run.of("InstanceFailed")
