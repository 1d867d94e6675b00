"""Streams through the kernel: E5, E6 (and its failed build), E19, map/filter/format chains,
fan-out, record errors and ignored producer failures, all run by the real `gxo run`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.harness import EXAMPLES, gxo_run, summary_of, write_playbook



def test_e05_records_reach_the_consumer_in_order() -> None:
    run = gxo_run(EXAMPLES / "e05_streaming.yaml")
    assert run.rc == 0, run.stderr
    assert run.statuses == {"data_producer": "Completed", "data_processor": "Completed"}
    assert summary_of(run, "data_processor")["records_processed"] == 3
    end = run.of("PlaybookEnd")[0]
    assert end["streams"] == [{"producer": "data_producer", "consumer": "data_processor",
                               "records_in": 3, "records_out": 3, "records_dropped": 0}]


def test_map_filter_format_chain(work: Path) -> None:
    pb = write_playbook(work, """
  - name: gen
    lifecycle: {policy: run_once}
    process: {module: data:generate_from_list, params: {items: [{n: 1}, {n: 2}, {n: 3}, {n: 4}]}}
  - name: sq
    lifecycle: {policy: run_once}
    stream_inputs: [gen]
    process: {module: data:map, params: {template: '{"n": {{ .n }}, "sq": {{ .n * .n }}}'}}
  - name: big
    lifecycle: {policy: run_once}
    stream_inputs: [sq]
    process: {module: data:filter, params: {condition: "{{ .sq }} > 4"}}
  - name: out
    lifecycle: {policy: run_once}
    stream_inputs: [big]
    process: {module: data:format, params: {format: json}}
    register: formatted
  - name: check
    lifecycle: {policy: run_once}
    process:
      module: control:assert
      params: {condition: '{{ .formatted.formatted_content | fromJson | len }} == 2'}
""")
    run = gxo_run(pb)
    assert run.rc == 0, run.stdout + run.stderr
    assert summary_of(run, "out")["formatted_content"] == '[{"n":3,"sq":9},{"n":4,"sq":16}]'
    assert run.status("check") == "Completed"


def test_fan_out_gives_every_consumer_every_record(work: Path) -> None:
    pb = write_playbook(work, """
  - name: gen
    lifecycle: {policy: run_once}
    process: {module: data:generate_from_list, params: {items: [1, 2, 3]}}
  - name: a
    lifecycle: {policy: run_once}
    stream_inputs: [gen]
    process: {module: passthrough}
  - name: b
    lifecycle: {policy: run_once}
    stream_inputs: [gen]
    process: {module: passthrough}
""")
    run = gxo_run(pb)
    assert run.rc == 0, run.stderr
    assert summary_of(run, "a")["records_processed"] == 3 and summary_of(run, "b")["records_processed"] == 3


def test_record_errors_are_counted_and_do_not_kill_the_stream(work: Path) -> None:
    pb = write_playbook(work, """
  - name: gen
    lifecycle: {policy: run_once}
    process: {module: data:generate_from_list, params: {items: [{v: 1}, {w: 2}, {v: 3}]}}
  - name: keep
    lifecycle: {policy: run_once}
    stream_inputs: [gen]
    process: {module: data:filter, params: {condition: "{{ .v }} > 0"}}
""")
    run = gxo_run(pb, json_events=False)
    assert run.rc == 0, run.stdout + run.stderr
    assert "record errors: keep: 1" in run.stdout
    run = gxo_run(pb)
    errors = run.of("RecordErrorOccurred", "keep")
    assert len(errors) == 1 and errors[0]["item_id"] == 1
    assert summary_of(run, "keep") == {"records_in": 3, "records_out": 2}


def test_e06_barrier_waits_for_both_builds(work: Path) -> None:
    pb = write_playbook(work, """
  - name: build_a
    lifecycle: {policy: run_once}
    process: {module: exec, params: {command: /bin/sh, args: ["-c", "sleep 0.2"]}}
  - name: build_b
    lifecycle: {policy: run_once}
    process: {module: exec, params: {command: /bin/sh, args: ["-c", "sleep 0.2"]}}
  - name: barrier
    lifecycle: {policy: run_once}
    stream_inputs: [build_a, build_b]
    process: {module: control:barrier}
    register: stage
  - name: deploy
    lifecycle: {policy: run_once}
    when: '{{ ._gxo.workloads.barrier.status }} == "Completed"'
    process: {module: control:identity, params: {synced: "{{ .stage.synchronized_streams }}"}}
""")
    run = gxo_run(pb)
    assert run.rc == 0, run.stderr
    assert summary_of(run, "barrier")["synchronized_streams"] == ["build_a", "build_b"]
    assert summary_of(run, "deploy")["synced"] == ["build_a", "build_b"]


def test_e06_failed_build_never_deploys(work: Path) -> None:
    pb = write_playbook(work, """
  - name: build_a
    lifecycle: {policy: run_once}
    process: {module: exec, params: {command: /bin/sh, args: ["-c", "exit 3"]}}
    ignore_errors: true
  - name: build_b
    lifecycle: {policy: run_once}
    process: {module: exec, params: {command: /bin/sh, args: ["-c", "true"]}}
  - name: barrier
    lifecycle: {policy: run_once}
    stream_inputs: [build_a, build_b]
    process: {module: control:barrier}
  - name: deploy
    lifecycle: {policy: run_once}
    when: '{{ ._gxo.workloads.barrier.status }} == "Completed"'
    process: {module: control:identity, params: {ok: true}}
