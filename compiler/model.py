"""Phase ``model``: the located node tree as workloads, with every expression site parsed.

The builder is lenient: it runs after schema validation even when that found errors, so that
one run reports every problem; a field of the wrong shape is simply left out here (the schema
phase has already reported it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gxo.compiler.diagnostics import Diagnostics, Note
from gxo.compiler.expr import ast
from gxo.compiler.expr.parser import is_templated, parse_condition, parse_template
from gxo.compiler.loader import MapNode, ScalarNode, SeqNode, YNode, to_plain
from gxo.stdlib import ModuleSpec, registry


@dataclass(eq=False)
class ExprSite:
    """One YAML string that holds an expression."""

    node: ScalarNode
    where: str  # human path: "when", "params.args[0]", "vars.greeting", "steps[1].with.x"
    mode: str  # "template" or "condition"
    tree: ast.Template | ast.Condition | None
    per_record: bool = False  # evaluated once per stream record (record fields at the top)
    param_path: tuple[str | int, ...] | None = None  # path inside process.params
    step: "Step | None" = None  # the stream:pipeline step that holds it


@dataclass(eq=False)
class Step:
    """A ``stream:pipeline`` step."""

    index: int
    id: str
    id_node: ScalarNode | None
    uses: str
    uses_node: ScalarNode | None
    spec: ModuleSpec | None
    with_node: MapNode | None
    needs: list[tuple[str, ScalarNode]] = field(default_factory=list)
    register: str | None = None
    register_node: ScalarNode | None = None
    when: ExprSite | None = None


@dataclass(eq=False)
class Workload:
    index: int
    node: MapNode
    name: str
    name_node: ScalarNode | None
    module: str = ""
    module_node: ScalarNode | None = None
    spec: ModuleSpec | None = None
    params_node: MapNode | None = None
    policy: str = "run_once"
    policy_node: ScalarNode | None = None
    register: str | None = None
    register_node: ScalarNode | None = None
    stream_inputs: list[tuple[str, ScalarNode]] = field(default_factory=list)
    needs: list[tuple[str, ScalarNode]] = field(default_factory=list)
    on_failure: list[tuple[str, ScalarNode]] = field(default_factory=list)
    source: tuple[str, ScalarNode] | None = None
    when: ExprSite | None = None
    loop_node: YNode | None = None
    loop_var: str = "item"
    exprs: list[ExprSite] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    #: security_context.seccomp_profile_path as read and checked: {path, sha256, profile}
    seccomp_profile: dict[str, Any] | None = None

    @property
    def is_looped(self) -> bool:
        return self.loop_node is not None


@dataclass(eq=False)
class Playbook:
    root: MapNode
    name: str
    vars: dict[str, Any]
    vars_node: MapNode | None
    var_exprs: list[ExprSite]
    workloads: list[Workload]


def _scalar(node: YNode | None) -> ScalarNode | None:
    return node if isinstance(node, ScalarNode) else None


def _str(node: YNode | None) -> str | None:
    s = _scalar(node)
    return s.value if s is not None and isinstance(s.value, str) else None


def _names(node: YNode | None) -> list[tuple[str, ScalarNode]]:
    if not isinstance(node, SeqNode):
        return []
    return [(n.value, n) for n in node.items if isinstance(n, ScalarNode) and isinstance(n.value, str)]


def parse_site(node: ScalarNode, where: str, mode: str, diags: Diagnostics, **kw: Any) -> ExprSite:
    """Parse one expression string and report its syntax errors at their file positions."""
    text = node.value if isinstance(node.value, str) else ""
    if mode == "condition":
        tree, errors = parse_condition(text)
    else:
        tree, errors = parse_template(text)
    for e in errors:
        notes = [Note(msg, node.sub_span(off, off + 1) if off is not None else None) for off, msg in e.notes]
        diags.add(e.code, e.message, node.sub_span(e.start, max(e.end, e.start + 1)), help=e.help, notes=notes)
    return ExprSite(node, where, mode, tree if not errors else None, **kw)


def _match(pattern: str, path: tuple) -> bool:
    parts = pattern.split(".")
    if len(parts) != len(path):
        return False
    return all(p == "*" and isinstance(s, int) or p == s for p, s in zip(parts, path))


def _fmt(path: tuple) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def collect_sites(
    node: YNode | None,
    prefix: str,
    path: tuple,
    diags: Diagnostics,
    out: list[ExprSite],
    *,
    spec: ModuleSpec | None = None,
    step: Step | None = None,
) -> None:
    """Every templated string under ``node`` (recursively) becomes an ExprSite."""
    if isinstance(node, MapNode):
        for k, v in node.items:
            collect_sites(v, prefix, path + (str(k.value),), diags, out, spec=spec, step=step)
    elif isinstance(node, SeqNode):
        for i, v in enumerate(node.items):
            collect_sites(v, prefix, path + (i,), diags, out, spec=spec, step=step)
    elif isinstance(node, ScalarNode) and isinstance(node.value, str):
        per_record = bool(spec and any(_match(p, path) for p in spec.per_record_params))
        is_cond = bool(spec and any(_match(p, path) for p in spec.condition_params))
        if not (is_templated(node.value) or is_cond):
            return
        if spec and any(_match(p, path) for p in spec.literal_params):
            return
        where = f"{prefix}.{_fmt(path)}" if path else prefix
        out.append(parse_site(node, where, "condition" if is_cond else "template", diags,
                              per_record=per_record or step is not None, param_path=path, step=step))


def build_model(root: MapNode, diags: Diagnostics) -> Playbook:
    mods = registry()
    vars_node = root.get("vars")
    vars_map = vars_node if isinstance(vars_node, MapNode) else None
    var_exprs: list[ExprSite] = []
    if vars_map is not None:
        for k, v in vars_map.items:
            collect_sites(v, f"vars.{k.value}", (), diags, var_exprs)
    workloads: list[Workload] = []
    wl_node = root.get("workloads")
    items = wl_node.items if isinstance(wl_node, SeqNode) else []
    for i, wn in enumerate(items):
        if not isinstance(wn, MapNode):
            continue
        workloads.append(_build_workload(i, wn, mods, diags))
    return Playbook(root, _str(root.get("name")) or "", to_plain(vars_map) or {}, vars_map, var_exprs, workloads)


def _build_workload(i: int, wn: MapNode, mods: dict[str, ModuleSpec], diags: Diagnostics) -> Workload:
    name_node = _scalar(wn.get("name"))
    name = name_node.value if name_node is not None and isinstance(name_node.value, str) else f"workloads[{i}]"
    w = Workload(i, wn, name, name_node)
    proc = wn.get("process")
    if isinstance(proc, MapNode):
        w.module_node = _scalar(proc.get("module"))
        w.module = _str(w.module_node) or ""
        w.spec = mods.get(w.module)
        params = proc.get("params")
        w.params_node = params if isinstance(params, MapNode) else None
    life = wn.get("lifecycle")
    if isinstance(life, MapNode):
        w.policy_node = _scalar(life.get("policy"))
        w.policy = _str(w.policy_node) or "run_once"
        src = _scalar(life.get("source"))
        if src is not None and isinstance(src.value, str):
            w.source = (src.value, src)
    reg = _scalar(wn.get("register"))
    if reg is not None and isinstance(reg.value, str):
        w.register, w.register_node = reg.value, reg
    w.stream_inputs = _names(wn.get("stream_inputs"))
    w.needs = _names(wn.get("needs"))
    w.on_failure = _names(wn.get("on_failure"))
    lc = wn.get("loop_control")
    if isinstance(lc, MapNode):
        w.loop_var = _str(lc.get("loop_var")) or "item"
    when = wn.get("when")
    if isinstance(when, ScalarNode) and isinstance(when.value, str):
        w.when = parse_site(when, "when", "condition", diags)
        w.exprs.append(w.when)
    loop = wn.get("loop")
    if loop is not None:
        w.loop_node = loop
        if isinstance(loop, ScalarNode) and isinstance(loop.value, str):
            w.exprs.append(parse_site(loop, "loop", "template", diags))
        else:
            collect_sites(loop, "loop", (), diags, w.exprs)
    if w.module == "stream:pipeline" and w.params_node is not None:
        _build_steps(w, mods, diags)
        for k, v in w.params_node.items:
            if k.value != "steps":
                collect_sites(v, "params", (str(k.value),), diags, w.exprs, spec=w.spec)
    else:
        collect_sites(w.params_node, "params", (), diags, w.exprs, spec=w.spec)
    return w


def _build_steps(w: Workload, mods: dict[str, ModuleSpec], diags: Diagnostics) -> None:
    steps_node = w.params_node.get("steps") if w.params_node else None
    if not isinstance(steps_node, SeqNode):
        return
    for j, sn in enumerate(steps_node.items):
        if not isinstance(sn, MapNode):
            continue
        id_node = _scalar(sn.get("id"))
        uses_node = _scalar(sn.get("uses"))
        uses = _str(uses_node) or ""
        with_node = sn.get("with")
        step = Step(
            j,
            _str(id_node) or f"steps[{j}]",
            id_node,
            uses,
            uses_node,
            mods.get(uses),
            with_node if isinstance(with_node, MapNode) else None,
            needs=_names(sn.get("needs")),
        )
        reg = _scalar(sn.get("register"))
        if reg is not None and isinstance(reg.value, str):
            step.register, step.register_node = reg.value, reg
        when = sn.get("when")
        if isinstance(when, ScalarNode) and isinstance(when.value, str):
            step.when = parse_site(when, f"params.steps[{j}].when", "condition", diags, per_record=True, step=step)
            w.exprs.append(step.when)
        collect_sites(step.with_node, f"params.steps[{j}].with", (), diags, w.exprs, spec=step.spec, step=step)
        w.steps.append(step)
