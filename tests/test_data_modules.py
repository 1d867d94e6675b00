"""Stream modules (issue 5) run for real over channels: passthrough, data:*, control:barrier,
test:producer and filesystem:list.  Each test plays the kernel's part: it feeds the inputs,
runs ``perform``, flushes and closes the output, and collects what a consumer reads."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
from typing import Any

import pytest
from gxo.runtime.exprlib import EvalError
from gxo.runtime.module import (
    Context,
    ModuleError,
    SecurityError,
    ValidationError,
    load_module_class,
)
from gxo.runtime.streams import (
    Channel,
    FanOut,
    RecordErrorSink,
    StreamInputs,
    StreamOutput,
    UpstreamFailed,
)
from gxo.runtime.workspace import Workspace
from gxo.stdlib import registry

STREAM_MODULES = ("passthrough", "data:generate_from_list", "data:parse", "data:map",
                  "data:filter", "data:join", "data:aggregate", "data:format", "control:barrier",
                  "test:producer", "filesystem:list")


class Log:
    def debug(self, msg: str, **a: Any) -> None: ...
    def info(self, msg: str, **a: Any) -> None: ...
    def warning(self, msg: str, **a: Any) -> None: ...
    def error(self, msg: str, **a: Any) -> None: ...


class Result:
    def __init__(self, summary: Any, records: list, errors: RecordErrorSink) -> None:
        self.summary, self.records, self.errors = summary, records, errors

    @property
    def error_messages(self) -> list[str]:
        return [e.message for e in self.errors.errors]


@pytest.fixture
def ws(tmp_path: Any) -> Any:
    w = Workspace.create(str(tmp_path / "wsroot"))
    yield w
    w.remove()


def drive(name: str, params: dict, inputs: dict[str, list] | None = None, *,
          capacity: int = 3, batch: int = 2, workspace: Any = None, fail_input: str | None = None,
          input_delay: dict[str, float] | None = None) -> Result:
    """Run module ``name`` with ``inputs`` (producer -> records) the way the kernel does."""
    cls = load_module_class(name)
    assert cls is not None, name
    errors = RecordErrorSink()

    async def main() -> Result:
        extras: dict[str, Any] = {"record_errors": errors}
        chans = {p: Channel(capacity) for p in (inputs or {})}
        if inputs is not None:
            extras["inputs"] = StreamInputs(list(chans.items()))
        out_ch = Channel(capacity)
        extras["output"] = StreamOutput(out_ch, batch_size=batch)
        ctx = Context(workload="w", run_id="r", logger=Log(), workspace=workspace,
                      state=dict, extras=extras)

        async def feed(p: str, records: list) -> None:
            for i in range(0, len(records), 2):
                await chans[p].send(records[i:i + 2])
                if input_delay and p in input_delay:
                    await asyncio.sleep(input_delay[p])
            if p == fail_input:
                chans[p].close_error("exited with code 1")
            else:
                chans[p].close()

        async def run_module() -> Any:
            try:
                summary = await cls().perform(ctx, params)
                await extras["output"].flush()
                out_ch.close()
                return summary
            except BaseException as exc:
                out_ch.close_error(str(exc))
                extras["inputs"].discard() if "inputs" in extras else None
                raise

        async def collect() -> list:
            got: list = []
            try:
                async for b in out_ch:
                    got.extend(b)
            except UpstreamFailed:
                pass
            return got

        feeders = [asyncio.ensure_future(feed(p, r)) for p, r in (inputs or {}).items()]
        collector = asyncio.ensure_future(collect())
        try:
            summary = await run_module()
        finally:
            await asyncio.gather(*feeders, return_exceptions=True)
            records = await collector
        return Result(summary, records, errors)

    return asyncio.run(asyncio.wait_for(main(), 10))


def test_code_registered_and_marked_implemented() -> None:
    specs = registry()
    for name in STREAM_MODULES:
        assert load_module_class(name).name == name
        assert specs[name].implemented


# --------------------------------------------------------------------------- producers


def test_passthrough_forwards_every_input_unchanged_in_order() -> None:
    res = drive("passthrough", {}, {"p": [{"item": 1}, {"item": 2}, {"item": 3}]})
    assert res.records == [{"item": 1}, {"item": 2}, {"item": 3}]
    assert res.summary == {"records_processed": 3}
    a = [{"a": i} for i in range(7)]
    b = [{"b": i} for i in range(5)]
    res = drive("passthrough", {}, {"a": a, "b": b})
    assert [r for r in res.records if "a" in r] == a and [r for r in res.records if "b" in r] == b
    assert drive("passthrough", {}, {"a": []}).summary == {
        "records_processed": 0, "message": "no records received from the stream inputs"}


def test_generate_from_list_wraps_scalars_and_reports_bad_maps() -> None:
    res = drive("data:generate_from_list", {"items": [1, {"a": 2}, "x", None, {3: "bad"}]})
    assert res.records == [{"item": 1}, {"a": 2}, {"item": "x"}, {"item": None}]
    assert res.summary == {"records_generated": 4}
    assert res.errors.count == 1 and res.errors.errors[0].position == 4
    with pytest.raises(ValidationError, match="must be a list"):
        drive("data:generate_from_list", {"items": "nope"})


def test_test_producer_records_and_lazy_count() -> None:
    res = drive("test:producer", {"records": [{"a": 1}, 5, {"b": 2}]})
    assert res.records == [{"a": 1}, {"b": 2}] and res.summary == {"records_sent": 2}
    assert res.errors.count == 1
    res = drive("test:producer", {"count": 5, "template": '{"v": 1}'})
    assert res.records == [{"v": 1}] * 5 and res.records[0] is not res.records[1]
    res = drive("test:producer", {"count": 4, "template": lambda r: {"n": r["index"] * 2}})
    assert res.records == [{"n": 0}, {"n": 2}, {"n": 4}, {"n": 6}]
    with pytest.raises(ValidationError, match="JSON object"):
        drive("test:producer", {"count": 1, "template": "[1]"})


def test_test_producer_never_holds_count_records() -> None:
    made = []

    def template(r: dict) -> dict:
        made.append(r["index"])
        return {"i": r["index"]}

    async def main() -> None:
        ch = Channel(4)
        ctx = Context(workload="w", run_id="r", logger=Log(), workspace=None, state=dict,
                      extras={"output": StreamOutput(ch, batch_size=4)})
        task = asyncio.ensure_future(load_module_class("test:producer")().perform(
            ctx, {"count": 1_000_000, "template": template}))
        await asyncio.sleep(0.05)
        assert len(made) <= 12  # blocked by the full channel: generated lazily
        ch.discard()
        assert await task == {"records_sent": 1_000_000}

    asyncio.run(main())


# --------------------------------------------------------------------------- data:parse


@pytest.mark.parametrize("fmt,content,options,expected", [
    ("json", '[{"a": 1}, {"a": 2}]', {}, [{"a": 1}, {"a": 2}]),
    ("json", '{"a": 1}', {}, [{"a": 1}]),
    ("json", '{"data": {"items": [{"x": 1}]}}', {"json_path": "data.items"}, [{"x": 1}]),
    ("yaml", "- a: 1\n- a: two\n", {}, [{"a": 1}, {"a": "two"}]),
    ("csv", 'name,note\nann,"a, b"\nbob,"say ""hi"""\n', {},
     [{"name": "ann", "note": "a, b"}, {"name": "bob", "note": 'say "hi"'}]),
    ("csv", "1;2\n3;4\n", {"delimiter": ";", "headers": ["x", "y"]},
     [{"x": "1", "y": "2"}, {"x": "3", "y": "4"}]),
    ("text_lines", "one\n\ntwo\r\n", {}, [{"line": "one"}, {"line": ""}, {"line": "two"}]),
    ("text_lines", "one\n\ntwo\n", {"skip_empty": True}, [{"line": "one"}, {"line": "two"}]),
    ("regex", "id=1 id=22", {"pattern": r"id=(?P<id>\d+)"}, [{"id": "1"}, {"id": "22"}]),
    ("regex", "a:1 b:2", {"pattern": r"(\w):(\d)", "capture_groups": ["k", "v"]},
     [{"k": "a", "v": "1"}, {"k": "b", "v": "2"}]),
    ("logfmt", 'level=info msg="hello \\"you\\"" ok\n\nlevel=warn\n', {},
     [{"level": "info", "msg": 'hello "you"', "ok": True}, {"level": "warn"}]),
])
def test_parse_formats(fmt: str, content: str, options: dict, expected: list) -> None:
    res = drive("data:parse", {"content": content, "format": fmt, "format_options": options})
    assert res.records == expected
    assert res.summary == {"records_parsed": len(expected)}
    assert res.errors.count == 0


