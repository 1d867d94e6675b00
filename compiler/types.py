"""Static types of the expression language and their derivation from JSON Schemas.

Types: ``str int float bool null any list[T] map{field: T} dict[T]`` and unions.  ``map`` is
a record with known fields (``open`` when the schema allows more); ``dict`` is a string-keyed
mapping of one value type.  ``any`` defers every check to run time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True, slots=True)
class Type:
    """Base of every static type."""

    def __str__(self) -> str:  # pragma: no cover - overridden
        return "?"


@dataclass(frozen=True, slots=True)
class Prim(Type):
    name: str  # one of str, int, float, bool, null, any

    def __str__(self) -> str:
        return self.name


ANY = Prim("any")
STR = Prim("str")
INT = Prim("int")
FLOAT = Prim("float")
BOOL = Prim("bool")
NULL = Prim("null")


@dataclass(frozen=True, slots=True)
class ListT(Type):
    elem: Type = ANY

    def __str__(self) -> str:
        return f"list[{self.elem}]"


@dataclass(frozen=True, slots=True)
class MapT(Type):
    """A record: known fields (in declaration order) and whether others may appear."""

    fields: tuple[tuple[str, Type], ...] = ()
    open: bool = False

    def field(self, name: str) -> Type | None:
        for key, value in self.fields:
            if key == name:
                return value
        return None

    def names(self) -> list[str]:
        return [key for key, _ in self.fields]

    def __str__(self) -> str:
        inner = ", ".join(f"{k}: {v}" for k, v in self.fields)
        if self.open:
            inner = f"{inner}, ..." if inner else "..."
        return "map{" + inner + "}"


@dataclass(frozen=True, slots=True)
class DictT(Type):
    value: Type = ANY

    def __str__(self) -> str:
        return f"dict[{self.value}]"


@dataclass(frozen=True, slots=True)
class UnionT(Type):
    options: tuple[Type, ...] = ()

    def __str__(self) -> str:
        return " | ".join(str(o) for o in self.options)


NUMERIC = (INT, FLOAT)


def union(types: Iterable[Type]) -> Type:
    """The union of ``types``, flattened and deduplicated; ``any`` absorbs everything."""
    out: list[Type] = []
    for t in types:
        parts = t.options if isinstance(t, UnionT) else (t,)
        for p in parts:
            if p == ANY:
                return ANY
            if p not in out:
                out.append(p)
    if not out:
        return ANY
    if len(out) == 1:
        return out[0]
    return UnionT(tuple(out))


def options(t: Type) -> tuple[Type, ...]:
    return t.options if isinstance(t, UnionT) else (t,)


def is_any(t: Type) -> bool:
    return t == ANY


def _kind(t: Type) -> str:
    if isinstance(t, Prim):
        return "number" if t in NUMERIC else t.name
    if isinstance(t, ListT):
        return "list"
    return "map"  # MapT and DictT


def comparable(a: Type, b: Type) -> bool:
    """Whether ``==``/``<`` between values of these types can ever be meaningful."""
    if is_any(a) or is_any(b):
        return True
    ka = {_kind(x) for x in options(a)}
    kb = {_kind(x) for x in options(b)}
    if "any" in ka or "any" in kb:
        return True
    if ka & kb:
        return True
    # comparing with null is always allowed (optional values)
    return "null" in ka or "null" in kb


def assignable(src: Type, dst: Type) -> bool:
    """Whether a value of type ``src`` may be used where ``dst`` is expected."""
    if is_any(src) or is_any(dst):
        return True
    if isinstance(src, UnionT):
        # a union is acceptable when at least one option is: the rest is a run-time check
        return any(assignable(o, dst) for o in src.options)
    if isinstance(dst, UnionT):
        return any(assignable(src, o) for o in dst.options)
    if isinstance(dst, Prim):
        if dst == FLOAT:
            return src in NUMERIC
        return isinstance(src, Prim) and src == dst
    if isinstance(dst, ListT):
        return isinstance(src, ListT) and assignable(src.elem, dst.elem)
    if isinstance(dst, (MapT, DictT)):
        return isinstance(src, (MapT, DictT))
    return False


def of_value(value: object) -> Type:
    """The type of a literal Python value (from YAML or an expression literal)."""
    if value is None:
        return NULL
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int):
        return INT
    if isinstance(value, float):
        return FLOAT
    if isinstance(value, str):
        return STR
    if isinstance(value, list):
        return ListT(union(of_value(v) for v in value) if value else ANY)
    if isinstance(value, dict):
        return MapT(tuple((str(k), of_value(v)) for k, v in value.items()), open=False)
    return ANY


_PRIM_BY_SCHEMA = {
    "string": STR,
    "integer": INT,
    "number": FLOAT,
    "boolean": BOOL,
    "null": NULL,
}


def from_schema(schema: object) -> Type:
    """Derive a static type from a JSON Schema fragment (the subset the module schemas use)."""
    if not isinstance(schema, dict) or not schema:
        return ANY
    for key in ("oneOf", "anyOf"):
        if key in schema:
            return union(from_schema(s) for s in schema[key])
    if "const" in schema:
        return of_value(schema["const"])
    if "enum" in schema:
        return union(of_value(v) for v in schema["enum"])
    t = schema.get("type")
    if isinstance(t, list):
        return union(from_schema({**schema, "type": one}) for one in t)
    if t in _PRIM_BY_SCHEMA:
        return _PRIM_BY_SCHEMA[t]
    if t == "array":
        return ListT(from_schema(schema.get("items", {})))
    if t == "object" or "properties" in schema:
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        if not props:
            if isinstance(extra, dict):
                return DictT(from_schema(extra))
            return DictT(ANY) if extra is not False else MapT((), open=False)
        fields = tuple((name, from_schema(sub)) for name, sub in props.items())
        return MapT(fields, open=extra is not False)
    return ANY


def text_type_ok(t: Type) -> bool:
    """Every value has a text form, so anything may appear inside a template's text."""
    return True
