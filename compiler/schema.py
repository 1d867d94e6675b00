"""Phase ``validate-schema``: the playbook against ``schemas/playbook.schema.json``.

jsonschema's errors are mapped onto the located nodes: unknown keys point at the key with a
did-you-mean (or a rename hint for v0.1 keys), wrong values at the value, missing keys at the
mapping that lacks them.  Lifecycle combinations are checked by the resolver, which can say
more than a failed ``if``/``then``.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources
from typing import Any

from gxo.compiler.diagnostics import Diagnostics, Span, did_you_mean
from gxo.compiler.loader import MapNode, ScalarNode, SeqNode, YNode, to_plain, walk_path
from gxo.compiler.violations import describe, schema_shape, value_kind

#: keys renamed since v0.1 (location → key → hint)
_LEGACY = {
    (): {
        "tasks": "`tasks:` was renamed: write `workloads:`, and give each entry a "
        "`lifecycle: {policy: run_once}` and a `process: {module, params}` block",
        "task_policy": "`task_policy:` was renamed to `workload_policy:`",
        "templating": "`templating:` was removed: the expression language is built in",
    },
    ("workloads", "*"): {
        "type": "`type:` was renamed: write `process: {module: <name>}`",
        "params": "`params:` moved under `process:` (`process: {module: ..., params: ...}`)",
        "depends_on": None,
        "stream_input": None,
    },
    ("workloads", "*", "lifecycle"): {
        "restart_policy": "`restart_policy:` is spelled `restart:` (always, on_failure, never)",
    },
}
#: a required key -> the v0.1 key that stands in its place (reported as legacy-tasks-key instead)
_REPLACED_BY = {"workloads": "tasks", "process": "type"}
_SPECIAL_HINTS = {
    "depends_on": "GXO infers ordering from references; for an explicit edge write `needs: [<name>]`",
    "stream_input": "the key is `stream_inputs:` (a list of producer names)",
    "module": "`module` belongs under `process:` (`process: {module: ..., params: ...}`)",
    "policy": None,
    "restart": "`restart` belongs under `lifecycle:`",
    "cron": "`cron` belongs under `lifecycle:` (with `policy: scheduled`)",
    "source": "`source` belongs under `lifecycle:` (with `policy: event_driven`)",
}


@lru_cache(maxsize=1)
def playbook_schema() -> dict[str, Any]:
    text = resources.files("gxo.schemas").joinpath("playbook.schema.json").read_text("utf-8")
    return json.loads(text)


@lru_cache(maxsize=1)
def _validator():
    import jsonschema

    schema = playbook_schema()
    return jsonschema.Draft202012Validator(schema)


@lru_cache(maxsize=1)
def _fast_check():
    from gxo.compiler.schema_check import compile_schema

    return compile_schema(playbook_schema())


def _pattern_of(path: tuple) -> tuple:
    return tuple("*" if isinstance(p, int) else p for p in path)


def _key_span(root: YNode, path: tuple, key: str) -> Span | None:
    parent = walk_path(root, path)
    if isinstance(parent, MapNode):
        k = parent.key_node(key)
        if k is not None:
            return k.span
    return None


def _node_span(root: YNode, path: tuple) -> Span:
    node = walk_path(root, path)
    if node is None:
        return root.span
    if isinstance(node, MapNode) and path:
        # point at the key that introduces this mapping (more readable than the block)
        parent = walk_path(root, path[:-1])
        if isinstance(parent, MapNode) and isinstance(path[-1], str):
            k = parent.key_node(path[-1])
            if k is not None:
                return k.span
    if isinstance(node, SeqNode) and len(path) and isinstance(walk_path(root, path[:-1]), MapNode):
        k = walk_path(root, path[:-1]).key_node(path[-1])  # type: ignore[union-attr]
        if k is not None:
            return k.span
    if isinstance(node, (MapNode, SeqNode)):
        s = node.span
        return Span(s.path, s.line, s.col, s.line, s.col + 1)
    return node.span


def _where(path: tuple) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out or "the playbook"


def validate_playbook(root: YNode, diags: Diagnostics) -> None:
    """Validate the node tree; every violation becomes one diagnostic."""
    if not isinstance(root, MapNode):
        diags.add("invalid-value", f"a playbook must be a mapping, got {value_kind(to_plain(root))}",
                  root.span, help="start with `name:`, `schemaVersion:` and `workloads:`")
        return
    instance = to_plain(root)
    seen: set[tuple] = set()
    from gxo.compiler.schema_check import is_valid

    if not is_valid(_fast_check(), instance):  # jsonschema only to explain the errors
        for err in sorted(_validator().iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path]):
            _report(err, root, instance, diags, seen)
    version = root.get("schemaVersion")
    if isinstance(version, ScalarNode) and isinstance(version.value, str):
        m = re.match(r"^v?([0-9]+)\.[0-9]+\.[0-9]+$", version.value)
        if m and m.group(1) != "1":
            diags.add("schema-version", f"schemaVersion {version.value} has major version {m.group(1)}; "
                      "this GXO reads major version 1", version.span, help='write schemaVersion: "1.0.0"')
    elif isinstance(version, ScalarNode) and version.value is not None and ("validator", ("schemaVersion",)) not in seen:
        pass


def _report(err, root: YNode, instance: Any, diags: Diagnostics, seen: set) -> None:
    path = tuple(err.absolute_path)
    spath = [str(p) for p in err.absolute_schema_path]
    # lifecycle combinations: the resolver reports them with better words
    conditional = any(p in ("if", "then", "else", "not", "dependentSchemas", "dependentRequired") for p in spath)
    if conditional and "lifecycle" in path:
        return
    validator = err.validator
    if validator == "pattern" and path and path[-1] == "cron":
        return  # the resolver explains cron expressions field by field
    if validator == "not":
        key = path[-1] if path else "this key"
        why = err.schema.get("description") if isinstance(err.schema, dict) else None
        diags.add("invalid-value", f"'{key}' is not allowed here", _key_span(root, path[:-1], str(key)) or _node_span(root, path),
                  help=why)
        return
    if validator == "additionalProperties":
        allowed = list(err.schema.get("properties", {}))
        patterns = list(err.schema.get("patternProperties", {}))
        extra = [k for k in (err.instance or {}) if k not in allowed and not any(re.search(p, k) for p in patterns)]
        for key in extra:
            _unknown_key(root, path, key, allowed, diags, seen)
        return
    if validator in ("oneOf", "anyOf") and err.context:
        # prefer the branch whose own errors are deepest (it matched the shape best)
        deepest = max(err.context, key=lambda e: (len(e.absolute_path), -len(list(e.absolute_schema_path))))
        if len(deepest.absolute_path) > len(err.absolute_path):
            _report(deepest, root, instance, diags, seen)
            return
    key = (validator, path)
    if key in seen:
        return
    seen.add(key)
    where = _where(path)
    value = err.instance
    code = "invalid-value"
    help_text = err.schema.get("description") if isinstance(err.schema, dict) else None
    if validator == "required":
        missing = re.findall(r"'([^']+)' is a required property", err.message)
        name = missing[0] if missing else "a key"
        present = err.instance if isinstance(err.instance, dict) else {}
        if _REPLACED_BY.get(name, "") in present:
            return  # the legacy key that stands for it is reported with its rename

        if path == () and name == "schemaVersion":
            code = "schema-version"
        msg = f"missing required key '{name}' in {where}"
        sub = err.schema.get("properties", {}).get(name, {}) if isinstance(err.schema, dict) else {}
        help_text = sub.get("description") if isinstance(sub, dict) else None
        diags.add(code, msg, _node_span(root, path), help=help_text)
        return
    if path and path[-1] == "schemaVersion" and len(path) == 1:
        diags.add("schema-version", f"schemaVersion {json.dumps(value)} is not a semantic version like \"1.0.0\"",
                  _node_span(root, path), help="write schemaVersion: \"1.0.0\" (major version 1)")
        return
    if validator == "type":
        msg = f"{where} must be {schema_shape(err.schema)}, got {value_kind(value)}"
    elif validator in ("enum", "const"):
        msg = f"{where} must be {schema_shape(err.schema)}, got {json.dumps(value)}"
        if isinstance(value, str):
            options = err.schema.get("enum") or [err.schema.get("const")]
            hint = did_you_mean(value, [str(o) for o in options])
            help_text = hint or help_text
    elif validator == "pattern":
        msg = f"{where} {json.dumps(value)} is not in the required form"
        if not help_text:
            help_text = f"it must match {err.schema.get('pattern')}"
    elif validator in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        bound = err.schema.get(validator)
        word = {"minimum": "at least", "exclusiveMinimum": "more than", "maximum": "at most",
                "exclusiveMaximum": "less than"}[validator]
        msg = f"{where} must be {word} {bound}, got {json.dumps(value)}"
    elif validator == "minItems":
        msg = f"{where} needs at least {err.schema.get('minItems')} item(s)"
    elif validator == "minLength":
        msg = f"{where} must not be empty"
    elif validator == "uniqueItems":
        items = value if isinstance(value, list) else []
        dup = next((i for i, v in enumerate(items) if v in items[:i]), None)
        if dup is not None:
            node = walk_path(root, path + (dup,))
            diags.add(code, f"{where} lists {json.dumps(items[dup])} twice", node.span if node else _node_span(root, path),
                      help="remove the repeated entry")
            return
        msg = f"{where} lists the same item twice"
    elif validator in ("oneOf", "anyOf"):
        msg = f"{where} must be {schema_shape(err.schema)}, got {value_kind(value)}"
    else:
        # every other rule in words: the offending key and a help line, never a repr
        v = describe(err, where)
        msg, help_text = v.message, v.help or help_text
        if v.key is not None:
            span = _key_span(root, path, v.key)
            if span is not None:
                diags.add(code, msg, span, help=help_text)
                return
    diags.add(code, msg, _node_span(root, path), help=help_text)


def _unknown_key(root: YNode, path: tuple, key: str, allowed: list[str], diags: Diagnostics, seen: set) -> None:
    if ("unknown", path, key) in seen:
        return
    seen.add(("unknown", path, key))
    span = _key_span(root, path, key) or _node_span(root, path)
    pattern = _pattern_of(path)
    legacy = _LEGACY.get(pattern, {})
    if key in legacy and legacy[key]:
        diags.add("legacy-tasks-key", f"'{key}' is a v0.1 key that GXO v1 renamed", span, help=legacy[key])
        return
    hint = did_you_mean(key, allowed) or _SPECIAL_HINTS.get(key)
    where = _where(path)
    diags.add("unknown-key", f"unknown key '{key}' in {where}", span,
              help=hint or ("allowed keys: " + ", ".join(sorted(allowed))))


def node_scalar(node: YNode | None) -> ScalarNode | None:
    return node if isinstance(node, ScalarNode) else None
