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


def test_an_inline_no_op_task_builds_no_context_and_sets_its_status_once() -> None:
    counts = profile_run(make_kernel(chain(50)))
    assert counts == {"contexts": 0, "_set_status": 50, "view": 0}


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
