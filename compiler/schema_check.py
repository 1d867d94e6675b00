"""A fast yes/no check of a plain value against the playbook schema, for the common valid case.

The schema is compiled once into nested closures covering the keywords it uses; the check says
exactly whether the value is valid, or raises ``Unsure`` where its answer could differ from
jsonschema's (a float where an integer is allowed, a list of non-strings under
``uniqueItems``...).  jsonschema is run only when this check fails or is unsure: it alone
explains the errors, so every diagnostic stays as jsonschema words it.
"""

from __future__ import annotations

import re
from typing import Any, Callable

Check = Callable[[Any], bool]


class Unsure(Exception):
    """The fast check cannot tell; ask jsonschema."""


class Unsupported(Exception):
    """The schema uses a keyword the fast check does not implement."""


_IGNORED = {"description", "default", "examples", "title", "$comment", "$schema", "$id", "$defs",
            "deprecated", "readOnly", "writeOnly"}


def _is_int(x: Any) -> bool:
    if type(x) is int:
        return True
    if isinstance(x, float):
        raise Unsure  # 1.0 counts as an integer for jsonschema: let it decide
    return isinstance(x, int) and not isinstance(x, bool)


_TYPES: dict[str, Check] = {
    "object": lambda x: isinstance(x, dict),
    "array": lambda x: isinstance(x, list),
    "string": lambda x: isinstance(x, str),
    "integer": _is_int,
    "number": lambda x: isinstance(x, (int, float)) and not isinstance(x, bool),
    "boolean": lambda x: isinstance(x, bool),
    "null": lambda x: x is None,
}


def _same(a: Any, b: Any) -> bool:
    """jsonschema's equality where it is plain ``==`` (a string on either side)."""
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    raise Unsure


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


