"""Shared JSON Schema fragments (draft 2020-12) for the module declarations.

Plain dicts only: this file is imported by the runtime, so it never imports jsonschema.
Every helper returns a *fresh* dict, so no two declarations share a mutable fragment.

Conventions that the compiler's type derivation (``gxo.compiler.types.from_schema``) relies on:

- no ``$ref``/``$defs``: fragments are inlined;
- an object's fields are listed directly under ``properties``; cross-field rules (exactly one
  of, if/then) are wrapped in ``allOf`` so that they never hide the object's own type (a
  top-level ``oneOf`` would be read as a union of the branches);
- every property carries a ``description`` (the module reference is generated from them).

Dry runs: a module with side effects or outside I/O declares an optional ``dry_run`` key in its
summary; in a dry run it returns every required key with an empty or zero value plus
``dry_run: true`` (checklist 2.15), so templates type-check the same in both modes.
"""

from __future__ import annotations

import re
from typing import Any

Schema = dict[str, Any]

#: Go duration syntax, as for the workload's ``timeout`` (checklist 1.3).
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"
#: ``register`` names, step ids, loop variables.
IDENTIFIER_PATTERN = r"^[a-zA-Z_][a-zA-Z0-9_]*$"
#: A module name as used in ``process.module`` or a pipeline step's ``uses`` (third-party names
#: such as ``my-org:onboard-developer`` included).
MODULE_REF_PATTERN = r"^[A-Za-z0-9_-]+(:[A-Za-z0-9_-]+)?$"
#: File permission bits written as an octal string: ``"644"``, ``"0644"``, ``"0755"``, ``"1777"``.
OCTAL_MODE_PATTERN = r"^0?[0-7]{3,4}$"
#: ``KEY=VALUE`` environment entries (the value may be empty or templated).
ENV_ENTRY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*="
#: ``host:port`` or ``:port``, IPv6 hosts in brackets.
ADDRESS_PATTERN = r"^(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]*):[0-9]{1,5}$"

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")

_TEMPLATE_MARKERS = re.compile(r"\{\{|\$\{")


def is_templated(value: object) -> bool:
    """Whether a param value is a string holding a template (``{{ ... }}`` or ``${NAME}``).

    Such values are only known at run time, so the compiler checks them by type, not against
    the literal constraints (pattern, enum, range) of the schema.
    """
    return isinstance(value, str) and _TEMPLATE_MARKERS.search(value) is not None


# --------------------------------------------------------------------------- scalars


def _with(schema: Schema, description: str, extra: dict[str, Any]) -> Schema:
    schema["description"] = description
    for key, value in extra.items():
        if value is not None:
            schema[key] = value
    return schema


def string(description: str, **extra: Any) -> Schema:
    """A string; ``extra`` may add ``default``, ``enum``, ``pattern``, ``minLength``..."""
    return _with({"type": "string"}, description, extra)


def nonempty(description: str, **extra: Any) -> Schema:
    return string(description, minLength=1, **extra)


def enum(description: str, values: tuple[str, ...] | list[str], **extra: Any) -> Schema:
    return string(description, enum=list(values), **extra)


def integer(description: str, **extra: Any) -> Schema:
    return _with({"type": "integer"}, description, extra)


def number(description: str, **extra: Any) -> Schema:
    return _with({"type": "number"}, description, extra)


def boolean(description: str, **extra: Any) -> Schema:
    return _with({"type": "boolean"}, description, extra)


def const_true(description: str) -> Schema:
    return {"type": "boolean", "const": True, "description": description}


def any_value(description: str, **extra: Any) -> Schema:
    """Any JSON value (the type checker reads it as ``any``)."""
    return _with({}, description, extra)


def duration(description: str, **extra: Any) -> Schema:
    """A Go-style duration string such as ``"5s"``, ``"1m30s"``, ``"250ms"``."""
    return string(description, pattern=DURATION_PATTERN, **extra)


def identifier(description: str, **extra: Any) -> Schema:
    return string(description, pattern=IDENTIFIER_PATTERN, **extra)


def address(description: str, **extra: Any) -> Schema:
    return string(description, pattern=ADDRESS_PATTERN, **extra)


def port(description: str, **extra: Any) -> Schema:
    return integer(description, minimum=1, maximum=65535, **extra)


def file_mode(description: str, **extra: Any) -> Schema:
    """Permission bits: an octal string (``"0644"``) or an integer (YAML ``0o644``)."""
    schema: Schema = {
        "anyOf": [
            {"type": "string", "pattern": OCTAL_MODE_PATTERN},
            {"type": "integer", "minimum": 0, "maximum": 0o7777},
        ]
    }
    return _with(schema, description, extra)


def owner_ref(description: str) -> Schema:
    """A user or group: a name or a numeric id."""
    return {
        "anyOf": [{"type": "string", "minLength": 1}, {"type": "integer", "minimum": 0}],
        "description": description,
    }


def condition(description: str) -> Schema:
    """A condition expression (a string; a literal boolean is accepted as well)."""
    return {"type": ["string", "boolean"], "description": description}


