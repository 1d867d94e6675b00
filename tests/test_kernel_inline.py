"""The inline path of the kernel does per task only what the task needs.

An inline no-op module (``control:identity``) gets no ``Context`` built for it (the context is
made only when the module reads it), its status is set through ``_set_status`` once (Running is
set inline), a workload with literal params reads no state view, and the module declarations the
kernel asks for at construction are worked out once per module, not per workload.  Observed with
``sys.setprofile`` on a real run of a 50-workload chain.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from gxo.runtime.events import Events
from gxo.runtime.kernel import Kernel, RunOptions, _LazyContext
from gxo.runtime.module import Context
from gxo.runtime.plan import Edge, Expression, Lifecycle, Plan, Source, SourceSpan, Workload
from gxo.runtime.secrets import Tracker
from gxo.runtime.state import StateStore
from gxo.stdlib._spec import spec_of

SPAN = SourceSpan(path="t.yaml", line=1, col=1, end_line=1, end_col=2)


def chain(n: int, **extra: Any) -> Plan:
    ws = [Workload(name=f"w{i}", index=i, module="control:identity", module_version="t",
                   lifecycle=Lifecycle(policy="run_once"), params={"n": i}, needs=(f"w{i - 1}",) if i else (),
                   inline=True, span=SPAN, **extra) for i in range(n)]
    edges = tuple(Edge(source=f"w{i - 1}", target=f"w{i}", kinds=("needs",)) for i in range(1, n))
    return Plan(compiler_version="t", name="t", source=Source(path="t.yaml", sha256="0"), vars={}, var_types=(),
                workloads=tuple(ws), edges=edges, levels=(), channels=(), expressions=(), modules=(),
                plan_code_sha256="0")


class _Workspace:
    path = "/nonexistent"

    def resolve(self, p: str) -> str:
        raise AssertionError(p)


def make_kernel(plan: Plan, functions: dict | None = None) -> Kernel:
    tracker = Tracker()
    return Kernel(plan, functions or {}, state=StateStore(), workspace=_Workspace(), secrets=None, tracker=tracker,
                  events=Events(plan.name, tracker.redact_value), options=RunOptions())


def profile_run(kernel: Kernel) -> dict[str, int]:
    counts = {"contexts": 0, "_set_status": 0, "view": 0}

    def hook(frame: Any, event: str, _arg: Any) -> None:
        if event != "call":
            return
        name = frame.f_code.co_name
        if name == "__init__" and type(frame.f_locals.get("self")) is Context:
            counts["contexts"] += 1
        elif name in ("_set_status", "view"):
            counts[name] += 1

    sys.setprofile(hook)
    try:
        report = asyncio.run(kernel.run())
    finally:
        sys.setprofile(None)
    assert [r.status for r in report.results.values()] == ["Completed"] * len(report.results)
    return counts


def test_an_inline_no_op_task_builds_no_context_and_reads_no_state() -> None:
    counts = profile_run(make_kernel(chain(50)))
    # plain inline workloads (literal params, no when, no register) run fused into the
    # scheduler loop: no context, no state view, no _set_status call
    assert counts == {"contexts": 0, "_set_status": 0, "view": 0}


def _workload(i: int, module: str = "control:identity", params: Any = None, needs: tuple[str, ...] = (),
              **extra: Any) -> Workload:
    return Workload(name=f"w{i}", index=i, module=module, module_version="t", lifecycle=Lifecycle(policy="run_once"),
                    params={"n": i} if params is None else params, needs=needs, inline=True, span=SPAN, **extra)


def _plan(ws: list[Workload]) -> Plan:
    edges = tuple(Edge(source=d, target=w.name, kinds=("needs",)) for w in ws for d in w.needs)
    return Plan(compiler_version="t", name="t", source=Source(path="t.yaml", sha256="0"), vars={}, var_types=(),
                workloads=tuple(ws), edges=tuple(sorted(edges, key=lambda e: (e.source, e.target))), levels=(),
                channels=(), expressions=(), modules=(), plan_code_sha256="0")


def _run_with_events(plan: Plan, fused: bool) -> tuple[list[dict[str, Any]], dict[str, tuple[Any, ...]]]:
    kernel = make_kernel(plan)
    if not fused:  # every inline workload through _run_inline, _succeed and _finish
        kernel.inline_cls = {name: (cls, False) for name, (cls, _) in kernel.inline_cls.items()}
    seen: list[dict[str, Any]] = []
    kernel.events.add(seen.append)
    report = asyncio.run(kernel.run())
    drop = ("timestamp", "duration_ms", "run_id")
    events = [{k: v for k, v in e.items() if k not in drop} for e in seen]
    results = {n: (r.status, r.reason, r.ignored, r.changed, r.attempts, r.cancelled) for n, r in report.results.items()}
    return events, results


def test_the_fused_inline_path_matches_the_general_one() -> None:
    # a fan-out and a chain, a changed summary, an ignored failure, a run halted by a failure
    ws = [_workload(0), _workload(1, needs=("w0",)), _workload(2, needs=("w0",), params={"changed": True}),
          _workload(3, needs=("w1", "w2")),
          _workload(4, module="control:assert", params={"condition": False}, needs=("w3",), ignore_errors=True),
          _workload(5, needs=("w4",)), _workload(6, needs=("w3",)),
          _workload(7, module="control:assert", params={"condition": False, "fail_message": "no"}, needs=("w6",)),
          _workload(8, needs=("w7",)), _workload(9, needs=("w6",))]
    plan = _plan(ws)
    kernel = make_kernel(plan)
    assert all(plain for _, plain in kernel.inline_cls.values())
    fused, general = _run_with_events(plan, True), _run_with_events(plan, False)
    assert fused == general
    events, results = fused
    assert results["w2"][:4] == ("Completed", None, False, True)
    assert results["w4"][:3] == ("Failed", "assertion failed: the condition is false (falsy)", True)
    assert results["w5"][:2] == ("Skipped", "dependency failed (ignored)")
    assert results["w7"][:2] == ("Failed", "no")
    assert results["w8"][0] == "Pending"
    ends = [e["workload"] for e in events if e["type"] == "WorkloadEnd"]
    assert ends[:4] == ["w0", "w1", "w2", "w3"]
    assert [e["type"] for e in events if e.get("workload") == "w0"] == [
        "WorkloadStatusChanged", "ModuleExecutionStart", "ModuleExecutionEnd", "WorkloadStatusChanged", "WorkloadEnd"]


def test_a_workload_with_a_register_or_a_when_is_not_fused() -> None:
    plan = _plan([_workload(0, register="r0"), _workload(1, needs=("w0",), disabled=True), _workload(2)])
    kernel = make_kernel(plan)
    assert {name: plain for name, (_, plain) in kernel.inline_cls.items()} == {"w0": False, "w1": False, "w2": True}
    report = asyncio.run(kernel.run())
    assert [r.status for r in report.results.values()] == ["Completed", "Skipped", "Completed"]
    assert kernel.state.get("r0") == {"n": 0, "failed": False, "error": None}


def test_params_with_an_expression_read_the_state_view() -> None:
    plan = chain(3)
    w = plan.workloads[1]
    expr = Expression(id="e0", workload=w.name, where="params.n", mode="template", native=True, as_text=False,
                      per_record=False, secret=False, span=SPAN)
    ws = list(plan.workloads)
    ws[1] = Workload(**{f: getattr(w, f) for f in w.__struct_fields__ if f != "params"}, params={"n": {"$expr": "e0"}})
    plan = Plan(**{f: getattr(plan, f) for f in plan.__struct_fields__ if f not in ("workloads", "expressions")},
                workloads=tuple(ws), expressions=(expr,))
    kernel = make_kernel(plan, {"e0": lambda scope, ctx: scope["_gxo"]["run"]["id"]})
    counts = profile_run(kernel)
    assert counts["view"] == 1 and counts["contexts"] == 0
    assert kernel.param_exprs == {"w1": True}  # deep_copy mode: its rendered params are copied


def test_the_lazy_context_is_the_workloads_own() -> None:
    plan = chain(2)
    kernel = make_kernel(plan)
    kernel._seed_state()
    ctx = _LazyContext(kernel, plan.workloads[1])
    assert ctx.workload == "w1" and ctx.run_id == kernel.run_id and ctx.loop_index is None
    assert ctx.extras is ctx.extras  # one real context behind it, made on the first read
    assert ctx.state()["_gxo"]["workloads"]["w0"] == {"status": "Pending"}


def test_a_builtin_declaration_is_worked_out_once() -> None:
    assert spec_of("control:identity") is spec_of("control:identity")
    assert spec_of("control:identity").implemented


def test_report_repr_stays_short() -> None:
    """asyncio formats the run task and its result (the report) when the run ends; the report's
    repr must not write every workload's result (it cost 9 % of a 10,000-workload run)."""
    from gxo.runtime.kernel import Report, Result

    report = Report("big", "20261207-000000-abcdef", {f"w{i}": Result(f"w{i}") for i in range(10_000)}, 1.0)
    assert repr(report) == "<Report big run 20261207-000000-abcdef: 10000 workload(s)>"
