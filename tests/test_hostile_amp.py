"""Hostile input: secrets a workload could print before they are read, diagnostics of huge
source lines, and short inputs that would allocate gigabytes (printf widths, YAML aliases,
repeated strings).  Run as the real ``gxo``/``gxoc`` commands or through the real library."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

GXO = str(Path(sys.executable).with_name("gxo"))
GXOC = str(Path(sys.executable).with_name("gxoc"))


def _run(tool: str, args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    # a small environment: a workload below prints all of it
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TMPDIR", "HOME")}
    proc = subprocess.run([tool, *args], capture_output=True, text=True, cwd=cwd, env={**base, **(env or {})},
                          timeout=120)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return proc


# --------------------------------------------------------------------------- secrets

ENV_FIRST = """\
name: p
schemaVersion: "1.0.0"
workloads:
  - name: a_env
    lifecycle: {policy: run_once}
    register: envdump
    process:
      module: exec
      params: {command: /usr/bin/env}
  - name: b_secret
    lifecycle: {policy: run_once}
    needs: [a_env]
    process:
      module: exec
      params: {command: /bin/echo, args: ["${S}", '{{ secret "T" }}']}
"""


def test_secrets_are_tracked_before_the_first_workload(tmp_path: Path) -> None:
    """A workload that prints the environment before another reads the secret: hidden both in
    ``gxo run`` and in ``gxo exec`` of the built plan."""
    (tmp_path / "p.yaml").write_text(ENV_FIRST)
    env = {"S": "topsecretvalue", "T": "othersecret-42"}
    run = _run(GXO, ["run", "--json", "p.yaml"], tmp_path, env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "[REDACTED]" in run.stdout
    for value in env.values():
        assert value not in run.stdout + run.stderr
    build = _run(GXOC, ["build", "p.yaml", "-o", "p.gxp"], tmp_path)
    assert build.returncode == 0, build.stderr
    state = tmp_path / "state"
    ex = _run(GXO, ["exec", "--json", "--state-dir", str(state), "p.gxp"], tmp_path, env)
    assert ex.returncode == 0, ex.stdout + ex.stderr
    for value in env.values():
        assert value not in ex.stdout + ex.stderr
    # the run history keeps a_env's register as it was printed: redacted
    from gxo.runtime.store import open_store

    store = open_store("p", str(state), None)
    try:
        (run_id,) = [r.run_id for r in store.list_runs()]
        stored = store.load_run(run_id).workloads["a_env"].register_value
    finally:
        store.close()
    assert "S=[REDACTED]" in stored["stdout"]
    for value in env.values():
        assert value not in json.dumps(stored)


def test_a_missing_secret_is_still_an_error_only_where_it_is_read(tmp_path: Path) -> None:
    """Resolving the plan's secrets up front changes nothing for one that is not set: a run
    that never reads it succeeds, one that reads it fails that workload with the same error."""
    (tmp_path / "skip.yaml").write_text(ENV_FIRST.replace("    needs: [a_env]\n",
                                                          "    needs: [a_env]\n    when: 'false'\n"))
    run = _run(GXO, ["run", "--json", "skip.yaml"], tmp_path, {"T": "othersecret-42"})
    assert run.returncode == 0, run.stdout + run.stderr
    assert "othersecret-42" not in run.stdout
    (tmp_path / "p.yaml").write_text(ENV_FIRST)
    run = _run(GXO, ["run", "--json", "p.yaml"], tmp_path, {"T": "othersecret-42"})
    assert run.returncode == 1
    ends = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    status = {e["workload"]: e for e in ends if e.get("type") == "WorkloadEnd"}
    assert status["a_env"]["final_status"] == "Completed"
    assert status["b_secret"]["final_status"] == "Failed"
    assert "secret 'S' not found" in json.dumps(status["b_secret"])


def test_plan_secret_names_are_the_literal_ones(tmp_path: Path) -> None:
    """``${NAME}`` and ``secret "NAME"`` count; ``$${X}`` is literal text and a name computed at
    run time is not known before it is read."""
    from gxo.compiler.inmemory import compile_in_memory
    from gxo.runtime.secrets import ChainProvider, EnvProvider, Tracker, plan_secret_names, track_plan_secrets

    (tmp_path / "n.yaml").write_text("""\
