"""Record types of stream producers: declared by the module or inferred from the playbook.

``data:generate_from_list``/``test:producer`` records come from their literal items,
``data:map`` records from the template's JSON shape, pass-through modules forward their
inputs' types, joins merge them.  Unknown shapes are ``any`` (open), which defers the
record-field checks of downstream templates to run time.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

from gxo.compiler import types as T
from gxo.compiler.diagnostics import Diagnostics
from gxo.compiler.expr import ast
from gxo.compiler.expr.parser import MAX_DEPTH
from gxo.runtime.limits import nests_deeper
from gxo.compiler.loader import MapNode, ScalarNode, to_plain

if TYPE_CHECKING:
    from gxo.compiler.model import Workload
    from gxo.compiler.resolve import Analysis

_FORWARD = {"passthrough", "data:filter", "control:barrier"}


class RecordTypes:
    def __init__(self, an: "Analysis", diags: Diagnostics) -> None:
        self.an = an
        self.memo: dict[str, T.Type] = {}
        self.active: set[str] = set()

    def input_type(self, w: "Workload") -> T.Type:
        """The type of the records ``w`` reads: the union of its producers' record types."""
        types = []
        for name, _ in w.stream_inputs:
            prod = self.an.by_name.get(name)
            types.append(self.output_type(prod) if prod is not None else T.ANY)
        if w.source is not None:
            prod = self.an.by_name.get(w.source[0])
            types.append(self.output_type(prod) if prod is not None else T.ANY)
        return T.union(types) if types else T.ANY

    def output_type(self, w: "Workload") -> T.Type:
        if w.name in self.memo:
            return self.memo[w.name]
        if w.name in self.active:  # a cycle: reported by the graph phase
            return T.ANY
        self.active.add(w.name)
        try:
            t = self._infer(w)
        finally:
            self.active.discard(w.name)
        self.memo[w.name] = t
        return t

    def _infer(self, w: "Workload") -> T.Type:
        spec = w.spec
        if spec is None:
            return T.ANY
        params = w.params_node
        if w.module in _FORWARD:
            return self.input_type(w)
        if w.module in ("data:generate_from_list", "test:producer"):
            items = params.get("items" if w.module == "data:generate_from_list" else "records") if params else None
            if items is not None and not (isinstance(items, ScalarNode)):
                values = to_plain(items)
                if isinstance(values, list) and values:
                    return T.union(_item_record(v) for v in values)
            tpl = params.get("template") if params else None
            if isinstance(tpl, ScalarNode):
                site = next((s for s in w.exprs if s.node is tpl), None)
                if site is not None and isinstance(site.tree, ast.Template):
                    return template_record_type(site.tree, tpl.value)
            return T.MapT((), open=True)
        if w.module == "data:map":
            tpl = params.get("template") if params else None
            if isinstance(tpl, ScalarNode) and isinstance(tpl.value, str):
                site = next((s for s in w.exprs if s.node is tpl), None)
                if site is not None and isinstance(site.tree, ast.Template):
                    return template_record_type(site.tree, tpl.value)
            return T.MapT((), open=True)
        if w.module == "data:join":
            return self._join_type(w)
        if w.module == "data:aggregate" and params is not None:
            fields: list[tuple[str, T.Type]] = []
            groups = to_plain(params.get("group_by_fields")) or []
            for g in groups if isinstance(groups, list) else []:
                fields.append((str(g), T.ANY))
            aggs = to_plain(params.get("aggregate_fields")) or []
            for a in aggs if isinstance(aggs, list) else []:
                if isinstance(a, dict) and isinstance(a.get("name"), str):
                    fields.append((a["name"], T.INT if a.get("op") == "count" else T.union((T.INT, T.FLOAT))))
            return T.MapT(tuple(fields), open=False)
        if spec.record_schema is None:
            return T.ANY
        if spec.records_param is not None:
            from gxo.compiler.resolve import emits_records

            if not emits_records(w):
                return T.ANY
        return T.from_schema(spec.record_schema)

    def _join_type(self, w: "Workload") -> T.Type:
        params = w.params_node
        output = to_plain(params.get("output")) if isinstance(params, MapNode) else None
        inputs = [(n, self.an.by_name.get(n)) for n, _ in w.stream_inputs]
        if isinstance(output, dict) and output.get("merge_strategy") == "nested":
            keys = output.get("nesting_keys") or {}
            fields = []
            for n, prod in inputs:
                if isinstance(keys, dict) and n in keys:
                    sub = self.output_type(prod) if prod else T.ANY
                    fields.append((str(keys[n]), T.union((sub, T.NULL))))
            return T.MapT(tuple(fields), open=False)
        merged: dict[str, T.Type] = {}
        is_open = False
        for _, prod in sorted(inputs, key=lambda x: x[0]):
            t = self.output_type(prod) if prod else T.ANY
            if isinstance(t, T.MapT):
                for k, v in t.fields:
                    merged[k] = T.union((merged[k], v)) if k in merged else v
                is_open = is_open or t.open
            else:
                is_open = True
        return T.MapT(tuple(merged.items()), open=is_open)


