"""Phase ``resolve``: names, modules, lifecycles and stream rules; then types and references.

Checks that every name is defined once, every module is declared and allowed under its
lifecycle, and every ``stream_inputs`` link can carry records; then type-checks every
expression site (``typecheck``) with the scope it runs in and collects its references, from
which ``graph`` infers the state edges.
"""

from __future__ import annotations

import json
import posixpath
from collections import ChainMap
from dataclasses import dataclass, field
from typing import Any

from gxo.compiler import types as T
from gxo.compiler.diagnostics import Diagnostics, Note, did_you_mean
from gxo.compiler.expr import ast
from gxo.compiler.expr.parser import is_templated
from gxo.compiler.loader import MapNode, ScalarNode, YNode, to_plain, walk_path
from gxo.compiler.model import ExprSite, Playbook, Step, Workload
from gxo.compiler.records import RecordTypes
from gxo.compiler.typecheck import Ref, Scope, check_site
from gxo.runtime.support import APPLIED_SECURITY_KEYS, worker_refusal
from gxo.stdlib import registry

#: consumers that only wait for their inputs' end-of-stream: any workload may feed them
_WAITS_ONLY = {"control:barrier"}
_POLICIES = ("run_once", "supervise", "event_driven", "scheduled")
_LEGACY_MODULES = {"generate:from_list": "data:generate_from_list", "stream:join": "data:join"}


@dataclass
class Analysis:
    playbook: Playbook
    by_name: dict[str, Workload]
    by_register: dict[str, Workload]
    refs: dict[str, list[Ref]] = field(default_factory=dict)  # workload name -> refs
    when_refs: dict[str, list[Ref]] = field(default_factory=dict)  # workload name -> refs of its when
    site_types: dict[int, T.Type] = field(default_factory=dict)  # id(site) -> type
    site_refs: dict[int, list[Ref]] = field(default_factory=dict)  # id(site) -> its references (taint)
    register_types: dict[str, T.Type] = field(default_factory=dict)
    record_types: RecordTypes | None = None


def resolve(pb: Playbook, diags: Diagnostics) -> Analysis:
    by_name: dict[str, Workload] = {}
    by_register: dict[str, Workload] = {}
    for w in pb.workloads:
        if w.name_node is not None:
            if w.name in by_name:
                first = by_name[w.name]
                diags.add("duplicate-name", f"workload name '{w.name}' is used twice", w.name_node.span,
                          help="workload names must be unique; rename one",
                          notes=[Note("first used here", first.name_node.span if first.name_node else None)])
            else:
                by_name[w.name] = w
    for w in pb.workloads:
        if w.register is None or w.register_node is None:
            continue
        if w.register.startswith("_gxo"):
            diags.add("reserved-name", f"register '{w.register}' is in the reserved _gxo namespace",
                      w.register_node.span, help="the _gxo namespace is written by the kernel only; pick another name")
            continue
        if w.register in by_register:
            first = by_register[w.register]
            diags.add("duplicate-register", f"register '{w.register}' is used by two workloads",
                      w.register_node.span, help="each workload must register under its own key",
                      notes=[Note(f"first registered by '{first.name}'", first.register_node.span if first.register_node else None)])
            continue
        if w.register in pb.vars:
            diags.add("duplicate-register", f"register '{w.register}' has the same name as a var",
                      w.register_node.span, help="rename the register or the var; a reference could mean either")
            continue
        by_register[w.register] = w
    _check_reserved(pb, diags)
    an = Analysis(pb, by_name, by_register)
    for w in pb.workloads:
        _check_module(w, diags)
        _check_lifecycle(w, an, diags)
        _check_records_param(w, diags)
        _check_runnable(w, diags)
        _check_links(w, an, diags)
        _check_on_failure(w, an, diags)
        _check_steps(w, diags)
    an.record_types = RecordTypes(an, diags)
    _register_types(an)
    _check_sites(an, diags)
    return an


# ---------------------------------------------------------------------------------------------


def _check_reserved(pb: Playbook, diags: Diagnostics) -> None:
    """Vars, loop variables and step registers may not shadow the kernel's `_gxo`."""
    help_text = "the _gxo namespace is written by the kernel only; pick another name"
    if pb.vars_node is not None:
        for k, _ in pb.vars_node.items:
            if isinstance(k.value, str) and k.value.startswith("_gxo"):
                diags.add("reserved-name", f"var '{k.value}' is in the reserved _gxo namespace", k.span, help=help_text)
    for w in pb.workloads:
        lc = w.node.get("loop_control")
        lv = lc.get("loop_var") if isinstance(lc, MapNode) else None
        if isinstance(lv, ScalarNode) and isinstance(lv.value, str) and lv.value.startswith("_gxo"):
            diags.add("reserved-name", f"loop_var '{lv.value}' is in the reserved _gxo namespace", lv.span, help=help_text)
        for st in w.steps:
            if st.register and st.register.startswith("_gxo") and st.register_node is not None:
                diags.add("reserved-name", f"step register '{st.register}' is in the reserved _gxo namespace",
                          st.register_node.span, help=help_text)


