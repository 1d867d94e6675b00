"""``stream:pipeline`` under run_once (design.md §3): steps as a sub-DAG, per-record steps with
the record's fields at the top of their scope, data-plane steps over the stream, ``when`` per
step and per-record errors, all run by the real `gxo run`."""

from __future__ import annotations

import json
from pathlib import Path

from tests.acceptance.harness import gxo_run, summary_of, write_playbook


def test_without_inputs_the_steps_run_once_and_read_each_other(work: Path) -> None:
    pb = work / "pb.yaml"
    pb.write_text('name: s\nschemaVersion: "1.0.0"\nvars: {who: world}\nworkloads:\n' + """
  - name: pipe
    lifecycle: {policy: run_once}
    process:
      module: stream:pipeline
      params:
        steps:
          - id: first
            uses: control:identity
            with: {greeting: "hello {{ .who }}", n: 2}
          - id: second
            uses: control:identity
            with: {echo: "{{ .first.greeting }}!", twice: "{{ .first.n * 2 }}"}
            register: sec
          - id: third
            uses: control:identity
            needs: [first]
            with: {via_register: "{{ .sec.echo }}"}
    register: piped
  - name: check
    lifecycle: {policy: run_once}
    process:
      module: control:assert
      params: {condition: '{{ .piped.steps.second.echo }} == "hello world!"'}
""")
    run = gxo_run(pb)
    assert run.rc == 0, run.stdout + run.stderr
    assert summary_of(run, "pipe") == {
        "records_processed": 1,
        "steps": {
            "first": {"greeting": "hello world", "n": 2},
            "second": {"echo": "hello world!", "twice": 4},
            "third": {"via_register": "hello world!"},
        },
    }
    assert run.status("check") == "Completed"


def test_records_flow_through_data_and_per_record_steps(work: Path) -> None:
    pb = write_playbook(work, """
  - name: gen
    lifecycle: {policy: run_once}
    process: {module: data:generate_from_list, params: {items: [1, 2, 3]}}
  - name: pipe
    lifecycle: {policy: run_once}
    stream_inputs: [gen]
    process:
      module: stream:pipeline
      params:
        concurrency: 2
        steps:
          - id: square
            uses: data:map
            with:
              template: '{"n": {{ .item }}, "sq": {{ .item * .item }}}'
          - id: label
            uses: control:identity
            with: {label: "{{ .n }} squared is {{ .sq }}"}
  - name: sink
    lifecycle: {policy: run_once}
    stream_inputs: [pipe]
    process: {module: data:format, params: {format: json}}
""")
    run = gxo_run(pb)
    assert run.rc == 0, run.stdout + run.stderr
    summary = summary_of(run, "pipe")
    assert summary["records_processed"] == 3
    assert summary["steps"]["square"] == {"records_in": 3, "records_out": 3}
    assert summary["steps"]["label"] == {"label": "3 squared is 9"}
    records = json.loads(summary_of(run, "sink")["formatted_content"])
    assert records == [
        {"n": 1, "sq": 1, "label": "1 squared is 1"},
        {"n": 2, "sq": 4, "label": "2 squared is 4"},
        {"n": 3, "sq": 9, "label": "3 squared is 9"},
    ]


def test_pipeline_output_consumed_by_passthrough(work: Path) -> None:
    pb = write_playbook(work, """
  - name: gen
    lifecycle: {policy: run_once}
    process: {module: data:generate_from_list, params: {items: [{name: a}, {name: b}, {name: c}]}}
  - name: pipe
    lifecycle: {policy: run_once}
    stream_inputs: [gen]
    process:
      module: stream:pipeline
      params:
        steps:
          - id: upper
            uses: data:map
            with: {template: '{"name": {{ .name | upper | toJson }}}'}
          - id: seen
            uses: control:identity
            with: {saw: "{{ .name }}"}
  - name: after
    lifecycle: {policy: run_once}
    stream_inputs: [pipe]
    process: {module: passthrough}
""")
    run = gxo_run(pb)
    assert run.rc == 0, run.stdout + run.stderr
    assert summary_of(run, "pipe")["records_processed"] == 3
    assert summary_of(run, "pipe")["steps"]["seen"] == {"saw": "C"}
    assert summary_of(run, "after") == {"records_processed": 3}


