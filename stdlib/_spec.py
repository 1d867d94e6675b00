"""The declaration of a module: its contract with the compiler and the kernel."""

from __future__ import annotations

import importlib
from functools import lru_cache
from typing import Any, Literal

from msgspec import Struct, field
from msgspec.structs import replace

#: Lifecycle names.  A module's ``lifecycles`` governs ``supervise`` and the ``event_driven``
#: *source* role only: every run-to-completion module may run under ``run_once``,
#: ``scheduled`` and as an ``event_driven`` instance (design.md section 10).
LIFECYCLES = ("run_once", "supervise", "event_driven", "scheduled")

#: How a module treats ``stream_inputs``: ``none`` (refuses them), ``optional`` (reads them when
#: given, drains otherwise), ``required`` (one or more), ``one`` (exactly one), ``two_or_more``.
StreamInput = Literal["none", "optional", "required", "one", "two_or_more"]


class ModuleSpec(Struct, frozen=True, kw_only=True):
    name: str  # "namespace:action", or a bare name such as "exec"
    layer: str  # "L1".."L6", or "X" for modules outside the layer model (test:*, stream:*)
    description: str  # one line
    lifecycles: tuple[str, ...] = ("run_once",)
    params_schema: dict[str, Any] = field(default_factory=dict)  # JSON Schema 2020-12
    summary_schema: dict[str, Any] = field(default_factory=dict)  # JSON Schema of the summary
    record_schema: dict[str, Any] | None = None  # records it emits; None = no output stream
    stream_input: StreamInput = "none"
    #: params evaluated once per stream record (record fields at the top of the scope), as
    #: dotted paths where ``*`` matches every list item: ``("template",)``, ``("on.*.template",)``
    per_record_params: tuple[str, ...] = ()
    #: for a module that reads no stream: the JSON Schema of the record its per-record params
    #: see over the state (None: its own summary, as ``http:request``'s ``success_when`` does)
    per_record_scope: dict[str, Any] | None = None
    #: a map param whose keys sit at the top of the per-record params' scope, over the state
    #: (template:render's ``vars``): the compiler types them from the playbook's map
    scope_param: str | None = None
    #: params that are condition expressions (operators may stand outside ``{{ }}``)
    condition_params: tuple[str, ...] = ()
    #: params that are workspace paths (contained at run time; literal escapes warn)
    path_params: tuple[str, ...] = ()
    #: params whose value shows up in the summary, logs or events (a secret there leaks)
    logged_params: tuple[str, ...] = ()
    #: params that must be literal (not templated), e.g. template:render's template
    literal_params: tuple[str, ...] = ()
    inline: bool = False  # pure, non-blocking, bounded: run inside the scheduler step
    #: no effects outside the run (records in, records out: the data:* transforms): its start
    #: need not wait for the durable commit of what ended before (gxo.runtime.durable)
    pure: bool = False
    implemented: bool = False  # False: declared only; `gxoc build` refuses it (not-implemented)
    #: ``summary_from_params``: the summary *is* the params map (control:identity)
    summary_from_params: bool = False
    #: a run-to-completion module that converges state (filesystem:manage): supervised, it is
    #: re-run every ``lifecycle.interval`` instead of being restarted
    reconciler: bool = False
    #: a boolean param that turns the output stream on (exec's ``stdout_records``): the module
    #: emits ``record_schema`` records only when the playbook sets it to a literal true
    records_param: str | None = None
    #: why ``perform`` must run in gxo's own process (a server that outlives it, a handle the
    #: run keeps), when the other metadata does not say it: a ``security_context`` cannot move
    #: the module into a sandboxed worker then (``gxo.runtime.support.worker_refusal``)
    in_process: str | None = None


_BUILTIN_NAMESPACES = (
    "gxo.stdlib.core",
    "gxo.stdlib.filesystem",
    "gxo.stdlib.control",
    "gxo.stdlib.connection",
    "gxo.stdlib.dns",
    "gxo.stdlib.http",
    "gxo.stdlib.ssh",
    "gxo.stdlib.data",
    "gxo.stdlib.database",
    "gxo.stdlib.template",
    "gxo.stdlib.stream",
    "gxo.stdlib.test",
)