name: names
schemaVersion: "1.0.0"
vars:
  which: B
workloads:
  - name: w
    lifecycle: {policy: run_once}
    process:
      module: exec
      params:
        command: /bin/echo
        args: ["${A} $${LIT}", '{{ secret "C" }}', '{{ secret .which }}']
""")
    with open(os.devnull, "w") as devnull:
        loaded = compile_in_memory(str(tmp_path / "n.yaml"), devnull)
    assert plan_secret_names(loaded.plan) == ["A", "C"]
    tracker = Tracker()
    track_plan_secrets(loaded.plan, ChainProvider([EnvProvider({"A": "alpha-value", "LIT": "literal-x"})]), tracker)
    assert "alpha-value" in tracker and "literal-x" not in tracker and len(tracker) == 1


# --------------------------------------------------------------------------- diagnostics

def _long_line_playbook(path: Path, pad: int = 2_100_000, flags: int = 100) -> None:
    path.write_text('name: p\nschemaVersion: "1.0.0"\nvars: {'
                    + ", ".join(f"k{i}: yes" for i in range(flags))
                    + ', pad: "' + "x" * pad + '"}\nworkloads: []\n')


def test_a_diagnostic_shows_a_window_of_a_long_line(tmp_path: Path) -> None:
    """A 2 MB line with 100 warnings prints each warning with a cut of the line around its
    caret, not the line itself; the column stays exact."""
    _long_line_playbook(tmp_path / "l.yaml")
    out = _run(GXOC, ["check", "l.yaml"], tmp_path)
    assert out.returncode == 1, out.stderr  # `workloads: []` is the one error
    assert len(out.stdout) < 100_000
    assert out.stdout.count("warning[bool-string]") == 100
    lines = out.stdout.splitlines()
    source = (tmp_path / "l.yaml").read_text().splitlines()[2]
    for n in (0, 99):  # the first and the last: one at the start, one deep in the line
        col = source.index(f"k{n}: yes") + len(f"k{n}: ") + 1
        head = next(i for i, line in enumerate(lines) if line.startswith(f"l.yaml:3:{col}: "))
        src, caret = lines[head + 1], lines[head + 2]
        assert len(src) <= 140
        at = caret.index("^")
        assert src[at:at + 3] == "yes" and caret[at:].rstrip() == "^~~"
    assert "…" in out.stdout
    js = _run(GXOC, ["check", "--format", "json", "l.yaml"], tmp_path)
    sarif = _run(GXOC, ["check", "--format", "sarif", "l.yaml"], tmp_path)
    assert len(js.stdout) < 100_000 and len(sarif.stdout) < 200_000


def test_snippet_window_keeps_the_caret_aligned() -> None:
    from gxo.compiler.diagnostics import Diagnostic, Span, render_text

    line = "a" * 500 + "NEEDLE" + "b" * 500
    for col, word in ((501, "NEEDLE"), (1, "aaaa"), (1003, "bbbb")):
        d = Diagnostic("yaml-syntax", "error", "x", Span("f", 1, col, 1, col + 4))
        _, src, caret = render_text([d], {"f": line}).splitlines()
        at = caret.index("^")
        assert src[at:at + 4] == word[:4], (col, src, caret)
        assert caret[at:] == "^~~~"
        assert len(src) < 140
    short = "k: v"
    d = Diagnostic("yaml-syntax", "error", "x", Span("f", 1, 4, 1, 5))
    assert render_text([d], {"f": short}).splitlines()[1:] == [" 1 | k: v", "   |    ^"]


def test_one_code_shows_at_most_a_hundred_diagnostics_per_file(tmp_path: Path) -> None:
    """5,000 ``y`` words print 100 warnings and one note counting the rest, in
    every format; the summary and the exit code still count them all."""
    (tmp_path / "m.yaml").write_text('name: p\nschemaVersion: "1.0.0"\nvars:\n  l: ['
                                     + ",".join("y" for _ in range(5000)) + "]\nworkloads: []\n")
    out = _run(GXOC, ["check", "--warnings-as-errors", "m.yaml"], tmp_path)
    assert out.returncode == 1
    assert out.stdout.count("warning[bool-string]") == 100
    assert "note[bool-string]: 4,900 more bool-string diagnostics in this file, from here on, are not shown" \
        in out.stdout
    assert "found 1 error, 5000 warnings in 1 file checked" in out.stdout
    js = _run(GXOC, ["check", "--format", "json", "m.yaml"], tmp_path)
    objs = [json.loads(line) for line in js.stdout.splitlines()]
    assert [o["severity"] for o in objs if o["code"] == "bool-string"] == ["warning"] * 100 + ["note"]
    sarif = json.loads(_run(GXOC, ["check", "--format", "sarif", "m.yaml"], tmp_path).stdout)
    assert len(sarif["runs"][0]["results"]) == 102


# --------------------------------------------------------------------------- amplification

def test_printf_width_and_precision_are_bounded() -> None:
    """``%.999999999f`` would build a 1 GB string: past 10,000 columns printf is an error that
    names the limit; at 10,000 it works."""
    import pytest

    from gxo.runtime.exprlib import EvalError, fn_printf
    from gxo.runtime.limits import MAX_FORMAT_WIDTH

    assert len(fn_printf(f"%{MAX_FORMAT_WIDTH}s", "x")) == MAX_FORMAT_WIDTH
    assert fn_printf(f"%.{MAX_FORMAT_WIDTH}f", 1.5).startswith("1.5000")
    for fmt, arg, what in (("%.10001f", 1.5, "precision 10001 of %f"), ("%10001d", 7, "width 10001 of %d"),
                           ("%-10001s", "x", "width 10001 of %s"), ("%.10001s", "x", "precision 10001 of %s"),
                           ("%" + "9" * 5000 + "v", "x", "width 999999999999… of %v")):
        with pytest.raises(EvalError, match=f"printf: the {what} is over the limit of 10,000"):
            fn_printf(fmt, arg)
    assert fn_printf("100%% %5.2f", 1.5) == "100%  1.50"


PRINTF = """\
name: pf
schemaVersion: "1.0.0"
vars:
  fmt: "%.999999999f"
