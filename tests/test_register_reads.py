"""A register holds what the plan reads of it: ``Workload.register_reads`` and exec's
``stdout_lines``.

The compiler records which fields of each register the plan's expressions read; the kernel
tells a module which of its derived summary fields nothing reads (``Context.unread``), and
``exec`` then leaves ``stdout_lines`` out: a million lines of output are a million strings
(about 60 MB) that nothing would read.  Whatever reads the register whole (``{{ .r }}``, the
whole state ``{{ . }}``), deeper than its fields (a looped workload's results), a sink that
takes every event (``--json``) or a module's ``ctx.state()`` still gets the field.
"""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from kernel_util import build
from kernel_util import run as run_kernel

HEAD = 'name: rr\nschemaVersion: "1.0.0"\nworkloads:\n'

SAY = """\
- name: say
  lifecycle: {policy: run_once}
  process: {module: exec, params: {command: printf, args: ["a\\\\nb\\\\n"]}}
  register: said
"""


def plan_of(workloads: str) -> Any:
    return build(HEAD + textwrap.indent(textwrap.dedent(workloads), "  "))


def reads(workloads: str, name: str = "say") -> tuple[str, ...] | None:
    return plan_of(workloads).plan.workload(name).register_reads


def reader(template: str) -> str:
    return f"""\
- name: show
  lifecycle: {{policy: run_once}}
  process: {{module: exec, params: {{command: echo, args: ['{template}']}}}}
  register: shown
"""


@pytest.mark.parametrize(("template", "expected"), [
    ("{{ .said.stdout }}", ("stdout",)),
    ("{{ .said.exit_code }} {{ index .said.stdout_lines 1 }}", ("exit_code", "stdout_lines")),
    ("{{ toJson .said }}", None),  # the whole register
    ("{{ toJson . }}", None),  # the whole state
    ("nothing of it", ()),
])
def test_the_compiler_records_the_fields_read(template: str, expected: tuple[str, ...] | None) -> None:
    assert reads(SAY + reader(template)) == expected


def test_a_looped_workload_and_no_register_read_whole() -> None:
    looped = SAY.replace("  register:", "  loop: [1, 2]\n  register:")
    assert reads(looped + reader("{{ (index .said 0).stdout }}")) is None
    assert reads(SAY.replace("  register: said\n", "") + reader("x")) is None  # no register: nothing to say
    # the field read is the one after the register's name, in any workload's expression
    when = SAY + reader("x").replace("  register:", "  when: '{{ eq .said.exit_code 0 }}'\n  register:")
    assert reads(when) == ("exit_code",)


def test_the_manifest_writes_the_fields_read() -> None:
    from gxo.runtime.plan import encode_manifest

    raw = encode_manifest(plan_of(SAY + reader("{{ .said.stdout }}")).plan).decode()
    assert '"register_reads": [\n        "stdout"\n      ]' in raw
    assert raw.count('"register_reads"') == 2  # say's, and show's (read by nothing: [])


class _Typed:
    """A sink that takes some event types only (as the plain output does), not every event."""

    types = frozenset({"WorkloadEnd"})

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)


def run(workloads: str, sink: Any) -> Any:
    kernel, report = run_kernel(plan_of(workloads), sink)
    assert not report.failed, [(n, r.status, r.reason) for n, r in kernel.results.items()]
    return kernel


def test_exec_leaves_out_the_lines_nothing_reads() -> None:
    kernel = run(SAY + reader("{{ .said.stdout }}"), _Typed())
    said = kernel.state.get_all("deep_copy")["said"]
    assert said["stdout"] == "a\nb" and "stdout_lines" not in said
    assert kernel.state.get_all("deep_copy")["shown"]["stdout"] == "a\nb"
    # what a module reads of the state (ctx.state()) has the field all the same
    assert kernel._state_view("deep_copy")["said"]["stdout_lines"] == ["a", "b"]


def test_the_lines_are_there_for_who_reads_them() -> None:
    kernel = run(SAY + reader("{{ index .said.stdout_lines 1 }}"), _Typed())
    assert kernel.state.get_all("deep_copy")["said"]["stdout_lines"] == ["a", "b"]
    assert kernel.state.get_all("deep_copy")["shown"]["stdout"] == "b"
    whole = run(SAY + reader("{{ len .said }}"), _Typed())  # read whole: every field counts
    assert whole.state.get_all("deep_copy")["said"]["stdout_lines"] == ["a", "b"]


def test_a_sink_of_every_event_gets_the_lines() -> None:
    """``--json`` (a sink without ``types``) shows each summary whole."""
    events: list[dict[str, Any]] = []
    kernel = run(SAY + reader("{{ .said.stdout }}"), events.append)
    ends = [e for e in events if e["type"] == "ModuleExecutionEnd" and e["workload"] == "say"]
    assert ends[0]["summary"]["stdout_lines"] == ["a", "b"]
    assert kernel.state.get_all("deep_copy")["said"]["stdout_lines"] == ["a", "b"]
