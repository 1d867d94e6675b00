"""Phase ``lower``: the checked model, analysis and graph become the frozen plan IR.

Every expression site gets an id ``e0, e1, ...`` in source order (line, column); params, vars
and literal loops become IR (plain JSON with ``{"$expr": id}`` where a templated string stood,
and ``{"$lit": m}`` around a literal one-key map whose key is ``$expr`` or ``$lit``, so that it
is never mistaken for a reference; the values inside ``m`` are IR again).  Durations become
seconds, policies are resolved (workload > playbook > ``--channel-buffer-size`` > 100), and
the graph gives the edges (each stored once: the plan derives every workload's deps from them,
over ``ORDER_KINDS`` only, since a stream consumer starts with its producer), levels and
channels.  Nothing here holds an absolute path: spans name the playbook by its base name.
The plan's ``plan_code_sha256`` is left empty; ``emit`` fills it in once the code is rendered.
"""

from __future__ import annotations

import hashlib
import posixpath
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from gxo.compiler import types as T
from gxo.compiler.codegen import CodegenItem
from gxo.compiler.records import json_column
from gxo.compiler.expr import ast
from gxo.compiler.loader import MapNode, ScalarNode, SeqNode, YNode, to_plain
from gxo.compiler.model import ExprSite
from gxo.compiler.model import Workload as MWorkload
from gxo.compiler.resolve import subschema
from gxo.runtime import plan as P
from gxo.runtime.durations import parse_duration as _parse_duration
from gxo.stdlib import ModuleSpec

DEFAULT_CHANNEL_CAPACITY = 100
DEFAULT_OVERFLOW = "block"
DEFAULT_FLUSH_INTERVAL = 0.05  # seconds: channel_policy.flush_interval's default (50ms)
DEFAULT_RECONCILE_INTERVAL = 30.0  # seconds: lifecycle.interval of a supervised reconciler (filesystem:manage)



class LowerError(ValueError):
    """The input cannot be lowered (it has errors the checker should have reported)."""


def gxo_version() -> str:
    try:
        return version("gxo")
    except PackageNotFoundError:  # running from a source tree
        return "0.0.0+unknown"


def parse_duration(text: str) -> float:
    """Go duration syntax in seconds (see ``gxo.runtime.durations``)."""
    try:
        return _parse_duration(text)
    except ValueError as exc:
        raise LowerError(str(exc)) from None


def schema_sha256(spec: ModuleSpec) -> str:
    """The digest of the canonical JSON of a module's declared schemas."""
    data = {"params": spec.params_schema, "summary": spec.summary_schema, "record": spec.record_schema}
    return hashlib.sha256(P.canonical_json(data).encode("utf-8")).hexdigest()


def _tree_nodes(obj: Any):
    """Every AST node under ``obj`` (dataclasses, tuples)."""
    stack = [obj]
    while stack:
        cur = stack.pop()
        if isinstance(cur, ast.Node):
            yield cur
            for name in cur.__dataclass_fields__:  # type: ignore[attr-defined]
                stack.append(getattr(cur, name))
        elif isinstance(cur, tuple):
            stack.extend(cur)


def reads_secret(tree: Any) -> bool:
    return any(isinstance(n, ast.SecretRef) or (isinstance(n, ast.Call) and n.name == "secret") for n in _tree_nodes(tree))


def _var_of(where: str) -> str:
    """The var a ``vars.`` site belongs to: ``vars.db.url`` -> ``db``."""
    rest = where[len("vars."):]
    for i, ch in enumerate(rest):
        if ch in ".[":
            return rest[:i]
    return rest