_NAMESPACE_OF: dict[str, str] = {}


def _builtin_namespace(name: str) -> str | None:
    ns = name.split(":", 1)[0] if ":" in name else "core"
    modname = f"gxo.stdlib.{ns}"
    return modname if modname in _BUILTIN_NAMESPACES else None


_BUILTIN_SPECS: dict[str, ModuleSpec] = {}


def spec_of(name: str) -> ModuleSpec | None:
    """The declaration of module ``name``, importing only its namespace when it is built in
    (``registry()`` imports every namespace and scans entry points: ~10 ms at each start-up).
    A built-in's declaration is worked out once (the kernel asks for every workload's)."""
    spec = _BUILTIN_SPECS.get(name)
    if spec is not None:
        return spec
    modname = _builtin_namespace(name)
    if modname is not None:
        mod = importlib.import_module(modname)
        code = getattr(mod, "CODE", {})
        for spec in mod.MODULES:
            if spec.name == name:
                _NAMESPACE_OF[name] = modname
                if name in code and not spec.implemented:
                    spec = replace(spec, implemented=True)
                _BUILTIN_SPECS[name] = spec
                return spec
    return registry().get(name)


def namespace_of(name: str) -> str | None:
    """The Python module that declares (and holds the code of) module ``name``."""
    if name not in _NAMESPACE_OF:
        spec_of(name)
    return _NAMESPACE_OF.get(name)


@lru_cache(maxsize=1)
def registry() -> dict[str, ModuleSpec]:
    """All declared modules by name, built-ins first, then ``gxo.modules`` entry points."""
    specs: dict[str, ModuleSpec] = {}
    for modname in _BUILTIN_NAMESPACES:
        mod = importlib.import_module(modname)
        code = getattr(mod, "CODE", {})
        for spec in mod.MODULES:
            if spec.name in specs:
                raise RuntimeError(f"module {spec.name!r} declared twice")
            if spec.name in code and not spec.implemented:
                spec = replace(spec, implemented=True)
            specs[spec.name] = spec
            _NAMESPACE_OF[spec.name] = modname
    specs.update(_plugins(specs))
    return specs


#: Problems of installed plugins (an entry point that does not load, a name declared twice),
#: one line each: ``gxoc check`` shows them with an unknown module.
PLUGIN_PROBLEMS: list[str] = []


def _plugins(builtin: dict[str, ModuleSpec]) -> dict[str, ModuleSpec]:
    """Modules of the ``gxo.modules`` entry points (docs/modules/plugins.md).

    An entry point names a ``ModuleSpec`` or a list of them; the Python module that holds it
    also holds the ``CODE`` mapping (name -> class with ``perform``), as a built-in namespace
    does.  A declared module is runnable exactly when ``CODE`` has its class: the spec's own
    ``implemented`` flag is not trusted, so ``gxoc`` reports a declaration without code as
    ``not-implemented`` and never lets a plan name code that is not there."""
    from importlib.metadata import entry_points

    out: dict[str, ModuleSpec] = {}
    PLUGIN_PROBLEMS.clear()
    for ep in entry_points(group="gxo.modules"):
        where = f"plugin entry point '{ep.name} = {ep.value}'"
        try:
            loaded = ep.load()
            code = getattr(importlib.import_module(ep.module), "CODE", {})
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the compiler
            PLUGIN_PROBLEMS.append(f"{where} does not load: {type(exc).__name__}: {exc}")
            continue
        for spec in loaded if isinstance(loaded, (list, tuple)) else (loaded,):
            if not isinstance(spec, ModuleSpec):
                PLUGIN_PROBLEMS.append(f"{where} holds {type(spec).__name__}, not a ModuleSpec")
                continue
            if spec.name in builtin or spec.name in out:
                PLUGIN_PROBLEMS.append(f"{where}: module '{spec.name}' is already declared; ignored")
                continue
            cls = code.get(spec.name) if isinstance(code, dict) else None
            runnable = cls is not None and callable(getattr(cls, "perform", None))
            out[spec.name] = replace(spec, implemented=runnable)
            _NAMESPACE_OF[spec.name] = ep.module
    return out
