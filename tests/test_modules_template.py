"""template:render: the playbook's template compiled ahead of time, called at run time with
``vars`` over the state (gxoc check, gxo run, gxoc build + gxo exec in real processes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from acceptance.harness import build, gxo_exec, gxo_run, run_tool, summary_of

HEAD = 'name: tpl\nschemaVersion: "1.0.0"\nvars:\n  who: world\n  n: 1\nworkloads:\n'

PLAYBOOK = HEAD + """\
  - name: first
    lifecycle: {policy: run_once}
    process:
      module: control:identity
      params: {count: 3, text: '{{ "{{ .who }}" }}'}
    register: one

  - name: render
    lifecycle: {policy: run_once}
    process:
      module: template:render
      params:
        template: "Hello {{ .who }}: {{ .greeting }}, {{ .one.count }} x {{ .n }}; {{ .one.text }}"
        vars: {greeting: "hi {{ .who }}", n: 2}
    register: out

  - name: plain
    lifecycle: {policy: run_once}
    process:
      module: template:render
      params: {template: "no actions at all"}

  - name: number
    lifecycle: {policy: run_once}
    process:
      module: template:render
      params:
        template: "{{ .total }}"
        vars: {total: 42}

  - name: reader
    lifecycle: {policy: run_once}
    process:
      module: test:assert
      params:
        assertions:
          - {actual: "{{ .out.rendered | len }}", equal_to: 40}
"""

RENDERED = "Hello world: hi world, 3 x 2; {{ .who }}"


def _write(work: Path, text: str) -> Path:
    path = work / "pb.yaml"
    path.write_text(text)
    return path


def test_render_with_state_vars_and_a_register(tmp_path: Path) -> None:
    pb = _write(tmp_path, PLAYBOOK)
    check = run_tool("gxoc", "check", pb)
    assert check.rc == 0, check.explain()
    for run in (gxo_run(pb), gxo_exec(build(pb, tmp_path))):
        assert run.rc == 0, run.explain()
        # vars sit over the state (n), their own templates see the state, a register is read,
        # and a value holding template text is inserted as text, never parsed again
        assert summary_of(run, "render") == {"rendered": RENDERED}
        assert summary_of(run, "plain") == {"rendered": "no actions at all"}
        assert summary_of(run, "number") == {"rendered": "42"}  # always text
        assert run.status("reader") == "Completed"  # a later workload reads the register
    assert len(RENDERED) == 40


def test_the_order_follows_the_register(tmp_path: Path) -> None:
    # `render` reads `one`: the compiler orders it after `first` without any needs
    run = gxo_run(_write(tmp_path, PLAYBOOK))
    starts = [e["workload"] for e in run.of("ModuleExecutionStart")]
    assert starts.index("first") < starts.index("render") < starts.index("reader")


def test_a_secret_is_redacted_in_the_rendered_summary(tmp_path: Path) -> None:
    secret = "s3cr3t-T0KEN-value"
    pb = _write(tmp_path, HEAD + """\
  - name: render
    lifecycle: {policy: run_once}
    process:
      module: template:render
      params:
        template: 'token={{ secret "GXO_TPL_TOKEN" }} for {{ .who }}'
""")
    check = run_tool("gxoc", "check", pb)
    assert "warning[secret-in-log]" in check.stdout, check.explain()  # said at build time
    run = gxo_run(pb, env={"GXO_TPL_TOKEN": secret})
    assert run.rc == 0, run.explain()
    assert summary_of(run, "render") == {"rendered": "token=[REDACTED] for world"}
    assert secret.encode() not in run.raw


@pytest.mark.parametrize(("template", "vars_", "message"), [
    ("{{ .nope }}", "{a: 1}", "pb.yaml:11:31: error[undefined-name]"),
    ("{{ .a.b }}", "{a: 1}", "error[unknown-field]"),  # typed from the literal vars
    ("{{ .a | bogus }}", "{a: 1}", "error[unknown-function]"),
    ("{{ .a ", "{a: 1}", "error[template-syntax]"),
])
def test_check_time_errors_inside_the_template(tmp_path: Path, template: str, vars_: str,
                                               message: str) -> None:
    pb = _write(tmp_path, HEAD + f"""\
  - name: render
    lifecycle: {{policy: run_once}}
    process:
      module: template:render
      params: {{template: "{template}", vars: {vars_}}}