def _check_module(w: Workload, diags: Diagnostics) -> None:
    if w.module_node is None or not w.module:
        return
    if w.spec is None:
        if w.module in _LEGACY_MODULES:
            help_text = f"the module was renamed: write '{_LEGACY_MODULES[w.module]}'"
        else:
            help_text = did_you_mean(w.module, registry()) or "see docs/modules/ for the declared modules"
        from gxo.stdlib._spec import PLUGIN_PROBLEMS

        notes = [Note(problem) for problem in PLUGIN_PROBLEMS]
        diags.add("unknown-module", f"unknown module '{w.module}'", w.module_node.span, help=help_text, notes=notes)


_NOT_IN_RELEASE_HELP = "gxoc check accepts only what gxo can run; see docs/modules/index.md for the modules that run"

def _check_runnable(w: Workload, diags: Diagnostics) -> None:
    """`not-implemented` for what this release's runtime cannot do: a declared-only module
    (or pipeline step), a security_context key.  Never run another way."""
    if w.spec is not None and not w.spec.implemented and w.module_node is not None:
        diags.add("not-implemented", f"module '{w.module}' is declared but its code is not in this release",
                  w.module_node.span, help=_NOT_IN_RELEASE_HELP)
    for st in w.steps:
        if st.spec is not None and not st.spec.implemented and st.uses_node is not None:
            diags.add("not-implemented", f"module '{st.uses}' is declared but its code is not in this release",
                      st.uses_node.span, help=_NOT_IN_RELEASE_HELP)
    loop_key = w.node.key_node("loop") if isinstance(w.node, MapNode) else None
    if loop_key is not None and w.policy in ("supervise", "scheduled", "event_driven"):
        diags.add("not-implemented", f"'loop' under lifecycle policy {w.policy} is not in this release: gxo "
                  "runs a loop only in a run_once workload", loop_key.span,
                  help="loop in a run_once workload, or declare one long-running workload per item")
    sc = w.node.get("security_context")
    if isinstance(sc, MapNode):
        for k, _ in sc.items:
            if isinstance(k.value, str) and k.value not in APPLIED_SECURITY_KEYS:
                diags.add("not-implemented", f"security_context.{k.value} is not implemented: this release cannot "
                          "apply it to the process", k.span,
                          help="remove the key; gxo refuses to run the workload without the sandbox it asks for")
        sc_key = w.node.key_node("security_context")
        keys = [k.value for k, _ in w.params_node.items] if w.params_node is not None else []
        why = worker_refusal(w.spec, keys, [k.value for k, _ in sc.items]) if w.module else None
        if why is not None and sc_key is not None:
            diags.add("not-implemented", f"security_context on module '{w.module}' is not implemented: it cannot "
                      f"run in a sandboxed worker process: {why}", sc_key.span,
                      help="remove the security_context, or run the work as an exec child")
        seccomp = sc.get("seccomp")
        if isinstance(seccomp, ScalarNode) and seccomp.value == "unconfined":
            diags.add("seccomp-unconfined", "seccomp: unconfined runs this workload's child process without a "
                      "seccomp filter (not even the baseline)", seccomp.span,
                      help="drop it to keep the baseline profile, or name a profile with seccomp_profile_path")


def _key_span(node: MapNode, *path: str):
    cur: YNode | None = node
    for p in path[:-1]:
        cur = cur.get(p) if isinstance(cur, MapNode) else None
    if isinstance(cur, MapNode):
        k = cur.key_node(path[-1])
        return k.span if k else None
    return None


#: each lifecycle key and the policy it belongs to ("long-running": any but run_once)
LIFECYCLE_KEYS = {
    "restart": "supervise", "backoff": "supervise", "healthy_after": "supervise", "interval": "supervise",
    "stop_timeout": "long-running",
    "source": "event_driven", "concurrency": "event_driven",
    "cron": "scheduled", "timezone": "scheduled", "overlap": "scheduled", "misfire": "scheduled",
}
_CRON_HELP = ('5 fields (minute hour day-of-month month day-of-week), 6 with seconds first, '
              '@hourly/@daily/@weekly/@monthly/@yearly or @every DURATION, e.g. "30 2 * * *", '
              '"0 */10 * * * *", "@every 90s"')


def emits_records(w: Workload) -> bool:
    """Whether ``w`` has an output stream: its module declares records, and a module whose
    records are switched on by a param (exec's ``stdout_records``) has it set to literal true."""
    spec = w.spec
    if spec is None or spec.record_schema is None:
        return False
    if spec.records_param is None:
        return True
    node = w.params_node.get(spec.records_param) if isinstance(w.params_node, MapNode) else None
    return isinstance(node, ScalarNode) and node.value is True


