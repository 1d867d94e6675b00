"""A data:map template that spells a record of one field (``{"n": {{ int .line }}}``) is compiled
to a function that returns the field's value (``Expression.column``); the records then go on as
that field's values (``StreamOutput.send_field``), so a data:filter and a whole-stream sum of
data:aggregate on the direct hand-over read the values without a map per record, and any other
reader gets the records built.  Nothing observable changes: records, counts, positions of
record errors and results are those of the record path.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

from gxo.compiler.expr.parser import parse_template
from gxo.compiler.records import json_column
from gxo.runtime import _records_cy as R
from kernel_util import build as build_text
from kernel_util import functions
from kernel_util import run as run_kernel


@pytest.mark.parametrize(("text", "column"), [
    ('{"n": {{ int .line }}}', "n"),
    ('{"n": {"m": [{{ .x }}, 2]}}', "n"),  # the one field's value may be any JSON
    ('{"n": "id-{{ .x }}"}', "n"),  # text around an action
    ('{"a": 1, "b": {{ .x }}}', ""),  # two fields: the record is built
    ('{"{{ .k }}": 1}', ""),  # a computed name
    ('{"n": {"{{ .k }}": 1}}', ""),  # a computed name inside: the text round trip builds it
    ('[{{ .x }}]', ""),  # not a map
    ("{{ .x }}", ""),  # one action: its value is the record
])
def test_json_column(text: str, column: str) -> None:
    tree, errors = parse_template(text)
    assert tree is not None and not errors
    assert json_column(tree) == column


HEAD = 'name: col\nschemaVersion: "1.0.0"\nworkloads:\n'
# 2,002 lines: 1 .. 2000 with "x" after 2 and "y" after 1000 (batches enough for the hand-over)
SOURCE = """\
- name: seq
  lifecycle: {policy: run_once}
  process: {module: exec, params: {command: sh, args: ["-c", "seq 1 2; echo x; seq 3 1000; echo y; seq 1001 2000"]}}
  register: seq
- name: src
  lifecycle: {policy: run_once}
  process: {module: data:parse, params: {content: "{{ .seq.stdout }}", format: text_lines}}
"""
VALUES = [*range(1, 2001)]


def build(workloads: str) -> Any:
    return build_text(HEAD + textwrap.indent(textwrap.dedent(workloads), "  "))


def test_the_column_is_in_the_plan_and_its_function_returns_the_value() -> None:
    built = build(SOURCE + """\
- name: nums
  lifecycle: {policy: run_once}
  stream_inputs: [src]
  process: {module: data:map, params: {template: '{"n": {{ int .line }}}'}}
- name: pair
  lifecycle: {policy: run_once}
  stream_inputs: [src]
  process: {module: data:map, params: {template: '{"n": {{ int .line }}, "m": 1}'}}
""")
    by_workload = {e.workload: e for e in built.plan.expressions if e.where == "params.template"}
    assert by_workload["nums"].column == "n" and by_workload["pair"].column == ""
    fns = functions(built)
    assert fns[by_workload["nums"].id]({"line": "7"}, None) == 7
    assert fns[by_workload["pair"].id]({"line": "7"}, None) == {"n": 7, "m": 1}


def run(workloads: str) -> tuple[Any, Any, list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []
    kernel, report = run_kernel(build(workloads), seen.append)
    return kernel, report, seen


MAP = """\
- name: nums
  lifecycle: {policy: run_once}
  stream_inputs: [src]
  process: {module: data:map, params: {template: '{"n": {{ int .line }}}'}}
"""


def test_filter_and_sum_read_the_values_and_change_nothing() -> None:
    kernel, report, seen = run(SOURCE + MAP + """\
- name: odd
  lifecycle: {policy: run_once}
  stream_inputs: [nums]
  process: {module: data:filter, params: {condition: "{{ 10 / (.n - 4) }} > 1"}}
- name: counted
  lifecycle: {policy: run_once}
  stream_inputs: [odd]
  process:
    module: data:aggregate
    params: {aggregate_fields: [{name: records, op: count}, {name: total, op: sum, source_field: n}]}
- name: report
  lifecycle: {policy: run_once}
  stream_inputs: [counted]
  process: {module: data:format, params: {format: json}}