def test_parse_line_formats_stream_in_pieces_with_the_same_lines() -> None:
    """text_lines and logfmt parse a piece of the text at a time (the records are sent as they
    are made): the pieces are cut after a "\n", so every line, "\r\n" ends and record error
    positions are those of the whole text."""
    from gxo.stdlib import data

    lines = [("x" * (i % 7)) + str(i) + ("\r\n" if i % 3 else "\n") for i in range(60_000)]
    content = "".join(lines) + "tail\rlast"
    assert len(content) > 4 * data._LINE_CHUNK
    assert "".join(data._line_chunks(content)) == content
    res = drive("data:parse", {"content": content, "format": "text_lines"}, capacity=256,
                batch=100)
    assert res.records == [{"line": line} for line in content.splitlines()]
    logfmt = "".join(f"k={i}\n" if i != 40_000 else 'k="open\n' for i in range(50_000))
    res = drive("data:parse", {"content": logfmt, "format": "logfmt"}, capacity=256, batch=100)
    assert len(res.records) == 49_999 and res.records[-1] == {"k": "49999"}
    assert [e.position for e in res.errors.errors] == [40_000]


def test_parse_record_errors_and_failures() -> None:
    res = drive("data:parse", {"content": '[{"a": 1}, 2, {"b": 3}]', "format": "json"})
    assert res.records == [{"a": 1}, {"b": 3}] and res.errors.errors[0].position == 1
    res = drive("data:parse", {"content": "a,b\n1,2\n3\n", "format": "csv"})
    assert res.records == [{"a": "1", "b": "2"}] and res.errors.count == 1
    res = drive("data:parse", {"content": 'a="open\nb=2\n', "format": "logfmt"})
    assert res.records == [{"b": "2"}] and "unterminated" in res.error_messages[0]
    with pytest.raises(ModuleError, match="invalid json"):
        drive("data:parse", {"content": "{", "format": "json"})
    with pytest.raises(ModuleError, match="no element 'nope'"):
        drive("data:parse", {"content": "{}", "format": "json",
                             "format_options": {"json_path": "nope"}})
    with pytest.raises(ValidationError, match="not a valid regular expression"):
        drive("data:parse", {"content": "", "format": "regex", "format_options": {"pattern": "("}})