def _item_record(v: object) -> T.Type:
    if isinstance(v, dict):
        return T.of_value(v)
    return T.MapT((("item", T.of_value(v)),))


def record_shape(tree: ast.Template) -> dict | None:
    """The JSON object a ``data:map`` template's text spells, each action standing as a mark
    (its part's index between two U+0001: quoted outside a JSON string, bare inside one), or
    None when the text is not a JSON object with actions only where values are.  The record
    type (``template_record_type``) and the generated code (``codegen``'s ``json_record``,
    ``json_column``) read the template through it."""
    if tree.single is not None or not all(isinstance(p, (ast.Text, ast.Action)) for p in tree.parts):
        return None
    out: list[str] = []
    in_str = esc = False
    for i, part in enumerate(tree.parts):
        if isinstance(part, ast.Action):
            mark = f"\u0001{i}\u0001"
            out.append(mark if in_str else f'"{mark}"')
            continue
        for ch in part.text:
            if in_str:
                if esc:
                    esc = False
                elif ch == "\\":
                    esc = True
                elif ch == '"':
                    in_str = False
            elif ch == '"':
                in_str = True
            out.append(ch)
    try:
        shape = json.loads("".join(out), strict=False)  # the marks are control characters
    except (ValueError, RecursionError):
        return None
    if not isinstance(shape, dict) or nests_deeper(shape, MAX_DEPTH):
        return None  # too deep for generated source: the text round trip builds it
    return shape


def json_column(tree: ast.Template) -> str:
    """The field of a data:map template whose text spells a record of exactly one field with a
    constant name (``{"n": {{ int .line }}}``), else "": its function can return that field's
    value alone, and the records go on as one field's values (``Expression.column``)."""
    shape = record_shape(tree)
    if shape is None or len(shape) != 1:
        return ""
    (key,) = shape
    return key if "\u0001" not in key and not _computed_keys(shape[key]) else ""


def _computed_keys(v: object) -> bool:
    """Whether a key inside ``v`` is computed (the generated code leaves such a record to the
    text round trip)."""
    if isinstance(v, dict):
        return any("\u0001" in k or _computed_keys(x) for k, x in v.items())
    if isinstance(v, list):
        return any(_computed_keys(x) for x in v)
    return False


def template_record_type(tree: ast.Template, text: str) -> T.Type:
    """The record type a ``data:map`` template builds when its text is JSON-shaped.

    Each action becomes a mark (``record_shape``); if the text then parses as a JSON object, its
    keys are the record's fields (a field that is exactly one action gets ``any``; literal
    values their own type).  Any other template yields an open record."""
    value = record_shape(tree)
    if value is None:
        return T.MapT((), open=True)
    fields = []
    for k, v in value.items():
        if isinstance(v, str) and "\u0001" in v:
            fields.append((k, T.ANY if re.fullmatch("\u0001[0-9]+\u0001", v) else T.STR))
        else:
            fields.append((k, T.of_value(v)))
    return T.MapT(tuple(fields), open=False)
