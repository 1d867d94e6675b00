"""Generate schemas/plan.schema.json from the plan IR (gxo.runtime.plan).

The IR's records (msgspec ``Struct``s) are the single source: each becomes a ``$defs`` entry
with its fields (``required`` = fields without a default), ``additionalProperties: false``.  ``--check`` exits 1
when the committed schema is stale.
"""

from __future__ import annotations

import json
import sys
import types
import typing
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "schemas" / "plan.schema.json"


def _type(tp: typing.Any, defs: dict) -> dict:
    origin = typing.get_origin(tp)
    if tp is typing.Any:
        return {}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_type(a, defs) for a in typing.get_args(tp)]}
    if tp is type(None):
        return {"type": "null"}
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": _type(args[0], defs)}
        return {"type": "array", "prefixItems": [_type(a, defs) for a in args], "minItems": len(args),
                "maxItems": len(args)}
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        _define(tp, defs)
        return {"$ref": f"#/$defs/{tp.__name__}"}
    return {"type": {str: "string", int: "integer", float: "number", bool: "boolean"}[tp]}


def _define(cls: type, defs: dict) -> None:
    if cls.__name__ in defs:
        return
    defs[cls.__name__] = {}
    props, required = {}, []
    for f in msgspec.structs.fields(cls):
        props[f.name] = _type(f.type, defs)
        if f.required:
            required.append(f.name)
    doc = (cls.__dict__.get("__doc__") or cls.__name__).strip().split("\n")[0]
    defs[cls.__name__] = {"type": "object", "description": doc, "properties": props, "required": required,
                          "additionalProperties": False}


def render() -> str:
    from gxo.runtime import plan as P

    defs: dict = {}
    _define(P.Plan, defs)
    root = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://gxo.dev/schemas/plan/v{P.FORMAT_VERSION}.json",
        "title": "GXO plan manifest (manifest.json of a .gxp)",
        "description": "Generated from gxo.runtime.plan by tools/gen_plan_schema.py; do not edit.",
        "$ref": "#/$defs/Plan",
        "$defs": dict(sorted(defs.items())),
    }
    root["$defs"]["Plan"]["properties"]["format"] = {"const": P.FORMAT}
    root["$defs"]["Plan"]["properties"]["format_version"] = {"const": P.FORMAT_VERSION}
    return json.dumps(root, indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        if not OUT.exists() or OUT.read_text("utf-8") != text:
            print("schemas/plan.schema.json is stale: run python tools/gen_plan_schema.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