""")
    assert not report.failed, {n: r.reason for n, r in report.results.items()}
    assert kernel.wiring.handoff_in["odd"].delivered > 0 and kernel.wiring.handoff_in["counted"].delivered > 0
    summaries = {e["workload"]: e["summary"] for e in seen if e["type"] == "ModuleExecutionEnd"}
    assert summaries["nums"] == {"records_in": 2002, "records_out": 2000}
    # 10 / (n - 4) > 1: n = 1, 2, 3 give negatives, 4 divides by zero, 5 .. 13 give more than 1
    kept = [n for n in VALUES if n != 4 and 10 / (n - 4) > 1]
    assert kept == [*range(5, 14)]
    assert summaries["odd"] == {"records_in": 2000, "records_out": len(kept)}
    assert json.loads(summaries["report"]["formatted_content"]) == [{"records": len(kept), "total": sum(kept)}]
    errors = sorted((e["workload"], e["producer"], e["item_id"]) for e in seen if e["type"] == "RecordErrorOccurred")
    # "x" and "y" at the map's input positions 2 and 1001; n = 4 at the filter's input position 3
    assert errors == [("nums", "src", 2), ("nums", "src", 1001), ("odd", "nums", 3)]


def test_a_reader_that_takes_records_gets_them_built() -> None:
    """data:format reads its channel itself, and two readers of one map share no hand-over:
    each gets the records ``{"n": value}``."""
    _, report, seen = run(SOURCE + MAP + """\
- name: shown
  lifecycle: {policy: run_once}
  stream_inputs: [nums]
  process: {module: data:format, params: {format: json}}
- name: again
  lifecycle: {policy: run_once}
  stream_inputs: [nums]
  process: {module: data:aggregate, params: {aggregate_fields: [{name: total, op: sum, source_field: n}]}}
""")
    assert not report.failed, {n: r.reason for n, r in report.results.items()}
    summaries = {e["workload"]: e["summary"] for e in seen if e["type"] == "ModuleExecutionEnd"}
    assert json.loads(summaries["shown"]["formatted_content"]) == [{"n": n} for n in VALUES]
    assert summaries["again"]["records_in"] == 2000 and summaries["again"]["groups_emitted"] == 1


def test_a_sum_of_another_field_reads_the_records() -> None:
    _, report, seen = run(SOURCE + MAP + """\
- name: counted
  lifecycle: {policy: run_once}
  stream_inputs: [nums]
  process: {module: data:aggregate, params: {aggregate_fields: [{name: total, op: sum, source_field: m}]}}
""")
    errors = [(e["item_id"], e["error_message"]) for e in seen if e["type"] == "RecordErrorOccurred"
              and e["workload"] == "counted"]
    assert errors == [(i, "source_field 'm' is missing") for i in range(2000)]
    assert report.results["counted"].status == "Completed"


def test_record_fn_with_a_column_called_as_a_function_gives_the_record() -> None:
    f = R.RecordFn(lambda scope, _ctx: scope["x"] * 2, None, None, "n")
    assert f.column == "n" and f({"x": 4}) == {"n": 8}
    assert R.map_batch(f, [{"x": 1}, {"x": 2}], 0, "p", None, None) == [2, 4]
    assert R.RecordFn(lambda scope, _ctx: scope, None).column == ""


class _Errors:
    def __init__(self) -> None:
        self.seen: list[tuple[int, str, str]] = []

    def report(self, pos: int, producer: str, text: str) -> None:
        self.seen.append((pos, producer, text))


def test_filter_values_keeps_values_and_reports_errors_at_their_place() -> None:
    kept_scopes: list[dict] = []

    def cond(scope: dict, _ctx: Any) -> Any:
        if scope["n"] == 3:
            raise ValueError("three")
        if scope["n"] == 5:
            kept_scopes.append(scope)  # a call that keeps its scope: the next value gets a new one
        return scope["n"] % 2

    errors = _Errors()
    assert R.filter_values(R.RecordFn(cond, None), "n", [1, 2, 3, 4, 5, 6, 7], 10, "p", errors) == [1, 5, 7]
    assert errors.seen == [(12, "p", "three")]
    assert kept_scopes == [{"n": 5}]  # not overwritten by 6 and 7


def test_sum_values_words_a_bad_value_as_the_record_path_does() -> None:
    errors = _Errors()
    groups: dict = {}

    def bad_number(record: dict, src: str) -> str:
        return f"{src} of {record!r}"

    R.sum_values([1, "x", 2.5], 0, "p", errors, "n", groups, bad_number)
    assert groups[()][1] == 2 and groups[()][2][0] == 3.5
    assert errors.seen == [(1, "p", "n of {'n': 'x'}")]


def test_the_realistic_pipeline_uses_the_column(tmp_path: Path) -> None:
    """The bench's pipeline (bench/realistic_pipeline.yaml) compiles its map to a column."""
    from gxo.compiler.inmemory import compile_in_memory

    with open(os.devnull, "w") as devnull:
        loaded = compile_in_memory(str(Path(__file__).parent.parent / "bench" / "realistic_pipeline.yaml"), devnull)
    assert [e.column for e in loaded.plan.expressions if e.workload == "nums"] == ["n"]
