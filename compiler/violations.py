"""JSON Schema violations in words: the offending key or value and what would be accepted.

``gxo.compiler.schema`` (the playbook) and ``gxo.compiler.params`` (module params) word the
common validators themselves; everything else goes through ``describe``, so that no diagnostic
ever shows jsonschema's own message (a Python repr of the instance and the schema).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ["Violation", "describe", "presence_rule"]


@dataclass(frozen=True)
class Violation:
    message: str
    help: str | None = None
    #: a key of the instance (a mapping) to point at, when the message is about one
    key: str | None = None


TYPE_WORDS = {
    "string": "a string", "integer": "an integer", "number": "a number", "boolean": "a boolean",
    "array": "a list", "object": "a mapping", "null": "null",
}


def value_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "a mapping"


def _short(value: Any) -> str:
    """A value as the playbook would write it, cut short (JSON, never a Python repr)."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = value_kind(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _quote(names: list[str]) -> str:
    quoted = [f"'{n}'" for n in names]
    if len(quoted) <= 2:
        return " and ".join(quoted)
    return ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _either(names: list[str]) -> str:
    quoted = [f"'{n}'" for n in names]
    if len(quoted) <= 2:
        return " or ".join(quoted)
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]


def schema_shape(schema: Any) -> str:
    """What a (sub)schema accepts, briefly: ``role: "probe"``, ``a string``, ``one of "a", "b"``."""
    if schema is True:
        return "any value"
    if not isinstance(schema, dict):
        return "nothing"
    if "const" in schema:
        return _short(schema["const"])
    if "enum" in schema:
        return "one of " + ", ".join(_short(v) for v in schema["enum"])
    props = schema.get("properties")
    if isinstance(props, dict):
        fixed = [f"{k}: {_short(v['const'])}" for k, v in props.items()
                 if isinstance(v, dict) and "const" in v]
        if fixed:
            return ", ".join(fixed)
    t = schema.get("type")
    if isinstance(t, list):
        return " or ".join(TYPE_WORDS.get(x, x) for x in t)
    if t in TYPE_WORDS:
        return TYPE_WORDS[t]
    for key in ("oneOf", "anyOf"):
        if isinstance(schema.get(key), list):
            return " or ".join(schema_shape(s) for s in schema[key])
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1].replace("_", " ")
    return "a valid value"


def _required_names(branches: Any) -> list[str] | None:
    """The key names when every branch is exactly ``{"required": [name...]}``, else None."""
    if not isinstance(branches, list) or not branches:
        return None
    names: list[str] = []
    for b in branches:
        if not isinstance(b, dict) or set(b) != {"required"} or not isinstance(b["required"], list):
            return None
        names.extend(n for n in b["required"] if isinstance(n, str) and n not in names)
    return names


def presence_rule(err: Any) -> bool:
    """The rule is about which keys are present (not their values): a templated value cannot
    change its outcome, so it is reported even when a value is a template."""
    v = err.validator
    if v in ("dependentRequired", "minProperties", "maxProperties"):
        return True
    if v in ("oneOf", "anyOf"):
        return _required_names(err.validator_value) is not None
    if v in ("contains", "minContains", "maxContains") and isinstance(err.schema, dict):
        # items counted by fixed values of their keys (a join's probe: role: probe): decided
        # unless one of those values is a template
        contains = err.schema.get("contains")
        props = contains.get("properties") if isinstance(contains, dict) else None
        keys = [k for k, sub in (props or {}).items() if isinstance(sub, dict) and "const" in sub]
        items = err.instance if isinstance(err.instance, list) else []
        return bool(keys) and not any(
            isinstance(item, dict) and isinstance(item.get(k), str) and "{{" in item[k]
            for item in items for k in keys)
    if v == "not" and isinstance(err.validator_value, dict):
        inner = err.validator_value
        return _required_names(inner.get("anyOf")) is not None or _required_names([inner]) is not None
    return False


def _prop_help(schema: Any, name: str | None) -> str | None:
    if name is None or not isinstance(schema, dict):
        return None
    sub = schema.get("properties", {}).get(name) if isinstance(schema.get("properties"), dict) else None
    return sub.get("description") if isinstance(sub, dict) else None