workloads:
  - name: w
    lifecycle: {policy: run_once}
    process:
      module: exec
      params: {command: /bin/echo, args: [ARG]}
"""


def test_printf_limit_is_a_check_error_for_a_literal_and_a_run_error_otherwise(tmp_path: Path) -> None:
    (tmp_path / "lit.yaml").write_text(PRINTF.replace("ARG", """'{{ printf "%8s|%.999999999f" "a" 1.5 }}'"""))
    out = _run(GXOC, ["check", "lit.yaml"], tmp_path)
    assert out.returncode == 1
    assert "lit.yaml:10:54: error[expr-limit]: printf: the precision 999999999 of %f is over the limit of 10,000" \
        in out.stdout
    (tmp_path / "dyn.yaml").write_text(PRINTF.replace("ARG", "'{{ printf .fmt 1.5 }}'"))
    run = _run(GXO, ["run", "dyn.yaml"], tmp_path)
    assert run.returncode == 1
    assert "printf: the precision 999999999 of %f is over the limit of 10,000 (docs/runtime.md#limits)" in run.stdout


def _parse_playbook(content: str, fmt: str) -> str:
    return f"""\
name: parse
schemaVersion: "1.0.0"
vars:
  doc: {json.dumps(content)}
workloads:
  - name: parse
    lifecycle: {{policy: run_once}}
    process:
      module: data:parse
      params: {{content: "{{{{ .doc }}}}", format: {fmt}}}
