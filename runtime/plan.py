"""The plan IR: the contract between ``gxoc build`` and ``gxo exec``.

Everything the runtime needs is decided here by the compiler: resolved lifecycles and
policies, params as IR (literal JSON with ``{"$expr": id}`` where a templated string stood),
the dependency edges, topological levels, the channel topology, the taint map and the module
versions.  The IR is frozen, keyword-only msgspec ``Struct``s: adding a field is one line here.
Its JSON form (``manifest.json``) is canonical: sorted keys, UTF-8, 2-space indent, shortest
round-trip floats, tuples as lists, and no field that holds its default (``lean``: a 10,000-
workload plan is a third of the size it was with every field written, and the runtime reads,
digests, decodes and re-encodes it that much faster).
Each edge is stored once; every workload's ``deps`` and ``dependents`` are derived from the
edges when a plan is built or decoded.  Decoding is msgspec's, straight from the bytes into
the typed records and strict: an unknown or missing field, a wrong type, or another format
version is an error.

Format versions (bump on any change of the JSON shape; docs/plan-format.md has the table too):

=======  ==========================================================
version  change
=======  ==========================================================
1        first release: workloads, expressions, edges, channels
2        each edge once (``Workload.deps``/``dependents`` derived, not stored); msgspec's
         float spelling (``1e16``, not ``1e+16``); the fields added after 1 without a
         bump (when_per_item, on_failure, failure_watch, allowed_paths); the lifecycle
         keys added with defaults, so that a manifest without them still decodes
         (Lifecycle.healthy_after, interval, stop_timeout, timezone, overlap, misfire,
         concurrency)
3        a field that holds its default is left out (a no-op workload is ``name``, ``index``,
         ``module``, ``module_version``, ``lifecycle: {"policy": ...}``, ``params``,
         ``retry: {}`` and ``span``); the decoder fills it in; ``Workload.register_reads``;
         ``Expression.column``
=======  ==========================================================
"""

from __future__ import annotations

import gc
from typing import Any, ClassVar

import msgspec
from msgspec import Struct, field

FORMAT = "gxo-plan"
FORMAT_VERSION = 3
#: the edge kinds a workload waits for (a stream consumer starts with its producer)
ORDER_KINDS = frozenset(("needs", "on_failure", "state"))


class PlanFormatError(ValueError):
    """The manifest does not decode into this version's IR."""


class IR(Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """Base of the IR records: frozen; decoding refuses unknown fields; a field that holds its
    default is not written.  msgspec tells a default by identity (a decoded ``10.0`` is not the
    default's object), so the compiler passes its plan through ``lean`` first: what it writes
    has no field equal to its default, and decoding that text gives the default objects back,
    which encode to the same text."""


class SourceSpan(IR, kw_only=True):
    path: str  # relative to the playbook's folder (the playbook itself by its base name)
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}"


class Expression(IR, kw_only=True):
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
    #: a data:map template that spells a record of one field (``{"n": {{ int .line }}}``): its
    #: function returns that field's value, and the kernel's ``RecordFn`` says which field
    column: str = ""


class Backoff(IR, kw_only=True):
    base: float = 1.0
    cap: float = 60.0
    jitter: float = 0.1
    max_restarts: int = 5
    restart_window: float = 600.0


class Lifecycle(IR, kw_only=True):
    """How a workload runs: its policy and that policy's keys.

    Each key belongs to one policy (the compiler refuses it under another); under the other
    policies it keeps its default."""

    policy: str  # run_once | supervise | event_driven | scheduled
    restart: str | None = None  # supervise: always | on_failure | never; None = on_failure
    source: str | None = None  # event_driven: the producer whose records start instances
    cron: str | None = None  # scheduled: 5/6-field cron, an @alias or "@every DURATION"
    backoff: Backoff | None = None  # supervise
    healthy_after: float = 10.0  # supervise: seconds up after which the back-off resets
    interval: float | None = None  # supervise of a reconciler (filesystem:manage): seconds between runs
    stop_timeout: float = 10.0  # long-running: seconds between SIGTERM and SIGKILL (a handler's drain)
    timezone: str | None = None  # scheduled: IANA zone of the cron fields; None = the machine's
    overlap: str = "skip"  # scheduled: skip | queue | allow (a tick while an instance runs)
    misfire: str = "skip"  # scheduled: skip | run_once (ticks missed while gxo was down)
    concurrency: int = 8  # event_driven: instances at once


class Retry(IR, kw_only=True):
    attempts: int = 1
    delay: float = 1.0  # seconds
    max_delay: float | None = None
    backoff_factor: float = 1.0
    jitter: float = 0.0
    on_error: bool = True