def template_text(description: str, **extra: Any) -> Schema:
    """Template text: a string, parsed at compile time."""
    return string(description, **extra)


def connection_id(description: str = "Id of a connection opened by connection:open, "
                  "connection:listen or ssh:connect.") -> Schema:
    return nonempty(description)


# --------------------------------------------------------------------------- containers


def array(items: Schema, description: str, **extra: Any) -> Schema:
    return _with({"type": "array", "items": items}, description, extra)


def string_list(
    description: str,
    item_description: str | None = None,
    *,
    item_pattern: str | None = None,
    **extra: Any,
) -> Schema:
    item: Schema = {"type": "string"}
    if item_pattern:
        item["pattern"] = item_pattern
    if item_description:
        item["description"] = item_description
    return array(item, description, **extra)


def string_map(description: str, **extra: Any) -> Schema:
    """A map of string to string (headers, nesting keys)."""
    return _with(
        {"type": "object", "additionalProperties": {"type": "string"}}, description, extra
    )


def open_object(description: str, **extra: Any) -> Schema:
    """A map with any keys and values."""
    return _with({"type": "object"}, description, extra)


def obj(
    properties: dict[str, Schema],
    description: str | None = None,
    *,
    required: tuple[str, ...] | list[str] = (),
    rules: list[Schema] | None = None,
    **extra: Any,
) -> Schema:
    """A closed object; ``rules`` (exactly-one-of, if/then...) go under ``allOf``."""
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    schema["additionalProperties"] = False
    if rules:
        schema["allOf"] = rules
    if description is not None:
        schema["description"] = description
    for key, value in extra.items():
        if value is not None:
            schema[key] = value
    return schema


def params(
    properties: dict[str, Schema] | None = None,
    *,
    required: tuple[str, ...] | list[str] = (),
    rules: list[Schema] | None = None,
) -> Schema:
    """A module's ``params_schema``: a closed object."""
    return obj(properties or {}, required=required, rules=rules)


def summary(
    properties: dict[str, Schema],
    *,
    optional: tuple[str, ...] = (),
    dry_run: bool = False,
) -> Schema:
    """A module's ``summary_schema``: closed; every key required except ``optional`` ones.

    ``dry_run=True`` adds the optional ``dry_run`` marker of a simulated run.
    """
    props = dict(properties)
    opt = list(optional)
    if dry_run:
        props["dry_run"] = boolean("Present and true when the run was a dry run (no side "
                                   "effects; the other keys hold empty or zero values).")
        opt.append("dry_run")
    return obj(props, required=[k for k in props if k not in opt])


def record(properties: dict[str, Schema]) -> Schema:
    """The ``record_schema`` of a producer with a fixed record shape (closed, all required)."""
    return obj(properties, required=list(properties))


def open_record() -> Schema:
    """Records of any shape, or whose shape the compiler infers (``data:map``...)."""
    return {"type": "object"}


# --------------------------------------------------------------------------- rules


def exactly_one_of(*names: str) -> Schema:
    """Exactly one of these keys must be present (use inside ``rules``)."""
    return {"oneOf": [{"required": [name]} for name in names]}


def at_most_one_of(*names: str) -> Schema:
    """No two of these keys may be present together (use inside ``rules``)."""
    pairs = [[a, b] for i, a in enumerate(names) for b in names[i + 1:]]
    return {"not": {"anyOf": [{"required": pair} for pair in pairs]}}


def when_equals(key: str, value: Any, then: Schema) -> Schema:
    """If ``key`` is present and equals ``value``, apply ``then`` (use inside ``rules``)."""
    return {"if": {"required": [key], "properties": {key: {"const": value}}}, "then": then}


def when_present(key: str, then: Schema) -> Schema:
    """If ``key`` is present, apply ``then`` (use inside ``rules``)."""
    return {"if": {"required": [key]}, "then": then}


# --------------------------------------------------------------------------- shared shapes


def stat_properties() -> dict[str, Schema]:
    """The fields of filesystem:stat's summary and filesystem:list's records."""
    return {
        "path": string("Absolute path of the entry."),
        "size": integer("Size in bytes.", minimum=0),
        "mode": string("Permission bits as an octal string, e.g. \"0755\".",
                       pattern=OCTAL_MODE_PATTERN),
        "is_dir": boolean("Whether the entry is a directory."),
        "modified_time": string("Last modification time, RFC 3339.", format="date-time"),
    }


def command_result_properties(lines: bool) -> dict[str, Schema]:
    """``{stdout, stderr[, stdout_lines], exit_code}`` of exec and ssh:command/script."""
    props: dict[str, Schema] = {
        "stdout": string("Standard output as text, trailing newlines removed."),
        "stderr": string("Standard error as text, trailing newlines removed."),
    }
    if lines:
        props["stdout_lines"] = string_list("Standard output split into lines.")
    props["exit_code"] = integer("Exit status of the command (-1 when it could not start).")
    return props