def test_when_skips_a_step_for_some_records(work: Path) -> None:
    pb = write_playbook(work, """
  - name: gen
    lifecycle: {policy: run_once}
    process: {module: data:generate_from_list, params: {items: [{n: 1}, {n: 5}, {n: 2}, {n: 7}]}}
  - name: pipe
    lifecycle: {policy: run_once}
    stream_inputs: [gen]
    process:
      module: stream:pipeline
      params:
        steps:
          - id: big
            uses: control:identity
            when: "{{ .n }} > 3"
            with: {big: true}
          - id: tag
            uses: data:map
            with:
              template: '{"n": {{ .n }}, "big": {{ if .big }}true{{ else }}false{{ end }}}'
  - name: sink
    lifecycle: {policy: run_once}
    stream_inputs: [pipe]
    process: {module: data:format, params: {format: json}}
""")
    run = gxo_run(pb)
    assert run.rc == 0, run.stdout + run.stderr
    summary = summary_of(run, "pipe")
    assert summary["records_processed"] == 4
    assert summary["steps"]["big"] == {"big": True}
    assert json.loads(summary_of(run, "sink")["formatted_content"]) == [
        {"n": 1, "big": False}, {"n": 5, "big": True}, {"n": 2, "big": False}, {"n": 7, "big": True},
    ]


def test_a_failing_step_is_a_record_error(work: Path) -> None:
    pb = write_playbook(work, """
  - name: gen
    lifecycle: {policy: run_once}
    process: {module: data:generate_from_list, params: {items: [{n: 1}, {n: 0}, {n: 3}]}}
  - name: pipe
    lifecycle: {policy: run_once}
    stream_inputs: [gen]
    process:
      module: stream:pipeline
      params:
        steps:
          - id: check
            uses: control:assert
            with: {condition: "{{ .n }} > 0", fail_message: "n must be positive"}
          - id: keep
            uses: control:identity
            with: {n: "{{ .n }}"}
  - name: after
    lifecycle: {policy: run_once}
    stream_inputs: [pipe]
    process: {module: passthrough}
""")
    run = gxo_run(pb)
    assert run.rc == 0, run.stdout + run.stderr
    errors = run.of("RecordErrorOccurred", "pipe")
    assert len(errors) == 1, run.stdout
    assert errors[0]["item_id"] == 1
    assert "n must be positive" in json.dumps(errors[0])
    summary = summary_of(run, "pipe")
    assert summary["records_processed"] == 3
    assert summary["steps"]["keep"] == {"n": 3}
    assert summary_of(run, "after") == {"records_processed": 2}


def test_a_failing_step_without_inputs_fails_the_workload(work: Path) -> None:
    pb = write_playbook(work, """
  - name: pipe
    lifecycle: {policy: run_once}
    process:
      module: stream:pipeline
      params:
        steps:
          - id: guard
            uses: control:assert
            with: {condition: "{{ 1 }} > 2", fail_message: "too small"}
          - id: never
            uses: control:identity
            with: {x: 1}
""")
    run = gxo_run(pb)
    assert run.rc != 0
    assert run.status("pipe") == "Failed"
    reason = json.dumps(run.end("pipe"))
    assert "guard" in reason and "too small" in reason