# --------------------------------------------------------------------------- map / filter


def test_map_callable_results_and_record_errors() -> None:
    def template(r: dict) -> Any:
        if r["n"] == 2:
            raise EvalError("no field 'x'")
        if r["n"] == 3:
            return "not json"
        if r["n"] == 4:
            return '{"n": 40}'
        return {"n": r["n"] * 10}

    res = drive("data:map", {"template": template}, {"p": [{"n": i} for i in range(6)]})
    assert res.records == [{"n": 0}, {"n": 10}, {"n": 40}, {"n": 50}]
    assert res.summary == {"records_in": 6, "records_out": 4}
    assert [(e.position, e.producer) for e in res.errors.errors] == [(2, "p"), (3, "p")]
    assert "no field 'x'" in res.error_messages[0] and "JSON object" in res.error_messages[1]


def test_map_json_text_past_the_limits_is_a_record_error() -> None:
    """A rendered record nested past 64 levels (or past the recursion limit) is that record's
    error, naming the limit; the others pass."""
    def template(r: dict) -> Any:
        return '{"a": ' + "[" * r["n"] + "]" * r["n"] + "}"

    res = drive("data:map", {"template": template}, {"p": [{"n": 3}, {"n": 70}, {"n": 100_000}]})
    assert res.records == [{"a": [[[]]]}]
    assert res.error_messages == ["the template's JSON is past a limit: nesting deeper than 64 levels "
                                  "(docs/runtime.md#limits)"] * 2