""")
    check = run_tool("gxoc", "check", pb)
    assert check.rc == 1 and message in check.stdout, check.explain()
    if "undefined-name" in message:  # and the build refuses it too
        built = run_tool("gxoc", "build", "--no-native", pb, "-o", tmp_path / "pb.gxp")
        assert built.rc == 1 and not (tmp_path / "pb.gxp").exists()


@pytest.mark.parametrize(("template", "rendered", "error"), [
    ("{{ .k }}-{{ .who }}", "v-world", None),  # vars from an expression open the scope
    ("{{ .other }}", None, "(params.template): no field 'other'"),  # a missing key: one line
])
def test_vars_from_an_expression(tmp_path: Path, template: str, rendered: str | None, error: str | None) -> None:
    pb = _write(tmp_path, HEAD + f"""\
  - name: src
    lifecycle: {{policy: run_once}}
    process:
      module: control:identity
      params: {{m: {{k: v}}}}
    register: src
  - name: render
    lifecycle: {{policy: run_once}}
    process:
      module: template:render
      params: {{template: "{template}", vars: "{{{{ .src.m }}}}"}}
""")
    run = gxo_run(pb)
    if error is None:
        assert run.rc == 0, run.explain()
        assert summary_of(run, "render") == {"rendered": rendered}
    else:
        assert run.status("render") == "Failed", run.explain()
        out = run.stdout + run.stderr
        assert error in out and "Traceback" not in out


def test_bad_params_are_check_errors(tmp_path: Path) -> None:
    pb = _write(tmp_path, HEAD + """\
  - name: render
    lifecycle: {policy: run_once}
    process:
      module: template:render
      params: {template: 5, vars: [1]}
""")
    check = run_tool("gxoc", "check", pb)
    assert check.rc == 1 and check.stdout.count("error[invalid-value]") == 2, check.explain()


def test_in_a_pipeline_step_and_under_a_loop(tmp_path: Path) -> None:
    pb = _write(tmp_path, HEAD + """\
  - name: items
    lifecycle: {policy: run_once}
    process:
      module: data:generate_from_list
      params: {items: [{host: a}, {host: b}]}
  - name: pipe
    lifecycle: {policy: run_once}
    stream_inputs: [items]
    process:
      module: stream:pipeline
      params:
        steps:
          - id: r
            uses: template:render
            with: {template: "{{ .host }}-{{ .x }}-{{ .who }}", vars: {x: "X{{ .host }}"}}
          - id: check
            uses: test:assert
            with:
              assertions:
                - {actual: "{{ .r.rendered }}", equal_to: "{{ .host }}-X{{ .host }}-world"}
  - name: looped
    lifecycle: {policy: run_once}
    loop: [1, 2]
    process:
      module: template:render
      params: {template: "{{ .item }}/{{ .y }}/{{ .n }}", vars: {y: "{{ .item }}"}}
""")
    run = gxo_run(pb)
    assert run.rc == 0, run.explain()
    assert summary_of(run, "pipe")["steps"]["check"] == {"assertions_passed": 1}
    assert summary_of(run, "pipe")["records_processed"] == 2
    ends = [e["summary"] for e in run.of("ModuleExecutionEnd", "looped")]
    assert sorted(s["rendered"] for s in ends) == ["1/1/1", "2/2/1"]


def test_a_dry_run_renders_too(tmp_path: Path) -> None:
    # pure and local: a dry run renders for real (nothing outside is touched)
    run = gxo_run(_write(tmp_path, PLAYBOOK), "--dry-run")
    assert run.rc == 0, run.explain()
    assert summary_of(run, "render") == {"rendered": RENDERED}