def test_a_long_stream_goes_through_batch_by_batch_with_whole_stream_counts(work: Path) -> None:
    """2,500 records in batches of 100: each batch runs through the steps as it arrives; the
    step summaries count the whole stream; a step no batch reached reports an empty stream."""
    pb = write_playbook(work, """
  - name: gen
    lifecycle: {policy: run_once}
    process: {module: data:generate_from_list, params: {items: ITEMS}}
  - name: pipe
    lifecycle: {policy: run_once}
    stream_inputs: [gen]
    process:
      module: stream:pipeline
      params:
        steps:
          - {id: double, uses: data:map, with: {template: '{"n": {{ .item }}, "d": {{ .item * 2 }}}'}}
          - {id: odd_tens, uses: data:filter, with: {condition: "{{ .n % 20 }} == 10"}}
          - {id: tag, uses: control:identity, with: {tag: "t{{ .n }}"}}
          - {id: none, uses: data:filter, with: {condition: "{{ .n }} < 0"}, needs: [tag]}
          - {id: after_none, uses: passthrough}
  - name: sink
    lifecycle: {policy: run_once}
    stream_inputs: [pipe]
    process: {module: passthrough}
""".replace("ITEMS", json.dumps(list(range(2500)))))
    run = gxo_run(pb)
    assert run.rc == 0, run.stdout + run.stderr
    steps = summary_of(run, "pipe")["steps"]
    assert summary_of(run, "pipe")["records_processed"] == 2500
    assert steps["double"] == {"records_in": 2500, "records_out": 2500}
    assert steps["odd_tens"] == {"records_in": 2500, "records_out": 125}
    assert steps["tag"] == {"tag": "t2490"}
    assert steps["none"] == {"records_in": 125, "records_out": 0}
    assert steps["after_none"]["records_processed"] == 0
    assert summary_of(run, "sink")["records_processed"] == 0


def test_a_whole_stream_step_in_a_chain_is_fed_batch_by_batch(work: Path) -> None:
    pb = write_playbook(work, """
  - name: gen
    lifecycle: {policy: run_once}
    process: {module: data:generate_from_list, params: {items: ITEMS}}
  - name: pipe
    lifecycle: {policy: run_once}
    stream_inputs: [gen]
    process:
      module: stream:pipeline
      params:
        steps:
          - {id: big, uses: data:filter, with: {condition: "{{ .n }} >= 10"}}
          - id: per_group
            uses: data:aggregate
            with:
              group_by_fields: [g]
              count: 1000
              aggregate_fields: [{name: total, op: count}]
  - name: sink
    lifecycle: {policy: run_once}
    stream_inputs: [pipe]
    process: {module: data:format, params: {format: json}}
""".replace("ITEMS", json.dumps([{"n": i, "g": i % 3} for i in range(250)])))
    run = gxo_run(pb)
    assert run.rc == 0, run.stdout + run.stderr
    steps = summary_of(run, "pipe")["steps"]
    assert steps["big"] == {"records_in": 250, "records_out": 240}
    rows = json.loads(summary_of(run, "sink")["formatted_content"])
    assert sorted((r["g"], r["total"]) for r in rows) == [(0, 80), (1, 80), (2, 80)]


def test_steps_after_a_whole_stream_step_and_a_per_record_template_that_reads_lineage(work: Path) -> None:
    """A chain: per-record tag -> aggregate in windows of 100 -> filter on the window totals
    (run on the aggregates as they come) -> text format whose per-record template reads the
    tag step's output of each record (its lineage) and the filter's whole-stream counts."""
    pb = write_playbook(work, """
  - name: gen
    lifecycle: {policy: run_once}
    process: {module: data:generate_from_list, params: {items: ITEMS}}
  - name: windows
    lifecycle: {policy: run_once}
    stream_inputs: [gen]
    process:
      module: stream:pipeline
      params:
        steps:
          - {id: tag, uses: control:identity, with: {even: "{{ .item % 2 == 0 }}"}}
          - id: per_window
            uses: data:aggregate
            with: {count: 100, group_by_fields: [even], aggregate_fields: [{name: total, op: sum, source_field: item}]}
          - {id: big, uses: data:filter, with: {condition: "{{ .total }} > 20000"}}
  - name: labels
    lifecycle: {policy: run_once}
    stream_inputs: [gen]
    process:
      module: stream:pipeline
      params:
        steps:
          - {id: tag, uses: control:identity, with: {half: "{{ .item / 2 }}"}}
          - id: text
            uses: data:format
            with: {format: text, format_options: {template: "{{ .item }}:{{ .tag.half }}"}}
          - {id: done, uses: control:identity, with: {n: "{{ .text.formatted_content }}"}}
""".replace("ITEMS", json.dumps(list(range(1000)))))
    run = gxo_run(pb)
    assert run.rc == 0, run.stdout + run.stderr
    steps = summary_of(run, "windows")["steps"]
    # 500 even and 500 odd items: 5 windows of 100 each (sums 9,900 and 10,000, then 29,900...)
    assert steps["per_window"] == {"records_in": 1000, "groups_emitted": 10}
    assert steps["big"] == {"records_in": 10, "records_out": 8}  # all but the first windows
    labels = summary_of(run, "labels")["steps"]
    lines = labels["text"]["formatted_content"].splitlines()
    assert len(lines) == 1000 and lines[0] == "0:0.0" and lines[7] == "7:3.5"
    assert labels["done"]["n"].startswith("0:0.0\n1:0.5")