def _check_records_param(w: Workload, diags: Diagnostics) -> None:
    """The param that turns a module's output stream on is decided at compile time: the channels
    of the plan depend on it, so a template there is an error."""
    param = w.spec.records_param if w.spec is not None else None
    node = w.params_node.get(param) if param and isinstance(w.params_node, MapNode) else None
    if isinstance(node, ScalarNode) and isinstance(node.value, str) and is_templated(node.value):
        diags.add("invalid-value", f"'{param}' must be a literal true or false, not a template", node.span,
                  help="whether the workload streams records decides the plan's channels when it is compiled")


def _check_lifecycle(w: Workload, an: Analysis, diags: Diagnostics) -> None:
    life = w.node.get("lifecycle")
    if not isinstance(life, MapNode):
        return
    pol = w.policy
    for key, needed in LIFECYCLE_KEYS.items():
        k = life.key_node(key)
        if needed == "long-running":
            if k is not None and pol == "run_once":
                diags.add("lifecycle-unsupported", f"'{key}' applies only to the long-running policies "
                          "(supervise, scheduled, event_driven), not run_once", k.span,
                          help=f"remove '{key}': a run_once workload is cancelled at once when the run stops")
            continue
        if k is not None and pol != needed and pol in _POLICIES:
            diags.add("lifecycle-unsupported", f"'{key}' applies only to policy {needed}, not {pol}", k.span,
                      help=f"remove '{key}', or set policy: {needed}")
    for needed_key, pol_name in (("source", "event_driven"), ("cron", "scheduled")):
        if pol == pol_name and life.get(needed_key) is None:
            span = w.policy_node.span if w.policy_node else life.span
            diags.add("invalid-value", f"policy {pol_name} needs lifecycle.{needed_key}", span,
                      help="name the producer whose records start instances" if needed_key == "source"
                      else "give a schedule: " + _CRON_HELP)
    cron = life.get("cron")
    if pol == "scheduled" and isinstance(cron, ScalarNode) and isinstance(cron.value, str) and cron.value:
        from gxo.runtime.lifecycles.cron import ScheduleError, parse_schedule

        try:
            parse_schedule(cron.value)
        except ScheduleError as exc:
            end = exc.end if exc.end is not None else len(cron.value)
            diags.add("invalid-value", f"cron '{cron.value}': {exc.message}", cron.sub_span(exc.start, end),
                      help=_CRON_HELP)
    tz = life.get("timezone")
    if pol == "scheduled" and isinstance(tz, ScalarNode) and isinstance(tz.value, str) and tz.value:
        from gxo.runtime.lifecycles.cron import zone_named

        try:
            zone_named(tz.value)
        except ValueError as exc:
            import zoneinfo

            diags.add("invalid-value", f"timezone: {exc}", tz.span,
                      help=did_you_mean(tz.value, sorted(zoneinfo.available_timezones()))
                      or "an IANA time zone name such as UTC, Europe/Berlin or America/New_York")
    interval_key = life.key_node("interval")
    if pol == "supervise" and interval_key is not None and w.spec is not None and not w.spec.reconciler:
        reconcilers = ", ".join(sorted(n for n, sp in registry().items() if sp.reconciler))
        diags.add("lifecycle-unsupported", f"'interval' re-runs a reconciler; module '{w.module}' is supervised as "
                  "a long-running process, restarted per restart/backoff", interval_key.span,
                  help=f"remove 'interval'; modules that reconcile on an interval: {reconcilers}")
    elif pol == "supervise" and interval_key is not None:
        iv = life.get("interval")
        if isinstance(iv, ScalarNode) and isinstance(iv.value, str):
            from gxo.runtime.durations import parse_duration

            try:
                if parse_duration(iv.value) <= 0:
                    diags.add("invalid-value", "lifecycle.interval must be longer than 0s", iv.span,
                              help="the time between two runs of the reconciler, e.g. interval: 30s")
            except ValueError:
                pass  # not a duration: reported by the schema
    if pol == "supervise" and w.spec is not None and "supervise" not in w.spec.lifecycles:
        diags.add("lifecycle-unsupported", f"module '{w.module}' runs to completion and cannot be supervised",
                  w.module_node.span if w.module_node else w.node.span,
                  help=f"use policy run_once or scheduled; modules that can be supervised: {_supervisable()}")
    if w.source is not None and pol == "event_driven":
        name, node = w.source
        src = an.by_name.get(name)
        if src is None:
            diags.add("undefined-name", f"source '{name}' is not a workload", node.span,
                      help=did_you_mean(name, an.by_name) or None)
        elif name == w.name:
            diags.add("dependency-cycle", f"workload '{w.name}' is its own event source", node.span)
        elif src.spec is not None and not emits_records(src):
            records_param = src.spec.records_param
            diags.add("stream-input", f"source '{name}' ({src.module}) produces no records to start instances from",
                      node.span,
                      help=f"set {records_param}: true in the params of '{name}' to make records of its output"
                      if records_param else "an event source must be a stream producer such as connection:listen")
        elif src.spec is not None and "event_driven" not in src.spec.lifecycles:
            diags.add("lifecycle-unsupported", f"'{name}' ({src.module}) cannot be an event source",
                      node.span, help="event sources are long-running producers: "
                      + ", ".join(sorted(n + (f" (with {sp.records_param}: true)" if sp.records_param else "")
                                         for n, sp in registry().items() if "event_driven" in sp.lifecycles
                                         and sp.record_schema is not None)))