def tainted_sites(pb: Any, an: Any) -> dict[int, frozenset[str]]:
    """The taint map: ``id(site.node)`` of every expression whose value depends on a secret,
    with the root names it reads that carry one (the code generator taints each action of a
    template that reads a secret or one of them, so ``T={{ secret "X" | upper }}`` tracks the
    upper-cased secret itself, not only the whole text).

    An expression is tainted when it reads a secret itself, or reads a tainted var, the loop
    variable of a tainted ``loop``, the register (or the records, or the pipeline steps) of a
    tainted workload.  A workload is tainted when one of its expressions other than ``when``
    is, or one of its stream inputs is: its summary may hold what its params carried.
    Whatever functions an expression applies, its result stays tainted.
    """
    sites: list[tuple[ExprSite, MWorkload | None]] = [(s, None) for s in pb.var_exprs]
    for w in pb.workloads:
        sites.extend((s, w) for s in w.exprs)
    tainted: set[int] = set()  # id(site)
    t_vars: set[str] = set()
    t_work: set[str] = set()
    loop_site = {w.name: next((s for s in w.exprs if s.where == "loop"), None) for w in pb.workloads}

    def ref_tainted(ref: Any, w: MWorkload | None) -> bool:
        if ref.kind == "var":
            return ref.name in t_vars
        if ref.kind == "register":
            owner = an.by_register.get(ref.name)
            return owner is not None and owner.name in t_work
        if ref.kind == "root":  # the whole state holds every var and register
            return bool(t_vars or t_work)
        if w is None:
            return False
        if ref.kind == "loop":
            ls = loop_site[w.name]
            return ls is not None and id(ls) in tainted
        if ref.kind == "record":
            return any(p in t_work for p, _ in w.stream_inputs) or (w.source is not None and w.source[0] in t_work)
        if ref.kind == "step":
            return w.name in t_work
        return False

    changed = True
    while changed:
        changed = False
        for site, w in sites:
            if id(site) in tainted or site.tree is None:
                continue
            if reads_secret(site.tree) or any(ref_tainted(r, w) for r in an.site_refs.get(id(site), ())):
                tainted.add(id(site))
                changed = True
                if w is None:
                    t_vars.add(_var_of(site.where))
                elif site.where != "when":
                    t_work.add(w.name)
        for w in pb.workloads:
            if w.name not in t_work and any(p in t_work for p, _ in w.stream_inputs):
                t_work.add(w.name)
                changed = True
    out: dict[int, frozenset[str]] = {}
    for site, w in sites:
        if id(site) in tainted:
            names = frozenset(r.name for r in an.site_refs.get(id(site), ()) if ref_tainted(r, w))
            out[id(site.node)] = out.get(id(site.node), frozenset()) | names
    return out


