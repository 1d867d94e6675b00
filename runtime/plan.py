"""The plan IR: the contract between ``gxoc build`` and ``gxo exec``.

Everything the runtime needs is decided here by the compiler: resolved lifecycles and
policies, params as IR (literal JSON with ``{"$expr": id}`` where a templated string stood),
the dependency edges with in-degrees, topological levels, the channel topology, the taint map
and the module versions.  The IR is frozen, slotted, keyword-only dataclasses; its JSON form
(``manifest.json``) is canonical: sorted keys, UTF-8, no NaN, tuples as lists.  Decoding is
strict: an unknown or missing field, or another format version, is an error.

Format versions (bump on any change of the JSON shape):

=======  ==========================================================
version  change
=======  ==========================================================
1        first release: workloads, expressions, edges, channels
=======  ==========================================================
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any

FORMAT = "gxo-plan"
FORMAT_VERSION = 1


class PlanFormatError(ValueError):
    """The manifest does not decode into this version's IR."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceSpan:
    path: str  # relative to the playbook's folder (the playbook itself by its base name)
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Expression:
    """One compiled expression: the function ``e<N>`` of ``plan_code.py``."""

    id: str  # "e0", "e1", ... in source order
    workload: str  # owning workload ("" for vars)
    where: str  # "when", "loop", "params.args[0]", "vars.x"
    mode: str  # "template" | "condition"
    native: bool  # the string is exactly one action: the value keeps its type
    as_text: bool  # the param's schema says string: convert the value to its text form
    per_record: bool  # evaluated once per stream record (record fields at the top)
    secret: bool  # tainted: its value depends on a secret (directly, through vars, registers, functions)
    span: SourceSpan
    text: str = ""  # the expression's source text, for messages, `gxoc show` and `gxoc diff`


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    base: float = 1.0
    cap: float = 60.0
    jitter: float = 0.1
    max_restarts: int = 5
    restart_window: float = 600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Lifecycle:
    policy: str  # run_once | supervise | event_driven | scheduled
    restart: str | None = None  # supervise: always | on_failure | never
    source: str | None = None  # event_driven
    cron: str | None = None  # scheduled
    backoff: Backoff | None = None  # supervise


@dataclass(frozen=True, slots=True, kw_only=True)
class Retry:
    attempts: int = 1
    delay: float = 1.0  # seconds
    max_delay: float | None = None
    backoff_factor: float = 1.0
    jitter: float = 0.0
    on_error: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Workload:
    name: str
    index: int  # position in the playbook
    module: str
    module_version: str
    lifecycle: Lifecycle
    params: Any  # IR: JSON with {"$expr": id} for templates, {"$lit": v} escaping a literal "$expr" map
    when: str | None = None  # expression id
    when_per_item: bool = False  # the when reads the loop variable: evaluated once per item
    disabled: bool = False  # a literal `when: false`: the workload always ends Skipped
    loop: Any = None  # IR (literal list, or {"$expr": id}); None = no loop
    loop_var: str = "item"
    loop_parallel: int = 1
    retry: Retry = field(default_factory=Retry)
    timeout: float | None = None  # seconds; None = none
    register: str | None = None
    ignore_errors: bool = False
    on_failure: tuple[str, ...] = ()  # run_once workloads that run only when this one fails for good
    failure_watch: tuple[str, ...] = ()  # deps whose failure this one waits for (its when reads it), sorted
    state_access: str = "deep_copy"  # deep_copy | unsafe_direct_reference
    skip_on_no_input: bool = False
    stream_inputs: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    deps: tuple[str, ...] = ()  # every workload this one waits for (state + needs edges), sorted
    dependents: tuple[str, ...] = ()  # the reverse of deps, sorted
    level: int = 0  # topological level
    inline: bool = False  # pure, non-blocking module: run inside the scheduler step
    secret_params: tuple[str, ...] = ()  # param paths whose value carries a secret (taint map)
    security_context: Any = None  # JSON, as written
    allowed_paths: tuple[str, ...] = ()  # policy.allowed_paths: absolute dirs its path params may reach
    span: SourceSpan


@dataclass(frozen=True, slots=True, kw_only=True)
class Edge:
    source: str
    target: str
    kinds: tuple[str, ...]  # sorted subset of ("needs", "on_failure", "state", "stream")