class Workload(IR, kw_only=True, dict=True):
    """One workload.  ``deps`` and ``dependents`` are not stored: the plan derives them from its
    edges when it is built or decoded (see ``Plan.__post_init__``)."""

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
    #: the fields of the register that the plan's expressions read, sorted; None: it may be
    #: read whole.  A module's derived summary fields (exec's stdout_lines) that no expression
    #: reads are not computed (unless a sink takes every event: --json)
    register_reads: tuple[str, ...] | None = None
    ignore_errors: bool = False
    on_failure: tuple[str, ...] = ()  # run_once workloads that run only when this one fails for good
    failure_watch: tuple[str, ...] = ()  # deps whose failure this one waits for (its when reads it), sorted
    state_access: str = "deep_copy"  # deep_copy | unsafe_direct_reference
    skip_on_no_input: bool = False
    stream_inputs: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    level: int = 0  # topological level
    inline: bool = False  # pure, non-blocking module: run inside the scheduler step
    secret_params: tuple[str, ...] = ()  # param paths whose value carries a secret (taint map)
    security_context: Any = None  # JSON, as written
    #: security_context.seccomp_profile_path, read by gxoc build: {path, sha256, profile}
    #: (gxo.runtime.sandbox.profiles form); the run uses this copy, never the file
    seccomp_profile: Any = None
    allowed_paths: tuple[str, ...] = ()  # policy.allowed_paths: absolute dirs its path params may reach
    span: SourceSpan

    # Derived, never in the JSON: the plan that holds the workload sets them on the instance.
    deps: ClassVar[tuple[str, ...]] = ()  # every workload this one waits for (ORDER_KINDS edges), sorted
    dependents: ClassVar[tuple[str, ...]] = ()  # the reverse of deps, sorted


class Edge(IR, kw_only=True):
    source: str
    target: str
    kinds: tuple[str, ...]  # sorted subset of ("needs", "on_failure", "state", "stream")


class Channel(IR, kw_only=True):
    producer: str
    consumer: str
    capacity: int
    overflow: str  # block | drop_new | drop_oldest | error
    flush_interval: float = 0.05  # seconds a partial batch waits before it is sent anyway
    record_type: str = "any"  # the producer's record type as the compiler inferred it (for review)


class ModuleRef(IR, kw_only=True):
    name: str
    version: str
    schema_sha256: str  # digest of the canonical JSON of the module's declaration


class Source(IR, kw_only=True):
    path: str  # base name of the playbook
    sha256: str


class Plan(IR, kw_only=True, dict=True, omit_defaults=False):
    """The whole plan.  Its own fields are all written (``format`` and ``format_version`` say
    what the text is, whatever reads it); the records inside leave their defaults out."""

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

    def __post_init__(self) -> None:
        """Derive every workload's ``deps`` and ``dependents`` from the edges, in one pass (the
        manifest stores each edge once); refuse duplicate names and edges to unknown workloads."""
        deps: dict[str, list[str]] = {w.name: [] for w in self.workloads}
        if len(deps) != len(self.workloads):
            names = [w.name for w in self.workloads]
            dup = next(n for n in names if names.count(n) > 1)
            raise ValueError(f"workloads: the name '{dup}' appears twice")
        dependents: dict[str, list[str]] = {name: [] for name in deps}
        # the names in deps/dependents are the workloads' own string objects: the kernel's
        # lookups by them then compare by identity
        own = {name: name for name in deps}
        for e in self.edges:
            source, target = own.get(e.source), own.get(e.target)
            if source is None or target is None:
                raise ValueError(f"edges: {e.source} -> {e.target} names an unknown workload")
            if not ORDER_KINDS.isdisjoint(e.kinds):
                deps[target].append(source)
                dependents[source].append(target)
        for w in self.workloads:
            d = w.__dict__
            d["deps"] = _sorted_tuple(deps[w.name])
            d["dependents"] = _sorted_tuple(dependents[w.name])
        self.__dict__["_by_name"] = {w.name: w for w in self.workloads}

    def workload(self, name: str) -> Workload:
        """The workload named ``name`` (KeyError when there is none)."""
        by_name: dict[str, Workload] = self.__dict__["_by_name"]
        return by_name[name]


def lean(obj: Any) -> Any:
    """``obj`` (IR) with every field that equals its default holding the default object itself,
    at every depth, so that ``encode_manifest`` leaves it out: the compiler's canonical form.
    Equal means the same type and ``==`` (``1`` is not the default ``1.0``, nor ``0`` ``False``).
    A record is made again only where something changed (a plan's ``__post_init__`` runs)."""
    if isinstance(obj, tuple):
        items = tuple(lean(v) for v in obj)
        return obj if all(a is b for a, b in zip(items, obj)) else items
    if not isinstance(obj, Struct):
        return obj
    changed = False
    values: dict[str, Any] = {}
    for name, default in _defaults(type(obj)):
        old = getattr(obj, name)
        new = lean(old)
        if default is not msgspec.NODEFAULT and new is not default and type(new) is type(default) and new == default:
            new = default
        changed = changed or new is not old
        values[name] = new
    return type(obj)(**values) if changed else obj