def test_map_literal_template_and_one_input_only() -> None:
    res = drive("data:map", {"template": '{"k": 1}'}, {"p": [{}, {}]})
    assert res.records == [{"k": 1}, {"k": 1}] and res.records[0] is not res.records[1]
    with pytest.raises(ValidationError, match="exactly one stream input"):
        drive("data:map", {"template": "{}"}, {"a": [], "b": []})


def test_filter_keeps_truthy_and_drops_errors() -> None:
    def cond(r: dict) -> Any:
        if r["n"] == 5:
            raise EvalError("boom")
        return r["n"] % 2 == 0 and r["n"]  # 0 is falsy too

    records = [{"n": i} for i in range(8)]
    res = drive("data:filter", {"condition": cond}, {"p": records})
    assert res.records == [{"n": 2}, {"n": 4}, {"n": 6}]
    assert res.records[0] is records[2]  # forwarded unchanged
    assert res.summary == {"records_in": 8, "records_out": 3}
    assert res.errors.count == 1 and res.errors.errors[0].position == 5
    assert drive("data:filter", {"condition": False}, {"p": records}).records == []


# --------------------------------------------------------------------------- data:join


USERS = [{"user_id": 1, "name": "ann"}, {"user_id": "2", "name": "bob"},
         {"user_id": 3.0, "name": "cy"}]
EVENTS = [{"user_id": 2, "ev": "login"}, {"user_id": 9, "ev": "login"},
          {"user_id": "1", "ev": "logout"}, {"ev": "nokey"}]


def join(join_type: str, **extra: Any) -> Result:
    on = [{"stream": "users", "role": "build", "field": "user_id"},
          {"stream": "events", "role": "probe", "field": "user_id"}]
    return drive("data:join", {"join_type": join_type, "on": on, **extra},
                 {"users": USERS, "events": EVENTS})


def test_join_inner() -> None:
    res = join("inner")
    # flat merge overlays in stream-name order: events, then users (users' user_id wins)
    assert res.records == [{"user_id": "2", "ev": "login", "name": "bob"},
                           {"user_id": 1, "ev": "logout", "name": "ann"}]
    assert res.summary == {"records_joined": 2, "probe_stream_records": 4,
                           "build_stream_records": 3, "skipped_key_errors": 1}
    assert res.errors.errors[0].producer == "events"
    assert "missing join field 'user_id'" in res.error_messages[0]


def test_join_left_keeps_unmatched_probe_records() -> None:
    res = join("left")
    assert [r["ev"] for r in res.records] == ["login", "login", "logout"]
    assert res.records[1] == {"user_id": 9, "ev": "login"}


def test_join_right_and_outer_emit_unmatched_build_keys_in_key_order() -> None:
    res = join("right")
    assert [r.get("ev") for r in res.records] == ["login", "logout", None]
    assert res.records[-1] == {"user_id": 3.0, "name": "cy"}
    res = join("outer")
    assert [(r.get("ev"), r.get("name")) for r in res.records] == [
        ("login", "bob"), ("login", None), ("logout", "ann"), (None, "cy")]


def test_join_nested_merge_and_template_keys() -> None:
    on = [{"stream": "users", "role": "build", "template": lambda r: r["user_id"]},
          {"stream": "events", "role": "probe", "field": "user_id"}]
    res = drive("data:join", {"join_type": "left", "on": on,
                              "output": {"merge_strategy": "nested",
                                         "nesting_keys": {"users": "u", "events": "e"}}},
                {"users": USERS, "events": EVENTS[:2]})
    assert res.records == [{"u": USERS[1], "e": EVENTS[0]}, {"u": None, "e": EVENTS[1]}]
    assert res.records[0]["u"] is not USERS[1]  # build records are copied per output