@dataclass(frozen=True, slots=True, kw_only=True)
class Channel:
    producer: str
    consumer: str
    capacity: int
    overflow: str  # block | drop_new | drop_oldest | error
    flush_interval: float = 0.05  # seconds a partial batch waits before it is sent anyway
    record_type: str = "any"  # the producer's record type as the compiler inferred it (for review)


@dataclass(frozen=True, slots=True, kw_only=True)
class ModuleRef:
    name: str
    version: str
    schema_sha256: str  # digest of the canonical JSON of the module's declaration


@dataclass(frozen=True, slots=True, kw_only=True)
class Source:
    path: str  # base name of the playbook
    sha256: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    compiler_version: str
    name: str  # the playbook's name
    source: Source
    vars: Any  # IR, like params
    var_types: tuple[tuple[str, str], ...]  # var -> compiled type (for --var checks)
    workloads: tuple[Workload, ...]
    edges: tuple[Edge, ...]
    levels: tuple[tuple[str, ...], ...]
    channels: tuple[Channel, ...]
    expressions: tuple[Expression, ...]
    modules: tuple[ModuleRef, ...]
    max_concurrency: int | None = None  # workload_policy.max_concurrency; None = engine default
    allowed_paths: tuple[str, ...] = ()  # workload_policy.allowed_paths (every workload's)
    plan_code_sha256: str

    def workload(self, name: str) -> Workload:
        for w in self.workloads:
            if w.name == name:
                return w
        raise KeyError(name)


# ---------------------------------------------------------------------------------------------
# Canonical JSON


def to_data(obj: Any) -> Any:
    """The JSON-able form of an IR value (dataclasses to dicts, tuples to lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_data(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [to_data(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_data(v) for k, v in obj.items()}
    return obj


def canonical_json(obj: Any, *, pretty: bool = False) -> str:
    """The canonical text: sorted keys, UTF-8, no NaN; ``pretty`` for goldens and review."""
    data = to_data(obj)
    if pretty:
        return json.dumps(data, sort_keys=True, ensure_ascii=False, allow_nan=False, indent=2) + "\n"
    return json.dumps(data, sort_keys=True, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _decode(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return _freeze(value)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _decode(arg, value, where)
            except PlanFormatError as exc:
                errors.append(str(exc))
        raise PlanFormatError(errors[0] if errors else f"{where}: unexpected null")
    if origin is tuple:
        if not isinstance(value, list):
            raise PlanFormatError(f"{where}: expected a list")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise PlanFormatError(f"{where}: expected {len(args)} items")
        return tuple(_decode(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise PlanFormatError(f"{where}: expected an object")
        hints = typing.get_type_hints(tp)
        fields = {f.name: f for f in dataclasses.fields(tp)}
        unknown = set(value) - set(fields)
        if unknown:
            raise PlanFormatError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        kwargs = {}
        for name, f in fields.items():
            if name not in value:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise PlanFormatError(f"{where}: missing field '{name}'")
                continue
            kwargs[name] = _decode(hints[name], value[name], f"{where}.{name}")
        return tp(**kwargs)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PlanFormatError(f"{where}: expected a number")
        return float(value)
    if tp in (int, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise PlanFormatError(f"{where}: expected {tp.__name__}")
        return value
    raise PlanFormatError(f"{where}: unsupported type {tp!r}")


def _freeze(value: Any) -> Any:
    """JSON values as they are (lists stay lists: params are handed to modules as data)."""
    return value


def decode_plan(data: Any) -> Plan:
    """Decode a parsed manifest strictly; raises ``PlanFormatError`` with the field's path."""
    if not isinstance(data, dict):
        raise PlanFormatError("manifest: expected an object")
    if data.get("format") != FORMAT:
        raise PlanFormatError(f"manifest: not a GXO plan (format {data.get('format')!r})")
    if data.get("format_version") != FORMAT_VERSION:
        raise PlanFormatError(
            f"manifest: plan format version {data.get('format_version')!r}; this gxo reads version {FORMAT_VERSION}"
        )
    return _decode(Plan, data, "manifest")


def expr_id(value: Any) -> str | None:
    """The expression id of an IR node ``{"$expr": id}``, else None."""
    if isinstance(value, dict) and len(value) == 1 and "$expr" in value:
        v = value["$expr"]
        return v if isinstance(v, str) else None
    return None
