"""data:map templates whose text is JSON-shaped compile to direct record construction; the
record equals what the text round trip (render, then json.loads) gives, wherever that works."""

from __future__ import annotations

import json

import pytest

from gxo.compiler.codegen import CodegenItem, render_plan_code
from gxo.compiler.expr.parser import parse_template
from gxo.runtime.exprlib import BasicContext

RECORD = {"n": 3, "s": 'say "hi"\n', "f": 1.5, "ok": True, "none": None, "l": [1, "a"], "m": {"k": "v"}}

TEMPLATES = [
    '{"n": {{ .n }}}',
    '{"n": {{ .n }}, "sq": {{ .n * .n }}, "half": {{ .n / 2 }}}',
    '{"label": "item {{ .n }} of {{ .f }}", "flag": {{ .ok }}, "nothing": {{ .none }}}',
    '{"s": {{ .s | toJson }}, "upper": {{ .s | upper | toJson }}}',
    '{"list": {{ .l }}, "map": {{ .m }}, "nested": {"a": [{{ .n }}, {"b": {{ .f }}}]}}',
    '{"lit": "plain", "num": 7, "arr": [true, null, 2.5]}',
]


def _functions(template: str) -> tuple:
    tree, errors = parse_template(template)
    assert not errors
    items = [CodegenItem(id="e0", tree=tree, native=False, as_text=True, source="t", json_record=True),
             CodegenItem(id="e1", tree=tree, native=False, as_text=True, source="t", json_record=False)]
    ns: dict = {}
    exec(compile(render_plan_code(items, header="test"), "plan/plan_code.py", "exec"), ns)  # noqa: S102
    fns = dict(ns["FUNCTIONS"])
    return fns["e0"], fns["e1"]


@pytest.mark.parametrize("template", TEMPLATES)
def test_direct_record_equals_the_text_round_trip(template: str) -> None:
    direct, text = _functions(template)
    ctx = BasicContext()
    record = direct(dict(RECORD), ctx)
    assert isinstance(record, dict)
    assert record == json.loads(text(dict(RECORD), ctx))


def test_a_string_with_quotes_stays_valid_without_toJson() -> None:
    direct, text = _functions('{"msg": "{{ .s }}"}')
    assert direct(dict(RECORD), BasicContext()) == {"msg": RECORD["s"]}
    with pytest.raises(ValueError):
        json.loads(text(dict(RECORD), BasicContext()))  # the text form breaks on the quote


@pytest.mark.parametrize("template", ['{{ .m }}', '[{{ .n }}]', '{"{{ .s }}": 1}', 'n={{ .n }}',
                                      '{{ if .ok }}{"a": 1}{{ end }}'])
def test_other_templates_keep_rendering_text(template: str) -> None:
    direct, text = _functions(template)
    ctx = BasicContext()
    assert direct(dict(RECORD), ctx) == text(dict(RECORD), ctx)