def test_join_cross_product_of_build_streams_and_key_errors() -> None:
    on = [{"stream": "a", "role": "build", "field": "k"},
          {"stream": "b", "role": "build", "field": "k"},
          {"stream": "p", "role": "probe", "field": "k"}]
    res = drive("data:join", {"join_type": "inner", "on": on},
                {"a": [{"k": 1, "a": 1}, {"k": 1, "a": 2}], "b": [{"k": 1, "b": 1}, {"k": 1.5}],
                 "p": [{"k": 1, "p": 0}, {"k": True}]})
    assert [(r["a"], r["b"]) for r in res.records] == [(1, 1), (2, 1)]
    assert res.summary["skipped_key_errors"] == 2
    assert any("not an integer" in m for m in res.error_messages)


def test_join_buffers_probes_until_every_build_side_ended() -> None:
    res = drive("data:join", {"join_type": "inner", "on": [
        {"stream": "users", "role": "build", "field": "user_id"},
        {"stream": "events", "role": "probe", "field": "user_id"}]},
        {"users": USERS, "events": EVENTS}, input_delay={"users": 0.02})
    assert len(res.records) == 2
    with pytest.raises(ModuleError, match="max_probe_buffer of 1 reached"):
        join("inner", limits={"max_probe_buffer": 1})


def test_join_max_build_records_fails_and_emits_nothing() -> None:
    with pytest.raises(ModuleError, match="max_build_records of 2 reached"):
        join("left", limits={"max_build_records": 2})
    records: list = []

    async def main() -> None:  # the downstream consumer sees 0 records and an error end
        ch = Channel(10)
        users, events = Channel(10), Channel(10)
        for c, rs in ((users, USERS), (events, EVENTS)):
            await c.send(list(rs))
            c.close()
        ctx = Context(workload="w", run_id="r", logger=Log(), workspace=None, state=dict,
                      extras={"inputs": StreamInputs({"users": users, "events": events}),
                              "output": StreamOutput(ch)})
        with pytest.raises(ModuleError):
            await load_module_class("data:join")().perform(ctx, {
                "join_type": "inner", "limits": {"max_build_records": 2}, "on": [
                    {"stream": "users", "role": "build", "field": "user_id"},
                    {"stream": "events", "role": "probe", "field": "user_id"}]})
        ch.close_error("max_build_records of 2 reached")
        with pytest.raises(UpstreamFailed):
            async for b in ch:
                records.extend(b)

    asyncio.run(main())
    assert records == []


# --------------------------------------------------------------------------- data:aggregate


SALES = [{"shop": "a", "v": 1}, {"shop": "b", "v": 10}, {"shop": "a", "v": 3.5},
         {"v": 7}, {"shop": "a", "v": "x"}, {"shop": "b"}, {"shop": "a", "v": -2}]
AGGS = [{"name": "n", "op": "count"}, {"name": "total", "op": "sum", "source_field": "v"},
        {"name": "mean", "op": "avg", "source_field": "v"},
        {"name": "lo", "op": "min", "source_field": "v"},
        {"name": "hi", "op": "max", "source_field": "v"}]


def test_aggregate_count_window_flushes_full_groups_then_the_rest() -> None:
    res = drive("data:aggregate", {"group_by_fields": ["shop"], "aggregate_fields": AGGS,
                                   "count": 2}, {"p": SALES})
    assert res.records == [
        {"shop": "a", "n": 2, "total": 4.5, "mean": 2.25, "lo": 1, "hi": 3.5},
        {"shop": "b", "n": 1, "total": 10, "mean": 10.0, "lo": 10, "hi": 10},
        {"shop": None, "n": 1, "total": 7, "mean": 7.0, "lo": 7, "hi": 7},
        {"shop": "a", "n": 1, "total": -2, "mean": -2.0, "lo": -2, "hi": -2},
    ]
    assert res.summary == {"records_in": 7, "groups_emitted": 4}
    assert [e.position for e in res.errors.errors] == [4, 5]
    assert "not a number" in res.error_messages[0] and "missing" in res.error_messages[1]


