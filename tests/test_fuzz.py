"""Fuzzing: YAML documents, expression strings and CLI arguments never crash gxoc.

Every run must end with exit code 0, 1 or 2 and print no traceback ("bug in gxo" = exit 70
fails these tests).  1,000 examples per target, derandomised so CI is repeatable.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gxo.compiler.cli import main
from gxo.compiler.pipeline import check_source

FUZZ = settings(max_examples=1000, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

KEYS = ["name", "schemaVersion", "vars", "workloads", "lifecycle", "policy", "process", "module",
        "params", "register", "when", "loop", "loop_control", "loop_var", "parallel", "retry",
        "attempts", "delay", "timeout", "stream_inputs", "needs", "source", "cron", "restart",
        "ignore_errors", "state_policy", "channel_policy", "tasks", "command", "args", "items",
        "template", "condition", "steps", "id", "uses", "with", "path", "content", "on", "join_type"]
WORDS = ["run_once", "supervise", "event_driven", "scheduled", "exec", "passthrough", "data:map",
         "data:filter", "data:join", "control:assert", "control:identity", "stream:pipeline",
         "filesystem:write", "a", "b", "1.0.0", "v2.0.0", "echo", "*/5 * * * *", "yes"]
TEMPLATES = ["{{ .a }}", "{{ .a.b.0 }}", "{{ .x | upper }}", "{{ if .a }}x{{ end }}", "{{", "}}",
             "${SECRET}", "{{ eq .a 1 }} and {{ .b }}", "{{ range .l }}{{ . }}{{ end }}",
             "{{ ._gxo.workloads.a.status }}", "{{ nope 1 }}", "{{ .a == }}", "{{/* c */}}"]

_NEST = [("(str ", ")"), ("not ", ""), ("[", "]"), ("-(", ")"), ('{"k": ', "}"), ("", " | str"), ("", " + .a")]
#: expressions nested up to ~6 times the depth limit (past it: template-syntax, never a crash)
deep_templates = st.builds(
    lambda shape, n, cond: (("{{ .a }} == " if cond else "") + "{{ " + shape[0] * n + ".a" + shape[1] * n + " }}"),
    st.sampled_from(_NEST), st.integers(0, 400), st.booleans())

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=False),
    st.sampled_from(WORDS), st.sampled_from(TEMPLATES), st.text(max_size=12), deep_templates,
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(KEYS), inner, max_size=5),
    ),
    max_leaves=30,
)


def _workload():
    return st.fixed_dictionaries(
        {"name": st.sampled_from(["a", "b", "c", "bad name"]),
         "lifecycle": st.fixed_dictionaries({"policy": st.sampled_from(WORDS[:4] + ["nope"])}),
         "process": st.fixed_dictionaries({"module": st.sampled_from(WORDS[4:14]),
                                           "params": st.dictionaries(st.sampled_from(KEYS), values, max_size=4)})},
        optional={"register": st.sampled_from(["a", "b", "_gxo_x", "r"]),
                  "when": st.sampled_from(TEMPLATES),
                  "stream_inputs": st.lists(st.sampled_from(["a", "b", "c", "z"]), max_size=3),
                  "needs": st.lists(st.sampled_from(["a", "b", "c"]), max_size=2),
                  "loop": st.one_of(st.sampled_from(TEMPLATES), st.lists(scalars, max_size=3))},
    )


playbooks = st.fixed_dictionaries(
    {"name": st.sampled_from(["p", ""]), "schemaVersion": st.sampled_from(["1.0.0", "2.0.0", "x"]),
     "workloads": st.lists(_workload(), max_size=4)},
    optional={"vars": st.dictionaries(st.sampled_from(["a", "b", "x", "l"]), values, max_size=3)},
)


def _assert_clean(data: bytes) -> None:
    res = check_source(data, "fuzz.yaml")
    from gxo.compiler.diagnostics import render_text

    render_text(res.diags.sorted(), {"fuzz.yaml": res.source})


@FUZZ
@given(playbooks)
def test_fuzz_structured_playbooks(doc) -> None:
    _assert_clean(yaml.safe_dump(doc, sort_keys=False).encode())


@FUZZ
@given(playbooks, st.integers(0, 400), st.binary(min_size=1, max_size=6))
def test_fuzz_mutated_yaml_bytes(doc, pos, junk) -> None:
    data = yaml.safe_dump(doc, sort_keys=False).encode()
    pos = min(pos, len(data))
    _assert_clean(data[:pos] + junk + data[pos:])


@FUZZ
@given(st.lists(st.one_of(st.sampled_from(TEMPLATES), st.text(max_size=8), deep_templates), min_size=1, max_size=6))
def test_fuzz_expression_strings_in_every_site(pieces) -> None:
    text = "".join(pieces)
    doc = {"name": "p", "schemaVersion": "1.0.0", "vars": {"a": 1, "l": [1]},
           "workloads": [
               {"name": "w", "lifecycle": {"policy": "run_once"}, "when": text,
                "process": {"module": "exec", "params": {"command": "echo", "args": [text]}}, "register": "r"},
               {"name": "m", "lifecycle": {"policy": "run_once"}, "stream_inputs": ["g"],
                "process": {"module": "data:map", "params": {"template": text}}},
               {"name": "g", "lifecycle": {"policy": "run_once"},
                "process": {"module": "data:generate_from_list", "params": {"items": [1, 2]}}},
           ]}
    _assert_clean(yaml.safe_dump(doc, sort_keys=False).encode())


OPTIONS = ["check", "--format", "json", "sarif", "text", "xml", "--color", "always", "never",
           "--warnings-as-errors", "--version", "--help", "-h", "build", "--nope", "pb.yaml",
           "missing.yaml", "dir", "", "-", "--format=json"]


@FUZZ
@given(st.lists(st.sampled_from(OPTIONS), max_size=6))
def test_fuzz_cli_arguments(args) -> None:
    base = Path(os.environ.get("GXO_FUZZ_DIR", "/tmp")) / f"gxo-fuzz-{os.getpid()}"
    (base / "dir").mkdir(parents=True, exist_ok=True)
    (base / "pb.yaml").write_text("name: p\nschemaVersion: '1.0.0'\nworkloads: []\n")
    (base / "dir" / "x.yaml").write_text("name: [\n")
    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    os.chdir(base)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        os.chdir(old)
    assert code in (0, 1, 2), (args, code, err.getvalue())
    assert "Traceback" not in out.getvalue() + err.getvalue()


# ---------------------------------------------------------------------------------------------
# Deep nesting and long integers: the inputs fuzzing found (each once ended in exit 70)

from gxo.compiler.expr.parser import MAX_DEPTH  # noqa: E402
from gxo.compiler.loader import MAX_INT_DIGITS  # noqa: E402


def _site_playbook(expr: str, *, var: str = "1") -> str:
    return ("name: deep\nschemaVersion: \"1.0.0\"\nvars:\n  a: " + var + "\n  l: [1]\nworkloads:\n"
            "  - name: w\n    lifecycle: {policy: run_once}\n    process:\n      module: control:identity\n"
            "      params:\n        v: '{{ " + expr + " }}'\n")


def _check(tmp_path: Path, text: str) -> tuple[int, str]:
    (tmp_path / "p.yaml").write_text(text)
    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["check", "p.yaml"])
    finally:
        os.chdir(old)
    return code, out.getvalue() + err.getvalue()


def _nested(shape: str, n: int) -> str:
    return {
        "str": "(str " * n + ".a" + ")" * n,
        "not": "not " * n + "true",
        "plus": " + ".join([".a"] * (n + 1)),
        "list": "[" * n + "1" + "]" * n,
        "map": '{"k": ' * n + "1" + "}" * n,
        "neg": "-(" * n + ".a" + ")" * n,
        "pipe": ".a" + " | str" * n,
    }[shape]


SHAPES = ["str", "not", "plus", "list", "map", "neg", "pipe"]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("n", [MAX_DEPTH + 1, 330, 500])
def test_expression_nested_too_deep_is_a_diagnostic(tmp_path: Path, shape: str, n: int) -> None:
    code, out = _check(tmp_path, _site_playbook(_nested(shape, n)))
    assert code == 1, out
    assert "p.yaml:12:" in out and "error[template-syntax]: expression nested too deeply: more than 64 levels" in out, out
    assert "Traceback" not in out and "bug in gxo" not in out


@pytest.mark.parametrize("shape", SHAPES)
def test_expression_at_the_depth_limit_checks_clean(tmp_path: Path, shape: str) -> None:
    code, out = _check(tmp_path, _site_playbook(_nested(shape, MAX_DEPTH)))
    assert code == 0, out


def test_deep_condition_is_a_diagnostic(tmp_path: Path) -> None:
    cond = " and ".join(["{{ .a }} == 1"] * 200)
    text = _site_playbook(".a").replace("    process:", f"    when: \"{cond}\"\n    process:", 1)
    code, out = _check(tmp_path, text)
    assert code == 1 and "p.yaml:9:" in out and "expression nested too deeply" in out, out


@pytest.mark.parametrize("value", ["1" * (MAX_INT_DIGITS + 1), "-" + "9" * 5000, "0x" + "f" * 4000,
                                   "0o" + "7" * 5000, "!!int " + "1" * 4301])
def test_integer_past_the_digit_limit_is_yaml_limit(tmp_path: Path, value: str) -> None:
    code, out = _check(tmp_path, _site_playbook(".a", var=value))
    assert code == 1, out
    assert "p.yaml:4:6: error[yaml-limit]: integer too large: more than 4,300 decimal digits" in out, out


def test_integer_at_the_digit_limit_is_an_integer(tmp_path: Path) -> None:
    code, out = _check(tmp_path, _site_playbook(".a", var="9" * MAX_INT_DIGITS))
    assert code == 0, out


def test_long_integer_key_is_yaml_limit(tmp_path: Path) -> None:
    code, out = _check(tmp_path, "name: p\nschemaVersion: '1.0.0'\nvars:\n  ? " + "1" * 4301 + "\n  : 1\nworkloads: []\n")
    assert code == 1 and "error[yaml-limit]" in out, out


_WRAPPERS = [("(str ", ")"), ("not ", ""), ("[", "]"), ("(", ")"), (".a + ", ""), ("-(", ")"),
             ('{"k": ', "}"), ("(", ").a"), ("len [", "]"), ("", " | str")]


@settings(max_examples=300, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.sampled_from(_WRAPPERS), min_size=0, max_size=400))
def test_fuzz_deeply_nested_expressions(wrappers) -> None:
    text = ".a"
    for left, right in wrappers:
        text = left + text + right
    doc = {"name": "p", "schemaVersion": "1.0.0", "vars": {"a": 1},
           "workloads": [{"name": "w", "lifecycle": {"policy": "run_once"}, "when": "{{ " + text + " }}",
                          "process": {"module": "control:identity", "params": {"v": "{{ " + text + " }}"}}}]}
    res = check_source(yaml.safe_dump(doc, sort_keys=False, width=10**6).encode(), "fuzz.yaml")
    if len(wrappers) > MAX_DEPTH + 1:  # each wrapper nests at least one level
        assert any(d.code == "template-syntax" and "nested too deeply" in d.message for d in res.diags), text


@FUZZ
@given(st.integers(1, 9000).map(lambda n: "9" * n), st.sampled_from(["", "-", "0x", "0o"]))
def test_fuzz_long_integers(digits: str, prefix: str) -> None:
    if prefix == "0o":
        digits = digits.replace("9", "7")
    data = f"name: p\nschemaVersion: '1.0.0'\nvars:\n  a: {prefix}{digits}\nworkloads: []\n".encode()
    res = check_source(data, "fuzz.yaml")
    limited = any(d.code == "yaml-limit" for d in res.diags)
    assert limited == (prefix in ("", "-") and len(digits) > MAX_INT_DIGITS or
                       prefix in ("0x", "0o") and int(digits, 16 if prefix == "0x" else 8).bit_length() > 14284)


def _blocks(ranges: int, ifs: int) -> str:
    """``ranges`` nested ranges around ``ifs`` nested if/else blocks (all true: the text is x)."""
    opening = "".join(f"{{{{ range $v{k} := $.l }}}}" for k in range(ranges)) + "{{ if $.l }}" * ifs
    return opening + "x" + "{{ else }}y{{ end }}" * ifs + "{{ end }}" * ranges


def test_range_nested_too_deep_is_a_diagnostic(tmp_path: Path) -> None:
    from gxo.compiler.expr.parser import MAX_RANGE_DEPTH

    code, out = _check(tmp_path, _site_playbook(".a").replace("'{{ .a }}'", f"'{_blocks(MAX_RANGE_DEPTH + 1, 0)}'"))
    assert code == 1 and "error[template-syntax]: range nested too deeply: more than 16 ranges inside each other" in out, out


def test_expressions_at_the_depth_limit_build_and_run(tmp_path: Path) -> None:
    """The limits leave room for the generated code (Python allows 20 nested loops and 100
    indentation levels): every shape at the limit, and 16 ranges around 47 ifs, build and run."""
    import subprocess
    import sys

    from gxo.compiler.expr.parser import MAX_RANGE_DEPTH

    params = "".join(f"        {s}: '{{{{ {_nested(s, MAX_DEPTH)} }}}}'\n" for s in SHAPES)
    params += f"        blocks: '{_blocks(MAX_RANGE_DEPTH, MAX_DEPTH - MAX_RANGE_DEPTH - 1)}'\n"
    text = _site_playbook(".a").split("        v:")[0] + params
    (tmp_path / "p.yaml").write_text(text)
    bin_dir = Path(sys.executable).parent
    build = subprocess.run([bin_dir / "gxoc", "build", "--no-native", "p.yaml", "-o", "p.gxp"], cwd=tmp_path,
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stdout + build.stderr
    run = subprocess.run([bin_dir / "gxo", "exec", "p.gxp"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