""")
    run = gxo_run(pb)
    assert run.status("build_a") == "Failed"
    assert run.status("barrier") == "Failed"
    barrier_end = run.of("WorkloadEnd", "barrier")[0]
    assert barrier_end["ignored"] is True and "build_a" in barrier_end["error"]
    assert run.status("deploy") != "Completed"
    assert not run.of("ModuleExecutionStart", "deploy")


def test_e19_left_join(work: Path) -> None:
    run = gxo_run(EXAMPLES / "e19_stream_join.yaml")
    assert run.rc == 0, run.stderr
    summary = summary_of(run, "enriched_log_producer")
    assert summary["probe_stream_records"] == 3 and summary["build_stream_records"] == 2


def test_join_limit_fails_and_downstream_gets_nothing(work: Path) -> None:
    pb = write_playbook(work, """
  - name: users
    lifecycle: {policy: run_once}
    process: {module: data:generate_from_list, params: {items: [{id: 1}, {id: 2}, {id: 3}]}}
  - name: events
    lifecycle: {policy: run_once}
    process: {module: data:generate_from_list, params: {items: [{id: 1}]}}
  - name: joined
    lifecycle: {policy: run_once}
    stream_inputs: [users, events]
    ignore_errors: true
    process:
      module: data:join
      params:
        join_type: inner
        "on": [{stream: users, role: build, field: id}, {stream: events, role: probe, field: id}]
        limits: {max_build_records: 2}
  - name: collector
    lifecycle: {policy: run_once}
    stream_inputs: [joined]
    process: {module: passthrough}
""")
    run = gxo_run(pb)
    assert run.status("joined") == "Failed"
    assert "max_build_records" in run.of("WorkloadEnd", "joined")[0]["error"]
    assert run.status("collector") == "Failed"  # its input failed (ignored): it fails, ignored too
    link = [s for s in run.of("PlaybookEnd")[0]["streams"] if s["consumer"] == "collector"][0]
    assert link["records_out"] == 0
    assert run.rc == 0


def test_a_join_table_is_kernel_state_while_it_runs(work: Path) -> None:
    """The build side of a running join shows in StreamProgress (operator state per workload);
    the probe arrives a second later, from a pipeline that sleeps first."""
    pb = write_playbook(work, """
  - name: users
    lifecycle: {policy: run_once}
    process: {module: data:generate_from_list, params: {items: [{id: 1, n: a}, {id: 2, n: b}, {id: 3, n: c}]}}
  - name: events
    lifecycle: {policy: run_once}
    process:
      module: stream:pipeline
      params:
        steps:
          - {id: wait, uses: exec, with: {command: sleep, args: ["1.2"]}}
          - {id: gen, uses: data:generate_from_list, with: {items: [{id: 1, e: "x"}, {id: 3, e: "z"}]}}
  - name: joined
    lifecycle: {policy: run_once}
    stream_inputs: [users, events]
    process:
      module: data:join
      params:
        join_type: inner
        "on": [{stream: users, role: build, field: id}, {stream: events, role: probe, field: id}]
  - name: out
    lifecycle: {policy: run_once}
    stream_inputs: [joined]
    process: {module: passthrough}