def test_aggregate_count_only_without_groups() -> None:
    res = drive("data:aggregate", {"aggregate_fields": [{"name": "n", "op": "count"}],
                                   "count": 3}, {"p": [{"x": "y"}] * 7})
    assert res.records == [{"n": 3}, {"n": 3}, {"n": 1}]


def test_aggregate_time_window_flushes_each_tick_and_at_end() -> None:
    res = drive("data:aggregate", {"group_by_fields": ["shop"],
                                   "aggregate_fields": [{"name": "n", "op": "count"}],
                                   "window": "50ms"},
                {"p": [{"shop": "a"}] * 6}, input_delay={"p": 0.04})
    assert sum(r["n"] for r in res.records) == 6
    assert len(res.records) >= 2  # more than the final flush: ticks happened
    assert res.summary["groups_emitted"] == len(res.records)
    with pytest.raises(ValidationError, match="at most one of 'window' and 'count'"):
        drive("data:aggregate", {"aggregate_fields": AGGS[:1], "window": "1s", "count": 2},
              {"p": []})


def test_aggregate_without_window_or_count_aggregates_the_whole_stream() -> None:
    res = drive("data:aggregate", {"group_by_fields": ["shop"], "aggregate_fields": AGGS},
                {"p": SALES * 3}, input_delay={"p": 0.01})
    assert res.records == [
        {"shop": "a", "n": 9, "total": 7.5, "mean": 7.5 / 9, "lo": -2, "hi": 3.5},
        {"shop": "b", "n": 3, "total": 30, "mean": 10.0, "lo": 10, "hi": 10},
        {"shop": None, "n": 3, "total": 21, "mean": 7.0, "lo": 7, "hi": 7},
    ]
    assert res.summary == {"records_in": 21, "groups_emitted": 3}
    res = drive("data:aggregate", {"aggregate_fields": [{"name": "n", "op": "count"}]},
                {"p": [{"x": 1}] * 250_001}, capacity=1000, batch=1000)
    assert res.records == [{"n": 250_001}]


def test_aggregate_keeps_one_one_point_zero_and_true_apart() -> None:
    rows = [{"k": 1}, {"k": 1.0}, {"k": True}, {"k": "1"}, {"k": [1]}, {"k": [1]}, {"k": None},
            {}]
    res = drive("data:aggregate", {"group_by_fields": ["k"],
                                   "aggregate_fields": [{"name": "n", "op": "count"}]},
                {"p": rows})
    assert [(type(r["k"]).__name__, r["n"]) for r in res.records] == [
        ("int", 1), ("float", 1), ("bool", 1), ("str", 1), ("list", 2), ("NoneType", 2)]
    res = drive("data:aggregate", {"group_by_fields": ["k", "j"],
                                   "aggregate_fields": [{"name": "n", "op": "count"}]},
                {"p": [{"k": 1, "j": "a"}, {"k": True, "j": "a"}, {"k": 1, "j": "a"}]})
    assert res.records == [{"k": 1, "j": "a", "n": 2}, {"k": True, "j": "a", "n": 1}]


# --------------------------------------------------------------------------- data:format


ROWS = [{"name": "ann", "note": 'says "hi", then <b>&</b>'}, {"name": "bob\ncat", "n": 2},
        {"name": None, "note": 1.5}]


def fmt(format_: str, options: dict | None = None, rows: list = ROWS) -> str:
    params: dict[str, Any] = {"format": format_}
    if options is not None:
        params["format_options"] = options
    res = drive("data:format", params, {"p": rows})
    assert res.records == []
    return res.summary["formatted_content"]


def test_format_json_and_yaml() -> None:
    assert json.loads(fmt("json")) == ROWS
    assert fmt("json", rows=[]) == "[]"
    import yaml

    assert yaml.safe_load(fmt("yaml")) == ROWS


def test_format_csv_is_rfc_4180() -> None:
    out = fmt("csv")
    assert out == ('name,note\r\nann,"says ""hi"", then <b>&</b>"\r\n"bob\ncat",\r\n,1.5\r\n')
    assert list(csv.reader(io.StringIO(out, newline=""))) == [
        ["name", "note"], ["ann", 'says "hi", then <b>&</b>'], ["bob\ncat", ""], ["", "1.5"]]
    assert fmt("csv", {"headers": ["n", "name"]}).startswith("n,name\r\n,ann\r\n2,")