def test_a_chain_ending_in_a_format_step_and_record_errors_after_an_aggregate(work: Path) -> None:
    pb = write_playbook(work, """
  - name: gen
    lifecycle: {policy: run_once}
    process: {module: data:generate_from_list, params: {items: ITEMS}}
  - name: csv
    lifecycle: {policy: run_once}
    stream_inputs: [gen]
    process:
      module: stream:pipeline
      params:
        steps:
          - {id: sq, uses: data:map, with: {template: '{"n": {{ .item }}, "sq": {{ .item * .item }}}'}}
          - {id: table, uses: data:format, with: {format: csv}}
  - name: checked
    lifecycle: {policy: run_once}
    stream_inputs: [gen]
    process:
      module: stream:pipeline
      params:
        steps:
          - id: pairs
            uses: data:aggregate
            with: {count: 2, aggregate_fields: [{name: total, op: sum, source_field: item}]}
          - {id: odd, uses: data:filter, with: {condition: "{{ .total % 4 }} == 1"}}
          - {id: div, uses: data:map, with: {template: '{"q": {{ 100 / (.total - 5) }}}'}}
""".replace("ITEMS", json.dumps(list(range(250)))))
    run = gxo_run(pb)
    assert run.rc == 0, run.stdout + run.stderr
    table = summary_of(run, "csv")["steps"]["table"]["formatted_content"].splitlines()
    assert table[0] == "n,sq" and table[1] == "0,0" and table[-1] == "249,62001" and len(table) == 251
    steps = summary_of(run, "checked")["steps"]
    # pairs (0,1) (2,3) ... sum to 1, 5, 9, ...: all are 1 mod 4; the pair summing to 5 divides by 0
    assert steps["pairs"] == {"records_in": 250, "groups_emitted": 125}
    assert steps["odd"] == {"records_in": 125, "records_out": 125}
    assert steps["div"] == {"records_in": 125, "records_out": 124}
    [err] = run.of("RecordErrorOccurred", "checked")
    assert err["item_id"] == 1  # the second window on the aggregate's output


def test_when_on_data_steps_lets_the_other_records_go_on_unchanged(work: Path) -> None:
    pb = write_playbook(work, """
  - name: gen
    lifecycle: {policy: run_once}
    process: {module: data:generate_from_list, params: {items: [{n: 1}, {n: 2}, {n: 3}, {n: 4}]}}
  - name: pipe
    lifecycle: {policy: run_once}
    stream_inputs: [gen]
    process:
      module: stream:pipeline
      params:
        steps:
          - id: sq
            uses: data:map
            when: "{{ .n }} > 2"
            with: {template: '{"n": {{ .n }}, "sq": {{ .n * .n }}}'}
          - id: total
            uses: data:aggregate
            when: "{{ .n }} != 1"
            with: {count: 100, aggregate_fields: [{name: count, op: count}, {name: s, op: sum, source_field: "n"}]}
  - name: out
    lifecycle: {policy: run_once}
    stream_inputs: [pipe]
    process: {module: data:format, params: {format: json}}
""")
    run = gxo_run(pb)
    assert run.rc == 0, run.stdout + run.stderr
    records = json.loads(summary_of(run, "out")["formatted_content"])
    # sq maps 3 and 4 only; the aggregate counts 2, 3 and 4; record 1 skips both steps
    assert sorted(records, key=lambda r: len(r)) == [{"n": 1}, {"count": 3, "s": 9}]
    steps = summary_of(run, "pipe")["steps"]
    assert steps["sq"] == {"records_in": 2, "records_out": 2}
    assert steps["total"] == {"records_in": 3, "groups_emitted": 1}


