"""Module params against the module's JSON Schema, for the values known at compile time.

Templated strings are checked by the type checker (their type comes from the expression), so
schema errors located at or under a templated value are dropped here.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from gxo.compiler.diagnostics import Diagnostics, did_you_mean
from gxo.compiler.loader import MapNode, ScalarNode, SeqNode, YNode, is_bool_word, walk_path
from gxo.compiler.violations import describe, presence_rule


@lru_cache(maxsize=None)
def _validator(name: str):
    import jsonschema

    from gxo.stdlib import registry

    return jsonschema.Draft202012Validator(registry()[name].params_schema, format_checker=_formats())


@lru_cache(maxsize=None)
def _formats():
    """The formats the module schemas check: ``regex``, a pattern that RE2 (the engine of
    gxo.runtime.regex) compiles."""
    import jsonschema

    from gxo.runtime import regex

    checker = jsonschema.FormatChecker(formats=())
    checker.checks("regex", raises=regex.RegexError)(
        lambda value: not isinstance(value, str) or regex.compile(value) is not None)
    return checker


def _templated(value: Any) -> bool:
    if isinstance(value, str):
        return "{{" in value or "${" in value
    if isinstance(value, list):
        return any(_templated(v) for v in value)
    if isinstance(value, dict):
        return any(_templated(v) for v in value.values())
    return False


def validate_params(module: str, plain: Any, node: YNode | None, anchor: YNode, anchor_key, diags: Diagnostics,
                    prefix: str = "params") -> None:
    """Report schema violations of ``module``'s params; ``anchor``/``anchor_key`` locate
    problems that have no node of their own (a missing param)."""
    if plain is None:
        plain = {}
    if node is not None:
        _settle_bool_words(node, _validator(module).schema, diags)
    errors = sorted(_validator(module).iter_errors(plain), key=lambda e: [str(p) for p in e.absolute_path])
    seen: set = set()
    for err in errors:
        path = tuple(err.absolute_path)
        if _templated(err.instance) and err.validator not in ("additionalProperties", "required") \
                and not presence_rule(err):
            continue
        target = walk_path(node, path) if node is not None else None
        if err.validator == "additionalProperties":
            allowed = list(err.schema.get("properties", {}))
            for key in err.instance:
                if key in allowed or (module, path, key) in seen:
                    continue
                seen.add((module, path, key))
                parent = walk_path(node, path)
                k = parent.key_node(key) if isinstance(parent, MapNode) else None
                span = k.span if k else (anchor_key.span if anchor_key else anchor.span)
                diags.add("unknown-key", f"module '{module}' has no param '{key}'", span,
                          help=did_you_mean(key, allowed) or ("its params are: " + ", ".join(allowed) if allowed else "it takes no params"))
            continue
        if err.validator == "required":
            missing = err.message.split("'")[1] if "'" in err.message else "a param"
            where = prefix + "".join(f".{p}" if isinstance(p, str) else f"[{p}]" for p in path)
            span = (target.span if target is not None and path else None) or (anchor_key.span if anchor_key else anchor.span)
            sub = err.schema.get("properties", {}).get(missing, {}) if isinstance(err.schema, dict) else {}
            diags.add("invalid-value", f"module '{module}' needs param '{missing}'" + (f" in {where}" if path else ""),
                      span, help=sub.get("description") if isinstance(sub, dict) else None)
            continue
        if (err.validator, path) in seen:
            continue
        seen.add((err.validator, path))
        where = prefix + "".join(f".{p}" if isinstance(p, str) else f"[{p}]" for p in path)
        span = target.span if target is not None else (anchor_key.span if anchor_key else anchor.span)
        help_text = err.schema.get("description") if isinstance(err.schema, dict) else None
        if err.validator == "format" and err.validator_value == "regex":
            from gxo.runtime.regex import DIALECT

            diags.add("invalid-regex", f"{where} is not a valid regular expression: {err.cause}", span,
                      help=DIALECT)
            continue
        if err.validator == "enum":
            opts = err.schema["enum"]
            msg = f"{where} must be one of {', '.join(json.dumps(o) for o in opts)}, got {json.dumps(err.instance)}"
            if isinstance(err.instance, str):
                help_text = did_you_mean(err.instance, [str(o) for o in opts]) or help_text
        else:
            # every other rule in words: the offending key and a help line, never a repr
            v = describe(err, where)
            msg, help_text = v.message, v.help or help_text
            key_node = target.key_node(v.key) if v.key is not None and isinstance(target, MapNode) else None
            if key_node is not None:
                span = key_node.span
        diags.add("invalid-value", msg, span, help=help_text)


def _json_types(schema: Any) -> set[str] | None:
    """The JSON types a schema accepts, or None when it does not say (any value)."""
    if not isinstance(schema, dict):
        return None
    if "type" in schema:
        t = schema["type"]
        return {t} if isinstance(t, str) else set(t)
    if "enum" in schema or "const" in schema:
        values = schema.get("enum", [schema.get("const")])
        return {"boolean" if isinstance(v, bool) else "string" if isinstance(v, str) else "other" for v in values}
    branches = schema.get("anyOf") or schema.get("oneOf")
    if branches:
        out: set[str] = set()
        for b in branches:
            t = _json_types(b)
            if t is None:
                return None
            out |= t
        return out
    return None


def _sub_schemas(schema: Any) -> list[dict]:
    """``schema`` and the union branches that may describe the same value."""
    if not isinstance(schema, dict):
        return []
    out = [schema]
    for key in ("anyOf", "oneOf", "allOf"):
        for b in schema.get(key) or ():
            out.extend(_sub_schemas(b))
    return out


def _settle_bool_words(node: YNode, schema: Any, diags: Diagnostics) -> None:
    """Withdraw the loader's ``bool-string`` warning for a yes/no/on/off word in a place whose
    schema takes strings and no booleans: there the word is the string it is read as."""
    if isinstance(node, ScalarNode):
        if is_bool_word(node):
            types = _json_types(schema)
            if types is not None and "string" in types and "boolean" not in types:
                diags.withdraw("bool-string", node.span)
        return
    if isinstance(node, MapNode):
        for key, value in node.items:
            for sub in _sub_schemas(schema):
                props = sub.get("properties") or {}
                if key.value in props:
                    _settle_bool_words(value, props[key.value], diags)
                    break
                extra = sub.get("additionalProperties")
                if isinstance(extra, dict):
                    _settle_bool_words(value, extra, diags)
                    break
    elif isinstance(node, SeqNode):
        for i, item in enumerate(node.items):
            for sub in _sub_schemas(schema):
                prefix = sub.get("prefixItems") or []
                if i < len(prefix):
                    _settle_bool_words(item, prefix[i], diags)
                    break
                if isinstance(sub.get("items"), dict):
                    _settle_bool_words(item, sub["items"], diags)
                    break