def test_format_text_and_html_table() -> None:
    assert fmt("text", rows=[{"a": 1}, {"b": [1, 2]}]) == '{"a":1}\n{"b":[1,2]}'
    assert fmt("text", {"template": lambda r: r["name"]}, rows=ROWS[:2]) == "ann\nbob\ncat"
    html = fmt("html_table", rows=ROWS[:1])
    assert html == ("<table><thead><tr><th>name</th><th>note</th></tr></thead><tbody><tr>"
                    "<td>ann</td><td>says &quot;hi&quot;, then &lt;b&gt;&amp;&lt;/b&gt;</td>"
                    "</tr></tbody></table>")


# --------------------------------------------------------------------------- barrier


def test_barrier_drains_and_names_its_inputs_in_order() -> None:
    res = drive("control:barrier", {}, {"build_backend": [{"x": 1}] * 9, "build_frontend": []},
                capacity=1)
    assert res.summary == {"synchronized_streams": ["build_backend", "build_frontend"]}


def test_barrier_fails_when_a_producer_failed() -> None:
    with pytest.raises(UpstreamFailed, match="input build_frontend failed"):
        drive("control:barrier", {}, {"build_backend": [], "build_frontend": [{"x": 1}]},
              fail_input="build_frontend")


def test_fan_out_of_a_module_output_copies_records() -> None:
    async def main() -> list:
        a, b = Channel(2), Channel(2)
        ctx = Context(workload="w", run_id="r", logger=Log(), workspace=None, state=dict,
                      extras={"output": StreamOutput(FanOut([a, b]), batch_size=2)})
        prod = load_module_class("data:generate_from_list")()
        task = asyncio.ensure_future(prod.perform(ctx, {"items": [{"k": [1]}, {"k": [2]}, 3]}))
        got = await asyncio.gather(StreamInputs({"w": a}).records().__anext__(),
                                   StreamInputs({"w": b}).records().__anext__())
        a.discard()
        b.discard()
        await task
        return got

    x, y = asyncio.run(main())
    assert x == y == {"k": [1]} and x["k"] is not y["k"]


# --------------------------------------------------------------------------- filesystem:list


def test_filesystem_list_streams_stat_records(ws: Any) -> None:
    root = ws.path
    os.makedirs(os.path.join(root, "d", "sub"))
    for rel in ("a.txt", "b.log", "d/c.txt", "d/sub/e.txt"):
        with open(os.path.join(root, rel), "w") as f:
            f.write("12345")
    res = drive("filesystem:list", {"path": "."}, workspace=ws)
    assert [os.path.relpath(r["path"], root) for r in res.records] == ["a.txt", "b.log", "d"]
    first = res.records[0]
    assert set(first) == {"path", "size", "mode", "is_dir", "modified_time"}
    assert first["size"] == 5 and first["is_dir"] is False and res.records[2]["is_dir"] is True
    assert res.summary == {"path": os.path.realpath(root), "entries": 3}
    res = drive("filesystem:list", {"path": ".", "recursive": True, "pattern": "*.txt"},
                workspace=ws)
    assert [os.path.relpath(r["path"], root) for r in res.records] == [
        "a.txt", "d/c.txt", "d/sub/e.txt"]


def test_filesystem_list_stays_in_the_workspace(ws: Any, tmp_path: Any) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("x")
    os.symlink(str(outside), os.path.join(ws.path, "link"))
    res = drive("filesystem:list", {"path": ".", "recursive": True}, workspace=ws)
    assert res.records == [] and res.errors.count == 1  # the escaping link is not listed
    with pytest.raises(SecurityError):
        drive("filesystem:list", {"path": "../.."}, workspace=ws)
    with pytest.raises(ModuleError, match="no such file"):
        drive("filesystem:list", {"path": "missing"}, workspace=ws)