def _supervisable() -> str:
    return ", ".join(sorted(n for n, s in registry().items() if "supervise" in s.lifecycles))


def _check_links(w: Workload, an: Analysis, diags: Diagnostics) -> None:
    seen: set[str] = set()
    for name, node in w.needs:
        if name == w.name:
            diags.add("dependency-cycle", f"workload '{w.name}' needs itself", node.span)
        elif name not in an.by_name:
            diags.add("undefined-name", f"needs: '{name}' is not a workload", node.span,
                      help=did_you_mean(name, an.by_name) or None)
    for name, node in w.stream_inputs:
        if name in seen:
            continue
        seen.add(name)
        if name == w.name:
            diags.add("stream-input", f"workload '{w.name}' lists itself in stream_inputs", node.span,
                      help="a workload cannot consume its own stream")
            continue
        prod = an.by_name.get(name)
        if prod is None:
            diags.add("undefined-name", f"stream input '{name}' is not a workload", node.span,
                      help=did_you_mean(name, an.by_name) or None)
        elif prod.spec is not None and not emits_records(prod) and w.module not in _WAITS_ONLY:
            records_param = prod.spec.records_param if prod.spec.record_schema is not None else None
            diags.add("stream-input", f"'{name}' ({prod.module}) produces no stream", node.span,
                      help=f"set {records_param}: true in the params of '{name}' to stream its output"
                      if records_param else "stream_inputs must name producers such as data:generate_from_list, "
                      "data:parse, filesystem:list, passthrough or data:map")
    if w.spec is None:
        return
    n = len({n for n, _ in w.stream_inputs})
    kind = w.spec.stream_input
    key = w.node.key_node("stream_inputs")
    where = key.span if key is not None else (w.module_node.span if w.module_node else w.node.span)
    if kind == "none" and n:
        diags.add("stream-input", f"module '{w.module}' takes no stream inputs", where,
                  help="remove stream_inputs, or pass data through state with register/templates")
    elif kind == "required" and not n:
        diags.add("stream-input", f"module '{w.module}' needs stream_inputs", where,
                  help="name the producer(s) it reads: stream_inputs: [producer]")
    elif kind == "one" and n != 1:
        diags.add("stream-input", f"module '{w.module}' reads exactly one stream input, got {n}", where,
                  help="put a passthrough in front to merge several streams" if n > 1 else "add stream_inputs: [producer]")
    elif kind == "two_or_more" and n < 2:
        diags.add("stream-input", f"module '{w.module}' needs at least two stream inputs, got {n}", where)
    if w.module == "http:listen":
        _check_http_listen_source(w, an, n, where, diags)
    if w.module == "data:join" and w.params_node is not None:
        on = w.params_node.get("on")
        inputs = {n for n, _ in w.stream_inputs}
        for item in getattr(on, "items", []):
            s = item.get("stream") if isinstance(item, MapNode) else None
            if isinstance(s, ScalarNode) and isinstance(s.value, str) and s.value not in inputs:
                diags.add("stream-input", f"join side '{s.value}' is not one of this workload's stream_inputs",
                          s.span, help=did_you_mean(s.value, inputs) or "list it in stream_inputs")


def _check_http_listen_source(w: Workload, an: Analysis, n: int, where: Any, diags: Diagnostics) -> None:
    """http:listen: its own `address`, or one connection:listen (tcp) stream input (design.md §3)."""
    address = w.params_node.get("address") if isinstance(w.params_node, MapNode) else None
    if address is not None and n:
        diags.add("stream-input", "http:listen takes its own 'address' or a connection:listen stream input, "
                  "not both", where, help="remove 'address' to serve the listener's connections, or remove "
                  "stream_inputs")
    elif address is None and not n:
        diags.add("invalid-value", "http:listen needs an 'address' or a connection:listen stream input",
                  w.module_node.span if w.module_node else w.node.span,
                  help='give it address: ":8080", or stream_inputs: [a connection:listen workload]')
    elif n > 1:
        diags.add("stream-input", f"http:listen reads one connection:listen stream input, got {n}", where)
    for name, node in w.stream_inputs:
        prod = an.by_name.get(name)
        if prod is not None and prod.module != "connection:listen":
            diags.add("stream-input", f"http:listen reads connections from a connection:listen workload; "
                      f"'{name}' is {prod.module}", node.span,
                      help="name a connection:listen workload (network: tcp) in stream_inputs")
        elif prod is not None and isinstance(prod.params_node, MapNode):
            net = prod.params_node.get("network")
            if isinstance(net, ScalarNode) and net.value == "udp":
                diags.add("stream-input", f"http:listen serves TCP connections; '{name}' listens on udp",
                          node.span, help="set network: tcp on the listener")


