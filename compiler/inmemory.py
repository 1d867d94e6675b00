"""Compile a playbook in memory for ``gxo run`` and ``gxo test``: the same stages as
``gxoc build`` (check, lower, generate code), without writing a ``.gxp``; the generated code is
compiled to bytecode and its functions are handed to the kernel."""

from __future__ import annotations

import os
from typing import IO, Any

from gxo.compiler.diagnostics import ERROR, limit_per_code, render_text, summary_line


class NotRunnable(Exception):
    """The playbook's only errors are ``not-implemented``: it is valid, but this release cannot
    run it (``gxo run`` refuses it with exit 3)."""


def compile_in_memory(path: str, stream: IO[str]) -> Any:
    """A ``LoadedPlan`` for ``path``, or None after printing its errors to ``stream``; raises
    ``NotRunnable`` (after printing them) when every error is ``not-implemented``."""
    from gxo.compiler.emit import build_plan
    from gxo.compiler.pipeline import check_path
    from gxo.runtime.planfile import LoadedPlan

    result, data = check_path(path)  # gxo.runtime.files.FileProblem: not a readable regular file
    diags = result.diags.sorted()
    if diags:
        stream.write(render_text(limit_per_code(diags), result.sources))
        stream.write(summary_line(diags, 1) + "\n")
    errors = [d for d in diags if d.severity == ERROR]
    if errors and all(d.code == "not-implemented" for d in errors):
        raise NotRunnable(path)
    if errors:
        return None
    built = build_plan(result, source_bytes=data)
    namespace: dict[str, Any] = {"__name__": "gxo_plan_code"}
    exec(compile(built.code, "plan/plan_code.py", "exec"), namespace)  # noqa: S102 - our own generated code
    return LoadedPlan(plan=built.plan, functions=dict(namespace["FUNCTIONS"]),
                      plan_dir=os.path.dirname(os.path.abspath(path)), native=False)
