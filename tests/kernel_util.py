"""Build a playbook's plan in memory and run it on the real kernel in this process (the tests of
what a run does with a plan: registers, stream hand-overs, the run history's commits)."""

from __future__ import annotations

import asyncio
from typing import Any

from gxo.compiler.emit import BuiltPlan, build_plan
from gxo.compiler.pipeline import check_source


def build(text: str) -> BuiltPlan:
    """The plan of the playbook ``text`` (it must check without an error)."""
    result = check_source(text.encode(), "pb.yaml")
    errors = [d.message for d in result.diags.items if d.severity == "error"]
    assert not errors, errors
    return build_plan(result)


def functions(built: BuiltPlan) -> dict[str, Any]:
    """The plan's expression functions: its generated code, run as bytecode."""
    namespace: dict[str, Any] = {"__name__": "gxo_plan_code"}
    exec(compile(built.code, "plan/plan_code.py", "exec"), namespace)  # noqa: S102 - the generated code
    return dict(namespace["FUNCTIONS"])


def run(built: BuiltPlan, sink: Any, **options: Any) -> tuple[Any, Any]:
    """Run ``built`` to its end with ``sink`` on its events; the kernel and the report."""
    from gxo.runtime.events import Events
    from gxo.runtime.kernel import Kernel, RunOptions
    from gxo.runtime.run import make_secrets
    from gxo.runtime.state import StateStore
    from gxo.runtime.workspace import Workspace

    secrets, tracker = make_secrets()
    events = Events(built.plan.name, tracker.redact_value)
    events.add(sink)
    ws = Workspace.create()
    try:
        kernel = Kernel(built.plan, functions(built), state=StateStore(), workspace=ws, secrets=secrets,
                        tracker=tracker, events=events, options=RunOptions(**options))
        report = asyncio.run(kernel.run())
    finally:
        ws.remove()
    return kernel, report