def describe(err: Any, where: str) -> Violation:
    """``err`` (a ``jsonschema.ValidationError``) at ``where`` (the instance's path, as the
    playbook names it) in words."""
    v = err.validator
    vv = err.validator_value
    value = err.instance
    schema = err.parent.schema if err.parent is not None and isinstance(err.parent.schema, dict) \
        else err.schema
    present = value if isinstance(value, dict) else {}
    desc = err.schema.get("description") if isinstance(err.schema, dict) else None

    if v in ("oneOf", "anyOf"):
        names = _required_names(vv)
        if names is not None:
            given = [n for n in names if n in present]
            if not given:
                return Violation(f"{where} needs {_either(names)}",
                                 _prop_help(schema, names[0]) if len(names) == 1 else
                                 f"give {'exactly' if v == 'oneOf' else 'at least'} one of "
                                 f"{_quote(names)}")
            return Violation(f"{where} has {_quote(given)}: give only one of them",
                             f"{_quote(names)} exclude each other; remove all but one",
                             key=given[-1])
        return Violation(f"{where} must be {schema_shape(err.schema)}, got {value_kind(value)} "
                         f"{_short(value)}", desc)
    if v == "not":
        inner = vv if isinstance(vv, dict) else {}
        pairs = inner.get("anyOf") if "anyOf" in inner else [inner]
        names = _required_names(pairs)
        if names is not None:
            clash = next((b["required"] for b in pairs if all(n in present for n in b["required"])),
                         names)
            # pairs that all share one key (``{"required": [hub, k]}`` for each k): the hub
            # excludes the others, which go together
            hub = set.intersection(*(set(b["required"]) for b in pairs)) if len(pairs) > 1 else set()
            if len(hub) == 1:
                (h,) = hub
                others = [n for n in names if n != h]
                help_ = f"'{h}' excludes {_quote(others)}; remove '{h}' or them"
            else:
                help_ = f"{_quote(names)} exclude each other; remove all but one"
            return Violation(f"{where} has {_quote(clash)}: give at most one of them", help_,
                             key=clash[-1])
        return Violation(f"{where} must not be {schema_shape(inner)}", desc)
    if v == "dependentRequired" and isinstance(vv, dict):
        for key, needs in vv.items():
            if key in present:
                missing = [n for n in needs if n not in present]
                if missing:
                    return Violation(f"{where} has '{key}' without {_quote(missing)}",
                                     f"'{key}' needs {_quote(list(needs))} as well",
                                     key=key)
    if v in ("contains", "minContains", "maxContains"):
        contains = err.schema.get("contains") if isinstance(err.schema, dict) else None
        shape = schema_shape(contains)
        if v == "maxContains":
            msg = f"{where} has more than {vv} item{'s' if vv != 1 else ''} with {shape}"
        else:
            least = err.schema.get("minContains", 1) if isinstance(err.schema, dict) else 1
            msg = f"{where} needs {'an item' if least == 1 else f'at least {least} items'} with {shape}"
        return Violation(msg, desc)
    if v in ("minLength", "maxLength"):
        n = len(value) if isinstance(value, str) else 0
        word = "at least" if v == "minLength" else "at most"
        return Violation(f"{where} must be {word} {vv} character{'s' if vv != 1 else ''} long, "
                         f"got {n}", desc)
    if v in ("minItems", "maxItems"):
        word = "at least" if v == "minItems" else "at most"
        return Violation(f"{where} must have {word} {vv} item{'s' if vv != 1 else ''}", desc)
    if v in ("minProperties", "maxProperties"):
        word = "at least" if v == "minProperties" else "at most"
        return Violation(f"{where} must have {word} {vv} key{'s' if vv != 1 else ''}", desc)
    if v in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        word = {"minimum": "at least", "exclusiveMinimum": "more than", "maximum": "at most",
                "exclusiveMaximum": "less than"}[v]
        return Violation(f"{where} must be {word} {vv}, got {_short(value)}", desc)
    if v == "multipleOf":
        return Violation(f"{where} must be a multiple of {vv}, got {_short(value)}", desc)
    if v == "type":
        return Violation(f"{where} must be {schema_shape(err.schema)}, got {value_kind(value)}", desc)
    if v in ("enum", "const"):
        return Violation(f"{where} must be {schema_shape(err.schema)}, got {_short(value)}", desc)
    if v == "pattern":
        return Violation(f"{where} {_short(value)} is not in the required form",
                         desc or f"it must match {vv}")
    if v == "format":
        return Violation(f"{where} {_short(value)} is not a valid {vv}", desc)
    if v == "uniqueItems":
        return Violation(f"{where} lists the same item twice", "remove the repeated entry")
    if v == "required":
        names = [n for n in (vv or []) if n not in present]
        name = names[0] if names else "a key"
        return Violation(f"{where} needs '{name}'", _prop_help(err.schema, name))
    if v == "additionalProperties":
        allowed = list(err.schema.get("properties", {})) if isinstance(err.schema, dict) else []
        extra = [k for k in present if k not in allowed]
        return Violation(f"{where} has no key {_either(extra) if extra else 'like that'}",
                         ("its keys are: " + ", ".join(allowed)) if allowed else None,
                         key=extra[0] if extra else None)
    if v == "propertyNames":
        return Violation(f"{where} has a key that is not allowed", desc)
    if v == "false" or err.schema is False:
        return Violation(f"{where} is not allowed here", desc)
    return Violation(f"{where} is not valid here", desc or f"see the {v} rule of this value")