def _check_on_failure(w: Workload, an: Analysis, diags: Diagnostics) -> None:
    """``on_failure`` names other run_once workloads of the playbook (cycles: ``graph``)."""
    for name, node in w.on_failure:
        target = an.by_name.get(name)
        if name == w.name:
            diags.add("dependency-cycle", f"workload '{w.name}' names itself in on_failure", node.span,
                      help="on_failure names other workloads, run when this one fails")
        elif target is None:
            diags.add("undefined-name", f"on_failure: '{name}' is not a workload", node.span,
                      help=did_you_mean(name, an.by_name) or None)
        elif target.policy != "run_once":
            diags.add("lifecycle-unsupported", f"on_failure: '{name}' has policy {target.policy}; "
                      "only run_once workloads can run on a failure", node.span,
                      help=f"give '{name}' lifecycle.policy: run_once, or remove it from on_failure")


def _check_steps(w: Workload, diags: Diagnostics) -> None:
    ids: dict[str, ScalarNode] = {}
    for st in w.steps:
        if st.id_node is not None:
            if st.id in ids:
                diags.add("duplicate-name", f"step id '{st.id}' is used twice in this pipeline", st.id_node.span,
                          notes=[Note("first used here", ids[st.id].span)])
            ids.setdefault(st.id, st.id_node)
        if st.uses_node is not None and st.spec is None and st.uses:
            from gxo.stdlib._spec import PLUGIN_PROBLEMS

            diags.add("unknown-module", f"unknown module '{st.uses}'", st.uses_node.span,
                      help=did_you_mean(st.uses, registry()) or None, notes=[Note(p) for p in PLUGIN_PROBLEMS])
    order = {st.id: i for i, st in enumerate(w.steps)}
    for i, st in enumerate(w.steps):
        for name, node in st.needs:
            if name not in ids:
                diags.add("undefined-name", f"step '{name}' is not defined in this pipeline", node.span,
                          help=did_you_mean(name, ids) or None)
            elif name == st.id:
                diags.add("dependency-cycle", f"step '{st.id}' needs itself", node.span)
            elif order[name] > i:  # steps run in order: a need names an earlier step
                diags.add("undefined-name", f"step '{st.id}' needs '{name}', which comes after it", node.span,
                          help=f"steps run in order; move step '{name}' above step '{st.id}'")
        _check_step_inputs(st, diags)


def _check_step_inputs(st: Step, diags: Diagnostics) -> None:
    """A join step reads the steps in its `needs` as separate streams: two or more of them, and
    its sides are among them.  (Any other data step reads its needs merged into one stream.)"""
    if st.spec is None or not (st.uses.startswith("data:") or st.uses == "passthrough"):
        return
    n = max(1, len(st.needs))
    where = st.uses_node.span if st.uses_node is not None else (st.id_node.span if st.id_node else None)
    if where is None:
        return
    if st.spec.stream_input == "two_or_more" and n < 2:
        diags.add("stream-input", f"step '{st.id}' ({st.uses}) reads two or more streams, got {n}", where,
                  help="name the steps it joins in needs, e.g. needs: [users, events]")
    if st.uses == "data:join" and st.with_node is not None and len(st.needs) >= 2:
        sides = {name for name, _ in st.needs}
        on = st.with_node.get("on")
        for item in getattr(on, "items", []):
            s = item.get("stream") if isinstance(item, MapNode) else None
            if isinstance(s, ScalarNode) and isinstance(s.value, str) and s.value not in sides:
                diags.add("stream-input", f"join side '{s.value}' is not in the needs of step '{st.id}'",
                          s.span, help=did_you_mean(s.value, sides) or "list it in the step's needs")


# ---------------------------------------------------------------------------------------------
# Types of registers and sites


def _register_types(an: Analysis) -> None:
    for name, w in an.by_register.items():
        if w.spec is None:
            t: T.Type = T.ANY
        elif w.spec.summary_from_params:
            t = T.of_value(to_plain(w.params_node)) if w.params_node is not None else T.MapT(())
            if any(s.param_path is not None for s in w.exprs):
                t = _open_templated(t)
        else:
            t = T.from_schema(w.spec.summary_schema)
        t = _with_outcome(t)
        an.register_types[name] = T.ListT(t) if w.is_looped else t


#: what the kernel adds to every registered summary: whether the workload failed, and why
_OUTCOME = (("failed", T.BOOL), ("error", T.union((T.STR, T.NULL))))


