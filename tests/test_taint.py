"""The compiler's taint map (``Expression.secret``, ``Workload.secret_params``) and the kernel
tracking what tainted expressions compute: a value computed from a secret, through vars, loop
variables, registers and any function, is redacted like the secret itself."""

from __future__ import annotations

from gxo.compiler.emit import build_plan
from gxo.compiler.pipeline import check_source
from gxo.runtime.secrets import REDACTED, Tracker

PLAYBOOK = """\
name: taint
schemaVersion: "1.0.0"
vars:
  plain: hello
  tok: '{{ secret "TOK" }}'
  tok_upper: '{{ .tok | upper }}'
  greeting: '{{ .plain | upper }}'
workloads:
  - name: use_var
    lifecycle: {policy: run_once}
    process:
      module: exec
      params: {command: echo, args: ['{{ .tok_upper | lower }}', '{{ .greeting }}']}
    register: used

  - name: read_register
    lifecycle: {policy: run_once}
    process:
      module: control:identity
      params: {out: '{{ .used.stdout | trim }}', code: '{{ .used.exit_code }}'}
    register: copied

  - name: second_hop
    lifecycle: {policy: run_once}
    when: '{{ .copied.code }} == 0'
    process:
      module: exec
      params: {command: echo, args: ['{{ .copied.out | replace "a" "b" }}']}

  - name: looped
    lifecycle: {policy: run_once}
    loop: '{{ secret "LIST" | split "," }}'
    process:
      module: exec
      params: {command: echo, args: ['{{ .item | b64enc }}']}

  - name: clean
    lifecycle: {policy: run_once}
    process:
      module: exec
      params: {command: echo, args: ['{{ .plain }}', '{{ ._gxo.workloads.use_var.status }}']}
"""


def _plan(text: str = PLAYBOOK):
    result = check_source(text.encode(), "taint.yaml")
    assert not result.diags.has_errors, [d.message for d in result.diags.items]
    return build_plan(result, source_bytes=text.encode()).plan


def _tainted(plan) -> dict[str, bool]:
    return {f"{e.workload or 'vars'}:{e.where}": e.secret for e in plan.expressions}


def test_taint_flows_through_vars_registers_loops_and_functions() -> None:
    assert _tainted(_plan()) == {
        "vars:vars.tok": True,
        "vars:vars.tok_upper": True,  # a var reading a tainted var
        "vars:vars.greeting": False,
        "use_var:params.args[0]": True,  # through a var, then a function
        "use_var:params.args[1]": False,
        "read_register:params.out": True,  # the register of a workload whose params were tainted
        "read_register:params.code": True,
        "second_hop:when": True,  # transitively: a register of a register
        "second_hop:params.args[0]": True,
        "looped:loop": True,
        "looped:params.args[0]": True,  # the loop variable of a tainted loop
        "clean:params.args[0]": False,
        "clean:params.args[1]": False,  # statuses are not tainted
    }


def test_secret_params_use_the_taint_map() -> None:
    plan = _plan()
    assert plan.workload("use_var").secret_params == ("params.args[0]",)
    assert plan.workload("second_hop").secret_params == ("params.args[0]",)
    assert plan.workload("clean").secret_params == ()


def test_tracker_add_derived_keeps_text_of_four_characters_or_more() -> None:
    t = Tracker()
    t.add_derived({"a": ["UPPER-TOKEN", "abc", 12345, True, None], "b": "x"})
    assert "UPPER-TOKEN" in t and "abc" not in t and len(t) == 1  # short text, numbers: not tracked
    assert t.redact("see UPPER-TOKEN, 12345, abc") == f"see {REDACTED}, 12345, abc"
    t.add_derived(REDACTED)  # the marker itself is never a secret
    t.add_derived(f"user:{REDACTED}@host")  # redacted already (read from a register)
    assert len(t) == 1


def test_kernel_tracks_what_tainted_expressions_compute(tmp_path) -> None:
    """The real kernel on the playbook above: ``upper``/``lower``/``b64enc`` of secrets and
    a register read are tracked before use, the clean expressions are not."""
    import asyncio
    import os

    from gxo.compiler.inmemory import compile_in_memory
    from gxo.runtime.events import Events
    from gxo.runtime.kernel import Kernel, RunOptions
    from gxo.runtime.secrets import EnvProvider
    from gxo.runtime.state import StateStore
    from gxo.runtime.workspace import Workspace

    pb = tmp_path / "taint.yaml"
    pb.write_text(PLAYBOOK)
    with open(os.devnull, "w") as devnull:
        loaded = compile_in_memory(str(pb), devnull)
    tracker = Tracker()
    secrets = EnvProvider({"TOK": "tok-Secret-1", "LIST": "first-item,second-item"})
    seen: list[dict] = []
    events = Events("taint", tracker.redact_value)
    events.add(seen.append)
    workspace = Workspace.create()
    try:
        kernel = Kernel(loaded.plan, loaded.functions, state=StateStore(), workspace=workspace, secrets=secrets,
                        tracker=tracker, events=events, options=RunOptions())
        report = asyncio.run(kernel.run())
    finally:
        workspace.remove()
    assert not report.failed, {n: r.reason for n, r in report.results.items()}
    for value in ("tok-Secret-1", "TOK-SECRET-1", "tok-secret-1", "first-item",
                  "c2Vjb25kLWl0ZW0="):  # the last: b64enc of "second-item"
        assert value in tracker, value
    assert "hello" not in tracker and "HELLO" not in tracker
    text = repr(seen)
    for value in ("TOK-SECRET-1", "tok-secret-1", "c2Vjb25kLWl0ZW0="):
        assert value not in text
    assert "HELLO" in text  # the clean var's value is shown