def test_record_errors_of_data_steps_name_the_record_on_the_pipeline_input(work: Path) -> None:
    """Positions count across batches and past records a `when` skipped; a producer step run
    once per record counts all its runs; a pipeline ending in data:format emits no records."""
    pb = write_playbook(work, """
  - name: gen
    lifecycle: {policy: run_once}
    process: {module: test:producer, params: {count: 250, template: '{"n": {{ .index }}, "line": "k={{ .index }}"}'}}
  - name: piped
    lifecycle: {policy: run_once}
    stream_inputs: [gen]
    process:
      module: stream:pipeline
      params:
        steps:
          - {id: f, uses: data:filter, when: "{{ .n }} >= 100", with: {condition: "{{ 10 / (.n - 150) }} > -1000"}}
          - {id: p, uses: data:parse, with: {format: logfmt, content: "{{ .line }}"}}
          - {id: doc, uses: data:format, with: {format: json}}
  - name: after
    lifecycle: {policy: run_once}
    stream_inputs: [piped]
    process: {module: passthrough}
""")
    run = gxo_run(pb)
    assert run.rc == 0, run.stdout + run.stderr
    [err] = run.of("RecordErrorOccurred", "piped")
    assert (err["producer"], err["item_id"]) == ("gen", 150)
    assert err["error_message"] == "step f: division by zero"
    steps = summary_of(run, "piped")["steps"]
    assert steps["f"] == {"records_in": 150, "records_out": 149}  # 100..249, but 150
    assert steps["p"] == {"records_parsed": 249}
    assert len(json.loads(steps["doc"]["formatted_content"])) == 249
    assert summary_of(run, "after")["records_processed"] == 0


def test_a_data_step_reads_the_branches_in_its_needs_as_one_stream(work: Path) -> None:
    """E2's switch: per-record handlers guarded by `when`, then one data:map that needs all of
    them reads each record once, with the output of whichever handler ran."""
    pb = write_playbook(work, """
  - name: lines
    lifecycle: {policy: run_once}
    process: {module: data:generate_from_list, params: {items: [{cmd: GET}, {cmd: PING}, {cmd: NOPE}]}}
  - name: server
    lifecycle: {policy: run_once}
    stream_inputs: [lines]
    process:
      module: stream:pipeline
      params:
        steps:
          - {id: get, uses: control:identity, needs: [], when: '{{ .cmd == "GET" }}', with: {response: "OK 1"}}
          - {id: ping, uses: control:identity, needs: [], when: '{{ .cmd == "PING" }}', with: {response: "PONG"}}
          - id: answer
            uses: data:map
            needs: [get, ping]
            with:
              template: '{"cmd": "{{ .cmd }}", "response": "{{ if .get }}{{ .get.response }}{{ else if .ping }}{{ .ping.response }}{{ else }}ERR{{ end }}"}'
  - name: out
    lifecycle: {policy: run_once}
    stream_inputs: [server]
    process: {module: data:format, params: {format: json}}
""")
    run = gxo_run(pb)
    assert run.rc == 0, run.stdout + run.stderr
    records = json.loads(summary_of(run, "out")["formatted_content"])
    assert sorted(records, key=lambda r: r["cmd"]) == [
        {"cmd": "GET", "response": "OK 1"}, {"cmd": "NOPE", "response": "ERR"},
        {"cmd": "PING", "response": "PONG"}]
    assert summary_of(run, "server")["steps"]["answer"] == {"records_in": 3, "records_out": 3}