def _with_outcome(t: T.Type) -> T.Type:
    if not isinstance(t, T.MapT):
        return t
    own = [(k, v) for k, v in t.fields if k not in ("failed", "error")]
    return T.MapT(tuple(own) + _OUTCOME, open=t.open)


def _open_templated(t: T.Type) -> T.Type:
    """control:identity with templated params: field types are only known at run time."""
    if isinstance(t, T.MapT):
        return T.MapT(tuple((k, _open_templated(v) if not isinstance(v, T.Prim) else (T.ANY if v == T.STR else v))
                            for k, v in t.fields), open=False)
    return t


def _gxo_type(an: Analysis) -> T.Type:
    status = T.MapT((("status", T.STR),))
    wl = T.MapT(tuple((n, status) for n in an.by_name))
    return T.MapT((
        ("workloads", wl),
        ("workspace", T.MapT((("path", T.STR),))),
        ("plan_dir", T.STR),
        ("playbook", T.MapT((("id", T.STR), ("name", T.STR)))),
        ("run", T.MapT((("id", T.STR),))),
        ("resume_payload", T.ANY),
    ))


def _base_names(an: Analysis) -> dict[str, tuple[T.Type, str]]:
    names: dict[str, tuple[T.Type, str]] = {}
    for k, v in an.playbook.vars.items():
        names[k] = (T.of_value(v) if not (isinstance(v, str) and ("{{" in v or "${" in v)) else T.ANY, "var")
    for k, t in an.register_types.items():
        names[k] = (t, "register")
    names["_gxo"] = (_gxo_type(an), "gxo")
    return names


def _loop_elem(w: Workload, an: Analysis) -> T.Type:
    node = w.loop_node
    if node is None:
        return T.ANY
    if isinstance(node, ScalarNode) and isinstance(node.value, str):
        t = next((an.site_types.get(id(s)) for s in w.exprs if s.where == "loop"), None) or T.ANY
        if isinstance(t, T.ListT):
            return t.elem
        if isinstance(t, T.DictT):
            return t.value
        if isinstance(t, T.MapT):
            return T.union(v for _, v in t.fields) if t.fields and not t.open else T.ANY
        return T.ANY
    t = T.of_value(to_plain(node))
    return t.elem if isinstance(t, T.ListT) else T.ANY


def _check_sites(an: Analysis, diags: Diagnostics) -> None:
    base = _base_names(an)
    var_scope = Scope({k: v for k, v in base.items() if v[1] == "var"})
    for site in an.playbook.var_exprs:
        res = check_site(site, var_scope, diags)
        an.site_types[id(site)] = res.type
        an.site_refs[id(site)] = res.refs
    for w in an.playbook.workloads:
        refs: list[Ref] = []
        # `loop` first: the loop variable's type comes from it
        # and a module's own template after the params that lay its scope (template:render)
        own = w.spec is not None and w.spec.scope_param is not None
        ordered = sorted(w.exprs, key=lambda s: (s.where != "loop", own and s.per_record))
        for site in ordered:
            scope = _scope_for(w, site, an, base)
            res = check_site(site, scope, diags)
            an.site_types[id(site)] = res.type
            an.site_refs[id(site)] = res.refs
            refs.extend(res.refs)
            if site.where == "when":
                an.when_refs[w.name] = list(res.refs)
            _check_secrets(w, site, res.secrets, diags)
            _check_param_type(w, site, res.type, diags)
            if site.where == "loop" and not _iterable(res.type):
                diags.add("type-mismatch", f"loop must be a list or a mapping, but the expression gives {res.type}",
                          site.node.span, help="loop over a list (or a mapping's values), e.g. loop: \"{{ .hosts }}\"")
        _check_literal_params(w, diags)
        _check_paths(w, diags, an.playbook)
        _check_sql(w, diags)
        an.refs[w.name] = refs


def _iterable(t: T.Type) -> bool:
    return any(o == T.ANY or isinstance(o, (T.ListT, T.MapT, T.DictT)) for o in T.options(t))