class Compiler:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.refs: dict[str, Check] = {}

    def ref(self, target: str) -> Check:
        if not target.startswith("#/$defs/") or "/" in target[len("#/$defs/"):]:
            raise Unsupported(target)
        name = target[len("#/$defs/"):]
        if name not in self.root.get("$defs", {}):
            raise Unsupported(target)
        if name not in self.refs:
            self.refs[name] = _unset
            self.refs[name] = self.compile(self.root["$defs"][name])
        refs = self.refs
        return lambda x: refs[name](x)

    def compile(self, schema: Any) -> Check:
        if schema is True:
            return lambda x: True
        if schema is False:
            return lambda x: False
        if not isinstance(schema, dict):
            raise Unsupported(repr(schema))
        checks: list[Check] = []
        for key, arg in schema.items():
            if key in _IGNORED or key in ("then", "else"):
                continue
            make = getattr(self, "k_" + key.lstrip("$"), None)
            if make is None:
                raise Unsupported(key)
            checks.append(make(arg, schema))
        if not checks:
            return lambda x: True
        if len(checks) == 1:
            return checks[0]
        return lambda x: all(c(x) for c in checks)

    # keywords -------------------------------------------------------------------------------

    def k_format(self, arg: Any, schema: dict) -> Check:
        """``format: regex`` (the module schemas' only checked format): a pattern RE2 compiles,
        as jsonschema's format checker of the params asks; any other format is not checked."""
        if arg != "regex":
            return lambda x: True

        def check(x: Any) -> bool:
            if not isinstance(x, str):
                return True
            from gxo.runtime import regex

            try:
                regex.compile(x)
            except regex.RegexError:
                return False
            return True
        return check

    def k_ref(self, arg: str, schema: dict) -> Check:
        return self.ref(arg)

    def k_type(self, arg: Any, schema: dict) -> Check:
        names = arg if isinstance(arg, list) else [arg]
        try:
            tests = [_TYPES[n] for n in names]
        except KeyError as exc:
            raise Unsupported(f"type {exc}") from None
        if len(tests) == 1:
            return tests[0]
        return lambda x: any(t(x) for t in tests)

    def k_enum(self, arg: list, schema: dict) -> Check:
        return lambda x: any(_same(x, v) for v in arg)

    def k_const(self, arg: Any, schema: dict) -> Check:
        return lambda x: _same(x, arg)

    def k_minimum(self, arg: Any, schema: dict) -> Check:
        return lambda x: not _number(x) or not x < arg

    def k_maximum(self, arg: Any, schema: dict) -> Check:
        return lambda x: not _number(x) or not x > arg

    def k_minLength(self, arg: int, schema: dict) -> Check:
        return lambda x: not isinstance(x, str) or len(x) >= arg

    def k_maxLength(self, arg: int, schema: dict) -> Check:
        return lambda x: not isinstance(x, str) or len(x) <= arg

    def k_minProperties(self, arg: int, schema: dict) -> Check:
        return lambda x: not isinstance(x, dict) or len(x) >= arg

    def k_maxProperties(self, arg: int, schema: dict) -> Check:
        return lambda x: not isinstance(x, dict) or len(x) <= arg

    def k_maxItems(self, arg: int, schema: dict) -> Check:
        return lambda x: not isinstance(x, list) or len(x) <= arg

    def k_contains(self, arg: Any, schema: dict) -> Check:
        each = self.compile(arg)
        low = schema.get("minContains", 1)
        high = schema.get("maxContains")

        def contains(x: Any) -> bool:
            if not isinstance(x, list):
                return True
            n = sum(1 for v in x if each(v))
            return n >= low and (high is None or n <= high)

        return contains

    def k_minContains(self, arg: int, schema: dict) -> Check:
        return lambda x: True  # part of `contains`

    k_maxContains = k_minContains

    def k_pattern(self, arg: str, schema: dict) -> Check:
        search = re.compile(arg).search
        return lambda x: not isinstance(x, str) or search(x) is not None

    def k_minItems(self, arg: int, schema: dict) -> Check:
        return lambda x: not isinstance(x, list) or len(x) >= arg

    def k_uniqueItems(self, arg: bool, schema: dict) -> Check:
        if not arg:
            return lambda x: True

        def unique(x: Any) -> bool:
            if not isinstance(x, list) or len(x) < 2:
                return True
            if not all(type(v) is str or type(v) is int for v in x):
                raise Unsure  # booleans and floats: jsonschema's equality is not Python's
            return len(set(x)) == len(x)

        return unique

    def k_required(self, arg: list, schema: dict) -> Check:
        return lambda x: not isinstance(x, dict) or all(k in x for k in arg)

    def k_properties(self, arg: dict, schema: dict) -> Check:
        props = {k: self.compile(v) for k, v in arg.items()}

        def properties(x: Any) -> bool:
            if not isinstance(x, dict):
                return True
            for k, v in x.items():
                c = props.get(k)
                if c is not None and not c(v):
                    return False
            return True

        return properties

    def k_additionalProperties(self, arg: Any, schema: dict) -> Check:
        if "patternProperties" in schema:
            raise Unsupported("patternProperties")
        known = set(schema.get("properties", {}))
        extra = self.compile(arg)

        def additional(x: Any) -> bool:
            if not isinstance(x, dict):
                return True
            return all(extra(v) for k, v in x.items() if k not in known)

        return additional

    def k_items(self, arg: Any, schema: dict) -> Check:
        if "prefixItems" in schema or not isinstance(arg, (dict, bool)):
            raise Unsupported("items")
        each = self.compile(arg)
        return lambda x: not isinstance(x, list) or all(each(v) for v in x)

    def k_not(self, arg: Any, schema: dict) -> Check:
        inner = self.compile(arg)
        return lambda x: not inner(x)

    def k_allOf(self, arg: list, schema: dict) -> Check:
        subs = [self.compile(s) for s in arg]
        return lambda x: all(s(x) for s in subs)

    def k_anyOf(self, arg: list, schema: dict) -> Check:
        subs = [self.compile(s) for s in arg]
        return lambda x: any(s(x) for s in subs)

    def k_oneOf(self, arg: list, schema: dict) -> Check:
        subs = [self.compile(s) for s in arg]
        return lambda x: sum(1 for s in subs if s(x)) == 1

    def k_if(self, arg: Any, schema: dict) -> Check:
        cond = self.compile(arg)
        then = self.compile(schema.get("then", True))
        other = self.compile(schema.get("else", True))
        return lambda x: then(x) if cond(x) else other(x)

    def k_dependentSchemas(self, arg: dict, schema: dict) -> Check:
        deps = {k: self.compile(v) for k, v in arg.items()}
        return lambda x: not isinstance(x, dict) or all(c(x) for k, c in deps.items() if k in x)

    def k_dependentRequired(self, arg: dict, schema: dict) -> Check:
        return lambda x: not isinstance(x, dict) or all(
            all(r in x for r in req) for k, req in arg.items() if k in x)


def _unset(x: Any) -> bool:  # a $ref used while its target is being compiled: never called
    raise Unsure


def compile_schema(schema: dict[str, Any]) -> Check | None:
    """The fast check for ``schema``; None when it uses a keyword this module does not know."""
    try:
        return Compiler(schema).compile(schema)
    except Unsupported:
        return None


def is_valid(check: Check | None, instance: Any) -> bool | None:
    """True/False when the fast check is sure of its answer, else None."""
    if check is None:
        return None
    try:
        return bool(check(instance))
    except (Unsure, RecursionError):
        return None