_DEFAULTS: dict[type, tuple[tuple[str, Any], ...]] = {}


def _defaults(cls: type) -> tuple[tuple[str, Any], ...]:
    """(name, default) of each field of the record type ``cls``: ``msgspec.structs.fields``
    (which reflects over the type hints: slow), once per type."""
    out = _DEFAULTS.get(cls)
    if out is None:
        out = _DEFAULTS[cls] = tuple((f.name, f.default) for f in msgspec.structs.fields(cls))
    return out


def _sorted_tuple(names: list[str]) -> tuple[str, ...]:
    # most workloads have no or one edge each way: no sort for those
    return (names[0],) if len(names) == 1 else tuple(sorted(names)) if names else ()


# ---------------------------------------------------------------------------------------------
# Canonical JSON: the manifest's text is ``encode_manifest(plan)``, byte for byte


_encoder = msgspec.json.Encoder(order="sorted")
_decoder: msgspec.json.Decoder[Plan] | None = None


def canonical_json(obj: Any, *, pretty: bool = False) -> str:
    """The canonical text of IR or JSON data: sorted keys, UTF-8, shortest round-trip floats;
    ``pretty`` (2-space indent and a newline) for members, goldens and review.  A non-finite
    float would be written as ``null``: the compiler refuses those before (``check_finite``)."""
    raw = _encoder.encode(obj)
    if pretty:
        raw = msgspec.json.format(raw, indent=2) + b"\n"
    return raw.decode("utf-8")


def encode_manifest(plan: Plan) -> bytes:
    """``manifest.json``: the plan's canonical pretty JSON, UTF-8."""
    return msgspec.json.format(_encoder.encode(plan), indent=2) + b"\n"


def to_data(obj: Any) -> Any:
    """The JSON-able form of an IR value with every field, defaults included (records to dicts,
    tuples to lists): what ``gxoc diff`` compares."""
    if isinstance(obj, Struct):
        return {name: to_data(getattr(obj, name)) for name in obj.__struct_fields__}
    if isinstance(obj, (tuple, list)):
        return [to_data(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_data(v) for k, v in obj.items()}
    return obj


def check_finite(value: Any, where: str) -> None:
    """Refuse NaN and infinities in IR data (JSON has no spelling for them)."""
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{where}: {value!r} cannot be written in a plan (JSON has no NaN or infinity)")
    elif isinstance(value, dict):
        for k, v in value.items():
            check_finite(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_finite(v, f"{where}[{i}]")
    elif isinstance(value, Struct):
        for name in value.__struct_fields__:
            check_finite(getattr(value, name), f"{where}.{name}")


class _Header(Struct):
    format: Any = None
    format_version: Any = None


def decode_plan(raw: bytes | str) -> Plan:
    """Decode ``manifest.json`` strictly into the IR (msgspec, one pass over the text; types
    checked, unknown or missing fields refused); raises ``PlanFormatError`` with the field's
    path.  Whether ``raw`` is the canonical text is the caller's check (``encode_manifest``)."""
    global _decoder
    if _decoder is None:
        _decoder = msgspec.json.Decoder(Plan)
    # the plan is a tree of fresh objects that all stay alive: collecting while they are made
    # would only scan them again and again (a third of the time for 10,000 workloads)
    gc_on = gc.isenabled()
    gc.disable()
    try:
        plan = _decoder.decode(raw)
    except msgspec.ValidationError as exc:
        _check_header(raw)
        raise PlanFormatError(_located(str(exc))) from None
    except msgspec.DecodeError:
        raise PlanFormatError("manifest: not valid JSON (damaged)") from None
    finally:
        if gc_on:
            gc.enable()
    if plan.format != FORMAT or plan.format_version != FORMAT_VERSION:
        _check_header(raw)
    return plan


def _check_header(raw: bytes | str) -> None:
    try:
        head = msgspec.json.decode(raw, type=_Header)
    except msgspec.DecodeError:
        raise PlanFormatError("manifest: expected an object") from None
    if head.format != FORMAT:
        raise PlanFormatError(f"manifest: not a GXO plan (format {head.format!r})")
    if head.format_version != FORMAT_VERSION:
        raise PlanFormatError(
            f"manifest: plan format version {head.format_version!r}; this gxo reads version {FORMAT_VERSION}"
        )


def _located(message: str) -> str:
    """msgspec's ``Expected int, got str - at `$.workloads[0].index``` as ``manifest.workloads[0].index: ...``."""
    text, sep, where = message.rpartition(" - at `")
    if not sep:
        text, where = message, "$`"
    path = "manifest" + where.rstrip("`").removeprefix("$")
    return f"{path}: {text.replace('`', chr(39))}"


def expr_id(value: Any) -> str | None:
    """The expression id of an IR node ``{"$expr": id}``, else None."""
    if isinstance(value, dict) and len(value) == 1 and "$expr" in value:
        v = value["$expr"]
        return v if isinstance(v, str) else None
    return None