def _scope_for(w: Workload, site: ExprSite, an: Analysis, base: dict) -> Scope:
    # the site's own names over the shared base, without copying the base (every register of
    # the playbook) once per site; iterated, it lists the base's names first, like a copy
    names: Any = ChainMap({}, base)
    if w.is_looped and site.where != "loop":
        names[w.loop_var] = (_loop_elem(w, an), "loop")
    if site.step is not None or (w.module == "stream:pipeline" and site.per_record):
        for st in w.steps:
            names.setdefault(st.id, (T.ANY, "step"))
            if st.register:
                names.setdefault(st.register, (T.ANY, "step"))
        rec = an.record_types.input_type(w) if an.record_types else T.ANY
        return Scope(names, open=True, record=None if rec == T.ANY else None)
    if site.per_record and w.spec is not None and w.spec.scope_param is not None:
        # a module's own template (template:render): its map param over the state (and over
        # an event-driven instance's event record)
        if w.policy == "event_driven" and w.source is not None:
            rec = an.record_types.input_type(w) if an.record_types else T.ANY
            if not isinstance(rec, T.MapT) or rec.open:
                return Scope(names, open=True)
            for k, v in rec.fields:
                names[k] = (v, "record")
        return _param_scope(w, w.spec.scope_param, an, names)
    if w.policy == "event_driven" and w.source is not None and not site.per_record:
        # an event-driven instance sees its event record's fields at the top, over the state
        rec = an.record_types.input_type(w) if an.record_types else T.ANY
        if isinstance(rec, T.MapT):
            for k, v in rec.fields:
                names[k] = (v, "record")
        return Scope(names, open=not isinstance(rec, T.MapT) or rec.open)
    if site.per_record and not w.stream_inputs and w.source is None and w.spec is not None \
            and w.spec.stream_input in ("one", "required", "two_or_more"):
        return Scope({}, open=True)  # the missing input is reported once, by the stream rules
    if site.per_record and not w.stream_inputs and w.source is None:
        # no input stream: an assert evaluates once against the state; a module that takes no
        # inputs (http:request success_when/fail_when) sees its own summary over the state
        if w.spec is not None and w.spec.stream_input == "none":
            laid = w.spec.per_record_scope if w.spec.per_record_scope is not None else w.spec.summary_schema
            summary = T.from_schema(laid)
            if isinstance(summary, T.MapT):
                for k, v in summary.fields:
                    names[k] = (v, "record")
        return Scope(names)
    if site.per_record:
        rec = an.record_types.input_type(w) if an.record_types else T.ANY
        if w.module == "data:join":  # join key templates see state + record
            if isinstance(rec, T.MapT):
                for k, v in rec.fields:
                    names.setdefault(k, (v, "record"))
            return Scope(names, open=not isinstance(rec, T.MapT) or rec.open, record=rec)
        if isinstance(rec, T.MapT):
            rec_names = {k: (v, "record") for k, v in rec.fields}
            return Scope(rec_names, open=rec.open, record=rec)
        return Scope({}, open=True, record=rec)
    return Scope(names)


def _param_scope(w: Workload, param: str, an: Analysis, names: dict) -> Scope:
    """The scope of a module's own template (template:render): the keys of the map param
    ``param`` over the state, each typed from its literal value or its expression."""
    node = w.params_node.get(param) if w.params_node is not None else None
    if isinstance(node, MapNode):
        for k, v in node.items:
            site = next((s for s in w.exprs if s.node is v), None)
            if site is not None:
                t = an.site_types.get(id(site), T.ANY)
            elif isinstance(v, MapNode) and any(s.param_path and s.param_path[:2] == (param, str(k.value))
                                                 for s in w.exprs):
                t = T.ANY  # a map holding templates: its fields' types are worked out at run time
            else:
                t = T.of_value(to_plain(v))
            names[str(k.value)] = (t, "record")
        return Scope(names)
    # a whole map from an expression: its keys are known at run time only
    return Scope(names, open=node is not None)


def _match_prefix(patterns: tuple[str, ...], path: tuple | None) -> bool:
    if path is None:
        return False
    for p in patterns:
        parts = p.split(".")
        if len(parts) <= len(path) and all(a == "*" and isinstance(b, int) or a == b for a, b in zip(parts, path)):
            return True
    return False


def _check_secrets(w: Workload, site: ExprSite, secrets: list, diags: Diagnostics) -> None:
    if not secrets or w.spec is None or site.param_path is None:
        return
    if w.spec.summary_from_params or _match_prefix(w.spec.logged_params, site.param_path):
        for name, span in secrets:
            diags.add("secret-in-log", f"secret '{name}' flows into {site.where}, which {w.module} "
                      f"{'returns in its summary' if w.spec.summary_from_params else 'logs or returns in its summary'}",
                      span, help="pass the secret through a param that is not echoed (e.g. environment), "
                      "or accept that GXO redacts it as [REDACTED]")


def subschema(schema: dict, path: tuple) -> dict | None:
    cur: object = schema
    for seg in path:
        if not isinstance(cur, dict):
            return None
        if isinstance(seg, int):
            cur = cur.get("items")
        else:
            props = cur.get("properties", {})
            if seg in props:
                cur = props[seg]
            elif isinstance(cur.get("additionalProperties"), dict):
                cur = cur["additionalProperties"]
            else:
                return None
    return cur if isinstance(cur, dict) else None


def _check_param_type(w: Workload, site: ExprSite, t: T.Type, diags: Diagnostics) -> None:
    if w.spec is None or site.param_path is None or site.step is not None:
        return
    if not isinstance(site.tree, ast.Template) or site.tree.single is None:
        return
    sub = subschema(w.spec.params_schema, site.param_path)
    if sub is None:
        return
    want = T.from_schema(sub)
    if want == T.STR or T.STR in T.options(want):
        return  # converted to its text form
    if not T.assignable(t, want):
        diags.add("type-mismatch", f"{site.where} must be {want}, but the expression gives {t}", site.node.span,
                  help=sub.get("description"))