"""


BOMB = "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 10) + "]\n" for i in range(5))


def test_data_parse_reads_yaml_and_json_within_the_loader_limits(tmp_path: Path) -> None:
    """A 218-byte alias bomb (a million nodes), nesting past 64 levels and a 5,000-digit integer
    fail the workload with the limit named; a document within the limits parses as before."""
    cases = [
        ("yaml", BOMB, "yaml past a limit: the document expands to more than 250,000 nodes"),
        ("yaml", "[" * 65 + "]" * 65, "yaml past a limit: nesting deeper than 64 levels"),
        ("yaml", "- n: " + "7" * 5000, "yaml past a limit: integer too large: more than 4,300 digits"),
        ("yaml", "- n: 0x" + "f" * 4000, "yaml past a limit: integer too large: more than 4,300 digits"),
        ("json", "[" * 65 + "]" * 65, "json past a limit: nesting deeper than 64 levels"),
        ("json", "[" * 100_000 + "]" * 100_000, "json past a limit: nesting deeper than 64 levels"),
        ("json", '[{"n": ' + "7" * 5000 + "}]", "json past a limit: integer too large: more than 4,300 digits"),
        ("yaml", "- a: &x [1, 2]\n- b: *x\n- c: yes\n", None),
        ("json", '[{"a": NaN}, {"b": ' + "7" * 4300 + "}]", None),
    ]
    for i, (fmt, content, error) in enumerate(cases):
        (tmp_path / f"p{i}.yaml").write_text(_parse_playbook(content, fmt))
        run = _run(GXO, ["run", "--json", f"p{i}.yaml"], tmp_path)
        events = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
        end = next(e for e in events if e.get("type") == "WorkloadEnd")
        if error is None:
            assert run.returncode == 0 and end["final_status"] == "Completed", (i, run.stdout[-2000:])
        else:
            assert run.returncode == 1, (i, run.stdout[-2000:])
            assert error in json.dumps(end), (i, end)


def test_from_json_is_bounded_like_data_parse() -> None:
    import pytest

    from gxo.runtime.exprlib import EvalError, fn_fromJson

    assert fn_fromJson('{"a": [1, {"b": null}]}') == {"a": [1, {"b": None}]}
    with pytest.raises(EvalError, match="fromJson: nesting deeper than 64 levels"):
        fn_fromJson("[" * 65 + "]" * 65)
    with pytest.raises(EvalError, match="fromJson: nesting deeper than 64 levels"):
        fn_fromJson("[" * 100_000 + "]" * 100_000)
    with pytest.raises(EvalError, match="fromJson: integer too large"):
        fn_fromJson("7" * 5000)
    with pytest.raises(EvalError, match="fromJson: not valid JSON: NaN is not JSON"):
        fn_fromJson("NaN")


def test_yaml_and_json_count_nesting_alike() -> None:
    import pytest

    from gxo.runtime.limits import LimitExceeded, load_json, load_yaml

    assert load_json("[" * 64 + "]" * 64) == load_yaml("[" * 64 + "]" * 64)
    for load in (load_json, load_yaml):
        with pytest.raises(LimitExceeded, match="nesting deeper than 64 levels"):
            load("[" * 65 + "]" * 65)


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path: Path) -> None:
    """``&a [1, *a]`` expands forever: the playbook loader and run-time YAML refuse it like an
    alias bomb (the checker used to end in an internal error)."""
    import pytest

    from gxo.runtime.limits import LimitExceeded, load_yaml

    (tmp_path / "rr.yaml").write_text('name: rr\nschemaVersion: "1.0.0"\nvars:\n  a: &a [1, *a]\nworkloads: []\n')
    out = _run(GXOC, ["check", "rr.yaml"], tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "rr.yaml:1:1: error[yaml-limit]: the document expands to more than 250,000 nodes" in out.stdout
    for doc in ("- &a [1, *a]\n", "- &m {k: *m}\n"):
        with pytest.raises(LimitExceeded, match="alias inside its own anchor"):
            load_yaml(doc)