""")
    run = gxo_run(pb)
    assert run.rc == 0, run.stderr
    progress = run.of("StreamProgress")
    assert progress, run.stdout
    # three build keys, the matched/pending regions and the positions and counts it keeps
    assert all(set(p["operator_state"]) == {"joined"} for p in progress)
    assert progress[0]["operator_state"]["joined"] >= 3
    assert summary_of(run, "joined")["records_joined"] == 2
    assert summary_of(run, "out") == {"records_processed": 2}


E19_USERS = [{"user_id": 1, "name": "alice", "team": "platform"},
             {"user_id": 2, "name": "bob", "team": "data"},
             {"user_id": 4, "name": "dan", "team": "ops"}]
E19_LOGINS = [{"user_id": 1, "event": "login"}, {"user_id": 3, "event": "login"},
              {"user_id": 2, "event": "login"}]


@pytest.mark.parametrize(("join_type", "expected"), [
    ("inner", [{"user_id": 1, "name": "alice", "team": "platform", "event": "login"},
               {"user_id": 2, "name": "bob", "team": "data", "event": "login"}]),
    ("left", [{"user_id": 1, "name": "alice", "team": "platform", "event": "login"},
              {"user_id": 3, "event": "login"},
              {"user_id": 2, "name": "bob", "team": "data", "event": "login"}]),
    ("right", [{"user_id": 1, "name": "alice", "team": "platform", "event": "login"},
               {"user_id": 2, "name": "bob", "team": "data", "event": "login"},
               {"user_id": 4, "name": "dan", "team": "ops"}]),
    ("outer", [{"user_id": 1, "name": "alice", "team": "platform", "event": "login"},
               {"user_id": 3, "event": "login"},
               {"user_id": 2, "name": "bob", "team": "data", "event": "login"},
               {"user_id": 4, "name": "dan", "team": "ops"}]),
])
def test_e19_every_join_type_through_the_kernel(work: Path, join_type: str,
                                                 expected: list[dict[str, Any]]) -> None:
    """E19's topology under each join type, run by `gxo run`: a build user nobody logged in as
    (dan) and a login of an unknown user (3)."""
    text = (EXAMPLES / "e19_stream_join.yaml").read_text()
    text = text.replace("join_type: left", f"join_type: {join_type}")
    lines = text.splitlines()
    # the two producers' literal items, as flow sequences (the rest of the example as it is)
    starts = [i for i, line in enumerate(lines) if line.strip() == "items:"]
    assert len(starts) == 2, starts
    for start, items in reversed(list(zip(starts, [E19_USERS, E19_LOGINS]))):
        end = start + 1
        while lines[end].strip().startswith("- {"):
            end += 1
        lines[start:end] = [lines[start] + " " + json.dumps(items)]
    pb = work / "e19.yaml"
    pb.write_text("\n".join(lines) + "\n")
    run = gxo_run(pb)
    assert run.rc == 0, run.stdout + run.stderr
    assert json.loads(summary_of(run, "enriched_logs")["formatted_content"]) == expected
    summary = summary_of(run, "enriched_log_producer")
    assert summary["records_joined"] == len(expected)
    assert (summary["probe_stream_records"], summary["build_stream_records"]) == (3, 3)


def test_producer_template_renders_each_record_with_its_index(work: Path) -> None:
    pb = write_playbook(work, """
  - name: gen
    lifecycle: {policy: run_once}
    process:
      module: test:producer
      params:
        count: 4
        template: '{{ if .index == 2 }}oops{{ else }}{"n": {{ .index }}, "env": "{{ .env }}"}{{ end }}'
  - name: sink
    lifecycle: {policy: run_once}
    stream_inputs: [gen]
    process: {module: data:format, params: {format: json}}
""").read_text().replace('schemaVersion: "1.0.0"', 'schemaVersion: "1.0.0"\nvars: {env: prod}')
    path = work / "producer.yaml"
    path.write_text(pb)
    run = gxo_run(path)
    assert run.rc == 0, run.stdout + run.stderr
    assert json.loads(summary_of(run, "sink")["formatted_content"]) == [
        {"n": 0, "env": "prod"}, {"n": 1, "env": "prod"}, {"n": 3, "env": "prod"}]
    assert summary_of(run, "gen") == {"records_sent": 3}
    [err] = run.of("RecordErrorOccurred")
    assert (err["workload"], err["item_id"]) == ("gen", 2)
    assert "JSON object" in err["error_message"]


TRICKLE = """
  - name: trickle
    lifecycle: {policy: run_once}
    process:
      module: test:producer
      params: {count: 24, template: '{"n": {{ .index }}}', interval: 100ms}
  - name: per_second
    lifecycle: {policy: run_once}
    stream_inputs: [trickle]
    process:
      module: data:aggregate
      params: {window: 1s, aggregate_fields: [{name: records, op: count}, {name: first, op: min, source_field: "n"}]}
  - name: whole
    lifecycle: {policy: run_once}
    stream_inputs: [trickle]
    process:
      module: data:aggregate
      params: {aggregate_fields: [{name: records, op: count}, {name: total, op: sum, source_field: "n"}]}
"""


def test_a_slow_producer_reaches_a_time_window_as_it_goes(work: Path) -> None:
    """24 records over 2.4 s into a 1 s window: the partial batches are flushed after 50 ms
    (the default flush_interval), so the windows see the records as they come: 2 or 3 windows,
    not one at the end.  The aggregate without window or count sums the whole stream once."""
    run = gxo_run(write_playbook(work, TRICKLE))
    assert run.rc == 0, run.stdout + run.stderr
    windows = summary_of(run, "per_second")
    assert windows["records_in"] == 24
    assert 2 <= windows["groups_emitted"] <= 3, windows
    assert summary_of(run, "whole") == {"records_in": 24, "groups_emitted": 1}


def test_flush_interval_is_a_channel_policy_key(work: Path) -> None:
    """With `flush_interval: 10s` the trickle's records wait for the end of the producer: the
    1 s window then sees them all at once (one window)."""
    path = write_playbook(work, TRICKLE)
    path.write_text(path.read_text().replace(
        'schemaVersion: "1.0.0"', 'schemaVersion: "1.0.0"\nchannel_policy: {flush_interval: 10s}'))
    run = gxo_run(path)
    assert run.rc == 0, run.stdout + run.stderr
    assert summary_of(run, "per_second") == {"records_in": 24, "groups_emitted": 1}