def _check_literal_params(w: Workload, diags: Diagnostics) -> None:
    """Validate the literal (non-templated) part of the params against the module schema."""
    if w.spec is None or w.spec.summary_from_params or not w.spec.params_schema:
        return
    from gxo.compiler.params import validate_params

    node = w.params_node
    proc = w.node.get("process")
    key = proc.key_node("params") if isinstance(proc, MapNode) else None
    validate_params(w.module, to_plain(node) if node is not None else {}, node,
                    w.module_node or w.node, key, diags)
    for st in w.steps:
        if st.spec is None or st.spec.summary_from_params or not st.spec.params_schema:
            continue
        step_node = w.params_node.get("steps").items[st.index]  # type: ignore[union-attr]
        with_key = step_node.key_node("with") if isinstance(step_node, MapNode) else None
        validate_params(st.uses, to_plain(st.with_node) if st.with_node is not None else {}, st.with_node,
                        st.uses_node or step_node, with_key, diags, prefix=f"steps[{st.index}].with")


#: modules whose ``query`` param is SQL text: a template there builds SQL from data
_SQL_MODULES = ("database:query",)


def _check_sql(w: Workload, diags: Diagnostics) -> None:
    """`sql-injection-risk`: a ``{{ }}`` or ``${}`` in a database:query ``query`` (of the
    workload or of a pipeline step), unless that module's params set ``unsafe_sql: true``."""
    def unsafe(params: YNode | None) -> bool:
        flag = params.get("unsafe_sql") if isinstance(params, MapNode) else None
        return isinstance(flag, ScalarNode) and flag.value is True

    flags = [w.params_node] if w.module in _SQL_MODULES else []
    flags += [st.with_node for st in w.steps if st.uses in _SQL_MODULES]
    for params in flags:
        flag = params.get("unsafe_sql") if isinstance(params, MapNode) else None
        if isinstance(flag, ScalarNode) and isinstance(flag.value, str) and is_templated(flag.value):
            diags.add("invalid-value", "unsafe_sql must be a literal true or false, not a template",
                      flag.span, help="write `unsafe_sql: true` (the compiler reads it to allow templates in `query`)")
    for site in w.exprs:
        if site.param_path is None or not site.param_path or site.param_path[0] != "query":
            continue
        if site.step is not None:
            module, params = site.step.uses, site.step.with_node
        elif w.module != "stream:pipeline":
            module, params = w.module, w.params_node
        else:
            continue
        if module not in _SQL_MODULES or unsafe(params) or not isinstance(site.tree, ast.Template):
            continue
        part = next((x for x in site.tree.parts if not isinstance(x, ast.Text)), None)
        if part is None:  # only text (`$${` unescapes to a literal `${`)
            continue
        diags.add("sql-injection-risk", f"{site.where} builds SQL from a template: a value spliced into the "
                  "statement can change what it does", site.node.sub_span(part.start, max(part.end, part.start + 1)),
                  help="write a placeholder in the query (`?` or `:name` for sqlite, `%s` or `%(name)s` for "
                  "postgresql/mysql) and pass the value in `params`; only where the database takes no placeholder, "
                  "set `unsafe_sql: true`")


def _allowed_dirs(pb: Playbook, w: Workload) -> list[str]:
    """The playbook's and the workload's literal allowed_paths, normalised."""
    out: list[str] = []
    for pol in (pb.root.get("workload_policy"), w.node.get("policy")):
        dirs = to_plain(pol).get("allowed_paths") if isinstance(pol, MapNode) else None
        out += [posixpath.normpath(d) for d in dirs or () if isinstance(d, str) and d.startswith("/")]
    return out


def _check_paths(w: Workload, diags: Diagnostics, pb: Playbook) -> None:
    if w.spec is None or w.params_node is None:
        return
    allowed = _allowed_dirs(pb, w)
    for p in w.spec.path_params:
        node = walk_path(w.params_node, tuple(p.split(".")))
        if not isinstance(node, ScalarNode) or not isinstance(node.value, str):
            continue
        v = node.value
        if "{{" in v or "${" in v:
            continue
        norm = posixpath.normpath(v)
        if v.startswith("/") and any(norm == d or norm.startswith(d.rstrip("/") + "/") for d in allowed):
            continue  # under an allowed path (the run still checks its real path)
        if v.startswith("/") or norm == ".." or norm.startswith("../"):
            diags.add("path-escape", f"path {json.dumps(v)} leaves the workspace; the run will refuse it",
                      node.span, help="paths are relative to the run's workspace (_gxo.workspace.path); to reach "
                      "a directory outside it, list it in workload_policy.allowed_paths or pass gxo --allow-path")