class _Lowerer:
    def __init__(self, result: Any, channel_buffer_size: int | None, source_bytes: bytes | None) -> None:
        if result.playbook is None or result.analysis is None or result.graph is None:
            raise LowerError("the playbook did not get through the checker")
        if result.diags.has_errors:
            raise LowerError("the playbook has errors")
        self.res = result
        self.pb = result.playbook
        self.an = result.analysis
        self.graph = result.graph
        self.flag_capacity = channel_buffer_size
        self.base = posixpath.basename(str(result.path).replace("\\", "/")) or "playbook.yaml"
        self.source_bytes = source_bytes if source_bytes is not None else result.source.encode("utf-8")
        self.version = gxo_version()
        self.ids: dict[int, str] = {}  # id(ScalarNode) -> expression id
        self.sites: list[tuple[ExprSite, MWorkload | None]] = []
        self.tainted = tainted_sites(self.pb, self.an)  # id(node) -> tainted names it reads
        #: register -> the fields the plan's expressions read of it (None: read whole), made by
        #: the first ``register_reads``
        self.register_fields: dict[str | None, set[str] | None] | None = None

    # -- helpers ---------------------------------------------------------------------------

    def span(self, node: YNode) -> P.SourceSpan:
        s = node.span
        return P.SourceSpan(path=self.base, line=s.line, col=s.col, end_line=s.end_line, end_col=s.end_col)

    def ir(self, node: YNode | None) -> Any:
        """The IR of a YAML node: expression references where sites stand."""
        if node is None:
            return None
        if isinstance(node, ScalarNode):
            eid = self.ids.get(id(node))
            return {"$expr": eid} if eid is not None else node.value
        if isinstance(node, SeqNode):
            return [self.ir(n) for n in node.items]
        assert isinstance(node, MapNode)
        out = {str(k.value): self.ir(v) for k, v in node.items}
        if len(out) == 1 and next(iter(out)) in ("$expr", "$lit"):
            return {"$lit": out}
        return out

    # -- expressions -----------------------------------------------------------------------

    def number_sites(self) -> None:
        sites: list[tuple[ExprSite, MWorkload | None]] = [(s, None) for s in self.pb.var_exprs]
        for w in self.pb.workloads:
            sites.extend((s, w) for s in w.exprs)
        sites.sort(key=lambda sw: (sw[0].node.span.line, sw[0].node.span.col, sw[0].where))
        unique: list[tuple[ExprSite, MWorkload | None]] = []
        for site, w in sites:
            if site.tree is None:
                raise LowerError(f"{site.where}: expression did not parse")
            if id(site.node) in self.ids:
                continue  # one YAML string reached twice through an alias: one function serves both
            self.ids[id(site.node)] = f"e{len(unique)}"
            unique.append((site, w))
        self.sites = unique

    def as_text(self, site: ExprSite, w: MWorkload | None) -> bool:
        if w is None or site.param_path is None:
            return False
        spec = site.step.spec if site.step is not None else w.spec
        if spec is None or spec.summary_from_params:
            return False
        sub = subschema(spec.params_schema, site.param_path)
        return sub is not None and T.from_schema(sub) == T.STR

    def expressions(self) -> tuple[list[P.Expression], list[CodegenItem]]:
        exprs, items = [], []
        for site, w in self.sites:
            eid = self.ids[id(site.node)]
            tree = site.tree
            native = isinstance(tree, ast.Condition) or (isinstance(tree, ast.Template) and tree.single is not None)
            as_text = self.as_text(site, w)
            span = self.span(site.node)
            text = site.node.value if isinstance(site.node.value, str) else ""
            owner = f" of '{w.name}'" if w is not None else ""
            module = site.step.uses if site.step is not None else (w.module if w is not None else "")
            json_record = module == "data:map" and site.param_path == ("template",)
            # a data:map workload's per-record template of one field: its function returns the
            # value, and the records go on as that field's values (Expression.column)
            column = json_column(tree) if json_record and site.step is None and site.per_record \
                and w is not None and w.stream_inputs and isinstance(tree, ast.Template) else ""
            exprs.append(P.Expression(
                id=eid, workload=w.name if w is not None else "", where=site.where, mode=site.mode,
                native=native, as_text=as_text, per_record=site.per_record, secret=id(site.node) in self.tainted,
                span=span, text=text, column=column,
            ))
            # record expressions (per record, or a pipeline step's) are not tracked per record
            taint = self.tainted.get(id(site.node)) if not site.per_record and site.step is None else None
            # evaluated per record, or per item of the workload's loop (its params): native
            hot = site.per_record or (w is not None and w.is_looped and site.param_path is not None)
            items.append(CodegenItem(id=eid, tree=tree, native=native, as_text=as_text,
                                     source=f"{span} {site.where}{owner}", json_record=json_record, column=column,
                                     taint=taint, hot=hot,
                                     site=f"{w.name if w is not None else ''} {site.where}"))
        return exprs, items

    # -- workloads -------------------------------------------------------------------------

    def lifecycle(self, w: MWorkload) -> P.Lifecycle:
        life = w.node.get("lifecycle")
        life_d = to_plain(life) if isinstance(life, MapNode) else {}
        pol = w.policy
        if pol == "supervise":
            b = life_d.get("backoff") or {}
            backoff = P.Backoff(
                base=parse_duration(b["base"]) if "base" in b else 1.0,
                cap=parse_duration(b["cap"]) if "cap" in b else 60.0,
                jitter=float(b.get("jitter", 0.1)),
                max_restarts=int(b.get("max_restarts", 5)),
                restart_window=parse_duration(b["restart_window"]) if "restart_window" in b else 600.0,
            )
            interval = None
            if "interval" in life_d:
                interval = parse_duration(life_d["interval"])
            elif w.spec is not None and w.spec.reconciler:
                interval = DEFAULT_RECONCILE_INTERVAL
            return P.Lifecycle(
                policy=pol, restart=life_d.get("restart", "on_failure"), backoff=backoff,
                healthy_after=parse_duration(life_d["healthy_after"]) if "healthy_after" in life_d else 10.0,
                interval=interval,
                stop_timeout=parse_duration(life_d["stop_timeout"]) if "stop_timeout" in life_d else 10.0,
            )
        stop = parse_duration(life_d["stop_timeout"]) if "stop_timeout" in life_d else 10.0
        if pol == "event_driven":
            return P.Lifecycle(policy=pol, source=life_d.get("source"), concurrency=int(life_d.get("concurrency", 8)),
                               stop_timeout=stop)
        if pol == "scheduled":
            return P.Lifecycle(policy=pol, cron=life_d.get("cron"), timezone=life_d.get("timezone"),
                               overlap=str(life_d.get("overlap", "skip")), misfire=str(life_d.get("misfire", "skip")),
                               stop_timeout=stop)
        return P.Lifecycle(policy=pol)

    def retry(self, w: MWorkload) -> P.Retry:
        r = to_plain(w.node.get("retry")) or {}
        if not isinstance(r, dict):
            return P.Retry()
        return P.Retry(
            attempts=int(r.get("attempts", 1)),
            delay=parse_duration(r["delay"]) if "delay" in r else 1.0,
            max_delay=parse_duration(r["max_delay"]) if "max_delay" in r else None,
            backoff_factor=float(r.get("backoff_factor", 1.0)),
            jitter=float(r.get("jitter", 0.0)),
            on_error=bool(r.get("on_error", True)),
        )

    def _policy(self, w: MWorkload, section: str, key: str, playbook_section: str | None = None) -> Any:
        """A policy value: the workload's own section, else the playbook's, else None."""
        own = to_plain(w.node.get(section))
        if isinstance(own, dict) and key in own:
            return own[key]
        top = to_plain(self.pb.root.get(playbook_section or section))
        if isinstance(top, dict) and key in top:
            return top[key]
        return None

    def channel(self, producer: str, consumer: MWorkload) -> P.Channel:
        cap = self._policy(consumer, "channel_policy", "buffer_size")
        if cap is None:
            cap = self.flag_capacity if self.flag_capacity is not None else DEFAULT_CHANNEL_CAPACITY
        overflow = self._policy(consumer, "channel_policy", "overflow_strategy") or DEFAULT_OVERFLOW
        flush = self._policy(consumer, "channel_policy", "flush_interval")
        flush_interval = parse_duration(flush) if isinstance(flush, str) else DEFAULT_FLUSH_INTERVAL
        record_type = "any"
        prod = self.an.by_name.get(producer)
        if prod is not None and self.an.record_types is not None:
            record_type = str(self.an.record_types.output_type(prod))
        return P.Channel(producer=producer, consumer=consumer.name, capacity=int(cap), overflow=str(overflow),
                         flush_interval=flush_interval, record_type=record_type)

    def failure_watch(self, w: MWorkload) -> tuple[str, ...]:
        """The workloads whose failure ``w`` opts in to: its ``when`` reads their status
        (``._gxo.workloads.X.status``) or their register's ``failed`` field.  The kernel lets
        it run after such a workload fails ignored, instead of skipping it."""
        out = set()
        for ref in self.an.when_refs.get(w.name, ()):
            p = ref.path
            if ref.kind == "gxo" and len(p) >= 4 and p[1] == "workloads" and p[3] == "status":
                out.add(str(p[2]))
            elif ref.kind == "register" and len(p) >= 2 and p[1] == "failed" and ref.name in self.an.by_register:
                out.add(self.an.by_register[ref.name].name)
        out.discard(w.name)
        return tuple(sorted(n for n in out if n in self.an.by_name))

    def register_reads(self, w: MWorkload) -> tuple[str, ...] | None:
        """The fields of ``w``'s register that the plan's expressions read (the first segment
        after the register's name), sorted; None when it may be read whole or deeper than the
        fields can tell (a path that stops at the register, ``{{ . }}``, a looped or
        long-running workload, whose register holds more than one summary).  The runtime
        leaves a module's derived summary fields (exec's ``stdout_lines``) out of a register
        that no expression reads them from."""
        if w.register is None or w.is_looped or w.policy != "run_once":
            return None
        reads = self.register_fields
        if reads is None:  # once per plan: every register's fields read, None where read whole
            reads = self.register_fields = {}
            whole = any(ref.kind == "root" for refs in self.an.refs.values() for ref in refs)
            for refs in self.an.refs.values():
                for ref in refs:
                    if ref.kind != "register":
                        continue
                    if whole or len(ref.path) < 2 or not isinstance(ref.path[1], str):
                        reads[ref.name] = None
                    else:
                        fields = reads.setdefault(ref.name, set())
                        if fields is not None:
                            fields.add(ref.path[1])
            if whole:
                reads[None] = None  # every register, read or not
        if None in reads:
            return None
        fields = reads.get(w.register, set())
        return None if fields is None else tuple(sorted(fields))

    def workload(self, w: MWorkload, level: dict[str, int]) -> P.Workload:
        when_id, disabled = None, False
        when_node = w.node.get("when")
        if isinstance(when_node, ScalarNode):
            if isinstance(when_node.value, bool):
                disabled = not when_node.value
            else:
                when_id = self.ids.get(id(when_node))
        loop_ir = self.ir(w.loop_node) if w.loop_node is not None else None
        lc = to_plain(w.node.get("loop_control"))
        parallel = int(lc.get("parallel", 1)) if isinstance(lc, dict) else 1
        timeout = to_plain(w.node.get("timeout"))
        skip = self._policy(w, "policy", "skip_on_no_input", "workload_policy")
        access = self._policy(w, "state_policy", "access_mode")
        secret_params = sorted(
            s.where for s in w.exprs
            if s.param_path is not None and s.where.startswith("params") and id(s.node) in self.tainted
        )
        sc = w.node.get("security_context")
        return P.Workload(
            name=w.name,
            index=w.index,
            module=w.module,
            module_version=self.version,
            lifecycle=self.lifecycle(w),
            params=self.ir(w.params_node) if w.params_node is not None else {},
            when=when_id,
            when_per_item=w.is_looped and any(r.kind == "loop" for r in self.an.when_refs.get(w.name, ())),
            disabled=disabled,
            loop=loop_ir,
            loop_var=w.loop_var,
            loop_parallel=parallel,
            retry=self.retry(w),
            timeout=parse_duration(timeout) if isinstance(timeout, str) else None,
            register=w.register,
            register_reads=self.register_reads(w),
            ignore_errors=to_plain(w.node.get("ignore_errors")) is True,
            on_failure=tuple(dict.fromkeys(n for n, _ in w.on_failure)),
            failure_watch=self.failure_watch(w),
            state_access=str(access or "deep_copy"),
            skip_on_no_input=bool(skip),
            stream_inputs=tuple(dict.fromkeys(n for n, _ in w.stream_inputs)),
            needs=tuple(dict.fromkeys(n for n, _ in w.needs)),
            level=level.get(w.name, 0),
            inline=bool(w.spec.inline) if w.spec is not None else False,
            secret_params=tuple(secret_params),
            security_context=to_plain(sc) if sc is not None else None,
            seccomp_profile=w.seccomp_profile,
            allowed_paths=_allowed_paths(to_plain(w.node.get("policy"))),
            span=self.span(w.name_node if w.name_node is not None else w.node),
        )

    # -- the plan --------------------------------------------------------------------------

    def lower(self) -> tuple[P.Plan, list[CodegenItem]]:
        self.number_sites()
        exprs, items = self.expressions()
        edges = [P.Edge(source=u, target=v, kinds=k) for u, v, k in self.graph.edges()]
        levels = tuple(tuple(sorted(lv)) for lv in self.graph.levels)
        level = {n: i for i, lv in enumerate(levels) for n in lv}
        by_name = {w.name: w for w in self.pb.workloads}
        channels = sorted(
            (self.channel(e.source, by_name[e.target]) for e in edges if "stream" in e.kinds),
            key=lambda c: (c.producer, c.consumer),
        )
        workloads = tuple(self.workload(w, level) for w in self.pb.workloads)
        specs: dict[str, ModuleSpec] = {}
        for w in self.pb.workloads:
            if w.spec is not None:
                specs[w.spec.name] = w.spec
            for st in w.steps:
                if st.spec is not None:
                    specs[st.spec.name] = st.spec
        modules = tuple(
            P.ModuleRef(name=n, version=self.version, schema_sha256=schema_sha256(specs[n])) for n in sorted(specs)
        )
        var_types = []
        vars_node = self.pb.vars_node
        for k, v in (self.pb.vars or {}).items():
            templated = isinstance(v, str) and ("{{" in v or "${" in v)
            var_types.append((str(k), str(T.ANY if templated else T.of_value(v))))
        wp = to_plain(self.pb.root.get("workload_policy"))
        max_conc = wp.get("max_concurrency") if isinstance(wp, dict) else None
        plan = P.Plan(
            compiler_version=self.version,
            name=self.pb.name,
            source=P.Source(path=self.base, sha256=hashlib.sha256(self.source_bytes).hexdigest()),
            vars=self.ir(vars_node) if vars_node is not None else {},
            var_types=tuple(sorted(var_types)),
            workloads=workloads,
            edges=tuple(edges),
            levels=levels,
            channels=tuple(channels),
            expressions=tuple(exprs),
            modules=modules,
            max_concurrency=int(max_conc) if isinstance(max_conc, int) else None,
            allowed_paths=_allowed_paths(wp),
            plan_code_sha256="",
        )
        return P.lean(plan), items


def _allowed_paths(policy: Any) -> tuple[str, ...]:
    """``allowed_paths`` of a (workload_)policy map, in order, without repeats."""
    dirs = policy.get("allowed_paths") if isinstance(policy, dict) else None
    return tuple(dict.fromkeys(d for d in dirs if isinstance(d, str))) if isinstance(dirs, list) else ()


def lower(result: Any, *, channel_buffer_size: int | None = None,
          source_bytes: bytes | None = None) -> tuple[P.Plan, list[CodegenItem]]:
    """Lower a clean ``check_source`` result to the plan IR and the code generator's items.

    ``source_bytes`` are the playbook's bytes as read (its digest goes in the plan); by default
    the decoded source, re-encoded as UTF-8."""
    return _Lowerer(result, channel_buffer_size, source_bytes).lower()
