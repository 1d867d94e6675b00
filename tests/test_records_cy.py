"""The per-record hot path of the stream transforms: compiled module and pure twin agree."""

from __future__ import annotations

import copy
import os
from types import ModuleType
from typing import Any

import pytest
from test_channels import load_uncompiled_module

from gxo.runtime import _records_cy
from gxo.runtime.streams import RecordErrorSink

PURE = load_uncompiled_module("_records_cy")
IMPLS = {"compiled": _records_cy, "pure": PURE}


@pytest.fixture(params=sorted(IMPLS))
def impl(request: pytest.FixtureRequest) -> ModuleType:
    return IMPLS[request.param]


def as_record(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return {"text": value}
    raise ValueError(f"not a record: {value!r}")


def square(record: dict[str, Any], ctx: Any) -> Any:
    if record["v"] == "boom":
        raise ValueError("cannot square boom")
    if record["v"] == "text":
        return "as text"
    if record["v"] == "list":
        return [1]
    return {"v": record["v"] * record["v"], "ctx": ctx}


def test_map_batch_reports_bad_records_at_their_position_and_goes_on(impl: ModuleType) -> None:
    sink = RecordErrorSink()
    batch = [{"v": 2}, {"v": "boom"}, {"v": 3}, {"v": "text"}, {"v": "list"}, {"v": 4}]
    out = impl.map_batch(impl.RecordFn(square, "C"), batch, 10, "gen", sink, as_record)
    assert out == [{"v": 4, "ctx": "C"}, {"v": 9, "ctx": "C"}, {"text": "as text"},
                   {"v": 16, "ctx": "C"}]
    assert [(e.position, e.producer, e.message) for e in sink.errors] == [
        (11, "gen", "cannot square boom"), (14, "gen", "not a record: [1]")]


def test_a_raising_last_record_and_an_empty_batch(impl: ModuleType) -> None:
    sink = RecordErrorSink()
    fn = impl.RecordFn(square, None)
    assert impl.map_batch(fn, [{"v": "boom"}], 0, "p", sink, as_record) == []
    assert impl.map_batch(fn, [], 0, "p", sink, as_record) == []
    assert sink.count == 1


def test_filter_batch_keeps_truthy_records_and_drops_raising_ones(impl: ModuleType) -> None:
    sink = RecordErrorSink()

    def cond(record: dict[str, Any], _ctx: Any) -> Any:
        return 10 // record["d"]  # 0 is falsy, d == 0 raises

    batch = [{"d": 1}, {"d": 20}, {"d": 0}, {"d": 5}]
    kept = impl.filter_batch(impl.RecordFn(cond, None), batch, 0, "src", sink)
    assert kept == [{"d": 1}, {"d": 5}]
    assert kept[0] is batch[0]  # records pass through, not copied
    assert [(e.position, e.message) for e in sink.errors] == [(2, "integer division or modulo by zero")]


def test_map_values_is_map_batch_over_the_records_of_one_field(impl: ModuleType) -> None:
    """``map_values`` (data:parse's lines handed to data:map) gives what ``map_batch`` gives on
    the records ``{field: value}``: the same records out, the same errors at the same places,
    even when the template keeps, returns or embeds the record it was given."""
    kept: list = []

    def fn(record: dict[str, Any], _ctx: Any) -> Any:
        v = record["v"]
        if v == "boom":
            raise ValueError("cannot map boom")
        if v == "self":
            return record  # the record itself is the result
        if v == "inside":
            return {"r": record}  # the record inside the result
        if v == "keep":
            kept.append(record)  # stored elsewhere
            return {"kept": True}
        if v == "text":
            return "as text"
        return {"v": v * 2}

    values = [1, "self", 2, "inside", "boom", 3, "keep", "text", 4, "boom"]
    sink_a, sink_b = RecordErrorSink(), RecordErrorSink()
    f = impl.RecordFn(fn, None)
    out = impl.map_values(f, "v", values, 5, "lines", sink_a, as_record)
    expected = impl.map_batch(f, impl.field_records("v", values), 5, "lines", sink_b, as_record)
    assert out == expected == [
        {"v": 2}, {"v": "self"}, {"v": 4}, {"r": {"v": "inside"}}, {"v": 6}, {"kept": True},
        {"text": "as text"}, {"v": 8}]
    assert [(e.position, e.producer, e.message) for e in sink_a.errors] == [
        (e.position, e.producer, e.message) for e in sink_b.errors] == [
        (9, "lines", "cannot map boom"), (14, "lines", "cannot map boom")]
    # what the template kept or returned is a record of its own, never changed afterwards
    assert out[1] == {"v": "self"} and out[3]["r"] == {"v": "inside"}
    assert out[1] is not out[3]["r"]
    assert kept == [{"v": "keep"}, {"v": "keep"}]  # map_values's, then map_batch's
    assert impl.map_values(f, "v", [], 0, "p", RecordErrorSink(), as_record) == []


def test_field_records_and_line_values(impl: ModuleType) -> None:
    assert impl.field_records("line", ["a", "", "b"]) == [{"line": "a"}, {"line": ""}, {"line": "b"}]
    assert impl.field_records("line", []) == []
    text = "a\r\n\nb\rc\n\n"
    assert impl.line_values(text, False) == text.splitlines() == ["a", "", "b", "c", ""]
    assert impl.line_values(text, True) == ["a", "b", "c"]


def test_a_scope_is_laid_under_the_record(impl: ModuleType) -> None:
    seen = []

    def fn(scope: dict[str, Any], _ctx: Any) -> Any:
        seen.append(scope)
        return {"k": scope["k"], "vars": scope["vars"]}

    state = {"vars": {"env": "prod"}, "k": "from state"}
    f = impl.RecordFn(fn, None, state)
    out = impl.map_batch(f, [{"k": "from record"}], 0, "p", RecordErrorSink(), as_record)
    assert out == [{"k": "from record", "vars": {"env": "prod"}}]
    assert state == {"vars": {"env": "prod"}, "k": "from state"}  # the scope is not changed
    assert f({"k": 1}) == {"k": 1, "vars": {"env": "prod"}}


def test_plain_wraps_a_one_argument_callable_once(impl: ModuleType) -> None:
    f = impl.RecordFn.plain(lambda r: {"n": r["n"] + 1})
    assert f({"n": 1}) == {"n": 2}
    assert impl.RecordFn.plain(f) is f
    assert impl.map_batch(f, [{"n": 5}], 0, "p", RecordErrorSink(), as_record) == [{"n": 6}]


def test_a_record_fn_is_shared_not_copied(impl: ModuleType) -> None:
    f = impl.RecordFn(square, object())
    params = {"template": f, "other": [1]}
    copied = copy.deepcopy(params)
    assert copied["template"] is f and copied["other"] is not params["other"]
    assert copy.copy(f) is f


def test_copy_batch_makes_independent_copies(impl: ModuleType) -> None:
    record = {"a": [1, {"b": 2}], "s": "x"}
    out = impl.copy_batch(record, 3)
    assert out == [record] * 3
    out[0]["a"][1]["b"] = 99
    assert record["a"][1]["b"] == 2 and out[1]["a"][1]["b"] == 2
    assert impl.copy_batch(record, 0) == []


def test_error_text_falls_back_to_the_type_name(impl: ModuleType) -> None:
    assert impl.error_text(KeyError()) == "KeyError"
    assert impl.error_text(ValueError("bad")) == "bad"


@pytest.mark.parametrize(("value", "expected"), [
    (7, 7), (-3, -3), ("42", 42), (" 42\n", 42), ("1_000", 1000), ("-5", -5), ("2.9", 2),
    ("1e3", 1000), (True, 1), (False, 0), (3.99, 3), (-2.5, -2)])
def test_fn_int_takes_every_case_of_the_language_int(impl: ModuleType, value: Any,
                                                      expected: int) -> None:
    from gxo.runtime import exprlib

    assert impl.fn_int(value) == expected == exprlib.int_of(value)
    assert type(impl.fn_int(value)) is int


@pytest.mark.parametrize("value", ["x", "", "nan", float("inf"), None, [1], {"a": 1}])
def test_fn_int_errors_are_the_languages(impl: ModuleType, value: Any) -> None:
    from gxo.runtime.exprlib import EvalError

    with pytest.raises(EvalError, match="^int: "):
        impl.fn_int(value)


def test_aggregate_batch_groups_counts_and_windows(impl: ModuleType) -> None:
    errors = RecordErrorSink()
    groups: dict = {}
    ready: list = []
    import collections

    batch = [{"k": "a", "v": 1}, collections.OrderedDict(k="a", v=2.5), {"k": "b", "v": -1},
             {"k": "a"}, {"k": "a", "v": True}, {"k": "a", "v": 4}]

    def bad(record: Any, src: str) -> str:
        return f"bad {src}"

    impl.aggregate_batch(batch, 10, "p", errors, ("k",), ("v",), groups, 3, ready, str, bad)
    assert ready == [[("a",), 3, [7.5], [1], [4]]]
    assert list(groups.values()) == [[("b",), 1, [-1], [-1], [-1]]]
    assert [(e.position, e.message) for e in errors.errors] == [(13, "bad v"), (14, "bad v")]


def test_aggregate_batch_without_group_fields_is_one_group_across_batches(impl: ModuleType) -> None:
    errors = RecordErrorSink()
    groups: dict = {}
    ready: list = []

    def bad(record: Any, src: str) -> str:
        return f"bad {src}"

    # the whole stream: one group under the key (), its count carried from batch to batch
    impl.aggregate_batch([{"v": 1}, {"v": "x"}, {"v": 2.5}], 0, "p", errors, (), ("v",), groups,
                         0, ready, str, bad)
    impl.aggregate_batch([[1], {"v": -3}, {}], 3, "p", errors, (), ("v",), groups, 0, ready, str,
                         bad)
    assert ready == [] and groups == {(): [(), 3, [0.5], [-3], [2.5]]}
    assert [(e.position, e.message) for e in errors.errors] == [(1, "bad v"), (3, "bad v"),
                                                                (5, "bad v")]
    # a count window of 2 and count only (no source field): full groups move to ready
    groups, ready = {}, []
    impl.aggregate_batch([{"a": 1}] * 3, 0, "p", errors, (), (), groups, 2, ready, str, bad)
    impl.aggregate_batch([{"a": 1}] * 2, 3, "p", errors, (), (), groups, 2, ready, str, bad)
    assert ready == [[(), 2, [], [], []]] * 2 and groups == {(): [(), 1, [], [], []]}


@pytest.mark.parametrize("minmax", [True, False])
def test_aggregate_batch_sums_without_min_and_max_as_with_them(impl: ModuleType,
                                                               minmax: bool) -> None:
    """Without ``minmax`` (no min or max asked for) the counts and sums are the same, grouped or
    not, windowed or not; only ``mins``/``maxs`` are left as the group's first values."""
    bad = lambda _record, src: f"bad {src}"  # noqa: E731
    batches = [[{"k": "a", "v": 2}, {"k": "b", "v": 1.5}, {"v": "x"}, {"k": "a", "v": -7}],
               [{"k": "a", "v": 10**30}, {}, {"k": "b", "v": True}, {"k": "a", "v": 1}]]
    for fields, limit in (((), 0), ((), 2), (("k",), 0), (("k",), 2)):
        results = []
        for mm in (True, minmax):
            errors, groups, ready = RecordErrorSink(), {}, []
            base = 0
            for batch in batches:
                impl.aggregate_batch(batch, base, "p", errors, fields, ("v",), groups, limit,
                                     ready, str, bad, mm)
                base += len(batch)
            results.append(([g[:3] for g in ready], {k: g[:3] for k, g in groups.items()},
                            [(e.position, e.message) for e in errors.errors]))
        assert results[0] == results[1], (fields, limit)
    errors, groups = RecordErrorSink(), {}
    for batch in batches:
        impl.aggregate_batch(batch, 0, "p", errors, (), ("v",), groups, 0, [], str, bad, minmax)
    assert groups[()][:3] == [(), 5, [2 + 1.5 - 7 + 10**30 + 1]]
    assert (groups[()][3], groups[()][4]) == (([-7], [10**30]) if minmax else ([2], [2]))


def test_the_compiled_module_is_the_one_imported_when_required() -> None:
    if os.environ.get("GXO_REQUIRE_EXTENSIONS") != "1":
        pytest.skip("GXO_REQUIRE_EXTENSIONS is not set")
    assert _records_cy._is_compiled(), _records_cy.__file__
    assert not PURE._is_compiled()
