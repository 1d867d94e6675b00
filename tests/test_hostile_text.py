"""Hostile input: text that grows from a short playbook (a string doubled in a loop, through a
chain of workloads, by ``printf``, ``join``, ``replace``, ``toJson``...).  Past
``MAX_TEXT_CHARS`` the expression fails its workload with a message naming the limit, in the
generated code and in the run-time helpers alike, before the text is built."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from gxo.compiler.codegen import CodegenItem, render_plan_code
from gxo.compiler.expr import ast
from gxo.compiler.expr.parser import parse_template
from gxo.runtime import exprlib
from gxo.runtime.exprlib import BasicContext, EvalError
from gxo.runtime.limits import MAX_TEXT_CHARS
from test_hostile import run_hostile

LIMIT = "over the limit of 16,777,216 (docs/runtime.md#limits)"
M = MAX_TEXT_CHARS


def test_the_limit_is_16_mib_of_characters() -> None:
    assert MAX_TEXT_CHARS == 16 * 1024 * 1024
    assert LIMIT.startswith(f"over the limit of {MAX_TEXT_CHARS:,}")


# --------------------------------------------------------------------------- whole runs

def _exec_playbook(tmp_path: Path, arg: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(f"""\
name: p
schemaVersion: "1.0.0"
workloads:
  - name: a
    lifecycle: {{policy: run_once}}
    process:
      module: exec
      params: {{command: /bin/true, args: ['{arg}']}}
""")
    return path


@pytest.mark.parametrize(("arg", "what"), [
    ('{{ $x := "ab" }}{{ range 30 }}{{ $x = print $x $x }}{{ end }}', "print"),
    ('{{ $x := "ab" }}{{ range 30 }}{{ $x = printf "%s%s" $x $x }}{{ end }}', "printf"),
    ('{{ $x := "ab" }}{{ range 30 }}{{ $x = $x + $x }}{{ end }}', "+"),
    ('{{ $x := "ab" }}{{ range 30 }}{{ $x = print $x "" | replace "a" "aa" | replace "b" "bb" }}{{ end }}',
     "replace"),
    ('{{ $x := "ab" }}{{ range 30 }}{{ $x = $x | regex_replace "^(.*)$" `\\1\\1` }}{{ end }}', "regex_replace"),
    ('{{ $x := "ab" }}{{ range 30 }}{{ $x = toJson (list $x $x) }}{{ end }}', "toJson"),
    ('{{ $l := list "ab" }}{{ range 40 }}{{ $l = list $l $l }}{{ end }}{{ toJson $l }}', "toJson"),
    # a list of 524,288 items: 17 MiB of text once joined by 31 characters
    ('{{ $l := list "ab" }}{{ range 19 }}{{ $l = $l + $l }}{{ end }}{{ join "-------------------------------" $l }}',
     "join"),
    ('{{ $x := "ab" }}{{ range 22 }}{{ $x = print $x $x }}{{ end }}{{ range 1000 }}{{ $x }}{{ end }}', "template"),
    ('{{ range 1000000000 }}text{{ end }}', "template"),
    ('{{ $x := "ab" }}{{ range 23 }}{{ $x = print $x $x }}{{ end }}{{ $x }}{{ $x }}', "template"),
])
def test_text_grown_in_a_template_fails_the_workload_naming_the_limit(tmp_path: Path, arg: str, what: str) -> None:
    """Each would take gigabytes (or minutes): exit 1, the message names the limit, under
    100 MB of RSS."""
    path = _exec_playbook(tmp_path, arg)
    r = run_hostile(["gxo", "run", path], expect_rc=1, message=f"{what}: the text would be", cwd=tmp_path)
    assert LIMIT in r.stdout
    assert "failed=1" in r.stdout


@pytest.mark.parametrize(("arg", "message"), [
    # a list doubled 30 times: 2**30 items (8 GiB of pointers)
    ('{{ $l := list 1 2 }}{{ range 30 }}{{ $l = $l + $l }}{{ end }}{{ len $l }}',
     "+: the list would hold 1,048,576 items, over the limit of 1,000,000"),
    ('{{ $x := "ab" }}{{ range 23 }}{{ $x = print $x $x }}{{ end }}{{ len (split "" $x) }}',
     "split: the list would hold 16,777,216 items, over the limit of 1,000,000"),
    # an integer squared 40 times: 2**40 bits
    ('{{ $x := 3 }}{{ range 40 }}{{ $x = $x * $x }}{{ end }}{{ $x }}',
     "*: the product would have more than 14,284 bits, over the integer limit"),
])
def test_lists_and_integers_grown_in_a_template_fail_naming_the_limit(tmp_path: Path, arg: str,
                                                                     message: str) -> None:
    path = _exec_playbook(tmp_path, arg)
    r = run_hostile(["gxo", "run", path], expect_rc=1, message=message, cwd=tmp_path)
    assert "failed=1" in r.stdout


def test_a_chain_of_workloads_doubling_a_register_stops_at_the_limit(tmp_path: Path) -> None:
    lines = ['name: chain', 'schemaVersion: "1.0.0"', 'workloads:',
             '  - name: w0', '    lifecycle: {policy: run_once}', '    register: r0',
             '    process: {module: control:identity, params: {v: "ab"}}']
    for i in range(1, 31):
        lines += [f'  - name: w{i}', '    lifecycle: {policy: run_once}', f'    register: r{i}',
                  "    process: {module: control:identity, params: {v: "
                  f'"{{{{ print .r{i - 1}.v .r{i - 1}.v }}}}"}}}}']
    path = tmp_path / "chain.yaml"
    path.write_text("\n".join(lines) + "\n")
    r = run_hostile(["gxo", "run", path], expect_rc=1, cwd=tmp_path,
                    message=f"print: the text would be 33,554,432 characters, {LIMIT}")
    assert "ok=24 " in r.stdout and "failed=1 " in r.stdout  # 2 * 2**23 = 16 MiB still fits


def test_a_one_megabyte_string_still_works(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text("""\
name: ok
schemaVersion: "1.0.0"
workloads:
  - name: build
    lifecycle: {policy: run_once}
    register: big
    process:
      module: control:identity
      params:
        v: '{{ $x := "ab" }}{{ range 19 }}{{ $x = print $x $x }}{{ end }}{{ range 2 }}{{ $x }}{{ end }}'
  - name: check
    lifecycle: {policy: run_once}
    needs: [build]
    process:
      module: control:assert
      params:
        condition: >-
          {{ len (toJson (.big.v | replace "a" "xyz")) }} == 4194306
          and {{ len (join "," (list .big.v .big.v)) }} == 4194305
""")
    run_hostile(["gxo", "run", path], expect_rc=0, cwd=tmp_path)


# --------------------------------------------------------------------------- the generated code

def _run(template: str, scope: dict[str, Any]) -> Any:
    tree, errors = parse_template(template)
    assert tree is not None and not errors, errors
    native = isinstance(tree, ast.Template) and tree.single is not None
    item = CodegenItem(id="e0", tree=tree, native=native, as_text=False, source="p.yaml:1:1 params.x of 'w'")
    ns: dict[str, Any] = {}
    exec(compile(render_plan_code([item], header="test"), "plan/plan_code.py", "exec"), ns)  # noqa: S102
    return dict(ns["FUNCTIONS"])["e0"](scope, BasicContext())


HALF = "a" * (M // 2)


@pytest.mark.parametrize(("template", "what"), [
    ("{{ .h }}{{ .h }}x", "template"),  # concatenation: counted before it is built
    ("{{ .h }}-{{ .l }}", "template"),  # a list's text form is measured
    ("{{ range .two }}{{ . }}{{ end }}y", "template"),  # a range's text, item by item
    ("{{ range .two }}{{ $.h }}{{ end }}", "template"),
    ("{{ if .h }}{{ .h }}{{ .h }}{{ end }}", "template"),
    ("{{ .h + .h + .h }}", "+"),
    ("{{ .h | replace \"a\" \"ab\" }}", "replace"),
    ('{"k": "{{ .h }}{{ .h }}{{ .h }}"}', "template"),
])
def test_generated_code_checks_text_before_building_it(template: str, what: str) -> None:
    scope = {"h": HALF + "a", "l": [HALF], "two": [HALF, HALF, HALF]}
    with pytest.raises(EvalError, match=f"^{re.escape(what)}: the text would be [0-9,]+ characters, over the limit"):
        _run(template, scope)


def test_generated_code_at_the_limit_works() -> None:
    scope = {"h": HALF, "two": [HALF, HALF]}
    assert len(_run("{{ .h }}{{ .h }}", scope)) == M
    assert len(_run("{{ range .two }}{{ . }}{{ end }}", scope)) == M
    assert _run("{{ range .n }}{{ $x := 1 }}{{ end }}-", {"n": 5}) == "-"  # no text: nothing kept
    assert _run("{{ range 10000 }}{{ . }},{{ end }}", {}) == ",".join(map(str, range(10000))) + ","


# --------------------------------------------------------------------------- the helpers

def test_each_text_building_function_refuses_past_the_limit() -> None:
    big = "a" * M
    cases = [
        ("print", lambda: exprlib.fn_print(big, "b")),
        ("println", lambda: exprlib.fn_println(big)),
        ("printf", lambda: exprlib.fn_printf("%s%s", HALF, HALF + "b")),
        ("+", lambda: exprlib.op_add(big, "b")),
        ("join", lambda: exprlib.fn_join(",", [HALF, HALF])),
        ("join", lambda: exprlib.fn_join("", [1, HALF, HALF])),
        ("replace", lambda: exprlib.fn_replace("a", "aa", HALF + "a")),
        ("replace", lambda: exprlib.fn_replace("", "x", HALF)),
        ("regex_replace", lambda: exprlib.fn_regex_replace("^", HALF + "a", HALF)),
        ("regex_replace", lambda: exprlib.fn_regex_replace("(a+)", "\\1\\1", HALF + "ab")),
        ("regex_replace", lambda: exprlib.fn_regex_replace("", "x" * (M // 100), "a" * 100)),
        ("toJson", lambda: exprlib.fn_toJson([big])),
        ("toJson", lambda: exprlib.fn_toJson("\x00" * (M // 5))),  # escapes: 6 characters each
        ("quote", lambda: exprlib.fn_quote(big)),
        ("the text form", lambda: exprlib.text([HALF, HALF])),
        ("b64enc", lambda: exprlib.fn_b64enc("a" * (M // 4 * 3 + 1))),
        ("urlquery", lambda: exprlib.fn_urlquery("é" * (M // 6 + 1))),
        ("title", lambda: exprlib.fn_title("ß " * (M // 3 + 1))),  # each word: "SS " (1.5 s)
    ]
    for what, call in cases:
        with pytest.raises(EvalError, match=f"^{re.escape(what)}: the text would be [0-9,]+ characters, over"):
            call()


def test_each_text_building_function_works_at_the_limit() -> None:
    big = "a" * M
    assert len(exprlib.fn_print(HALF, HALF)) == M
    assert len(exprlib.fn_printf("%s%s", HALF, HALF)) == M
    assert len(exprlib.op_add(HALF, HALF)) == M
    assert len(exprlib.fn_join("", [HALF, HALF])) == M
    assert len(exprlib.fn_replace("a", "aa", HALF)) == M
    assert len(exprlib.fn_regex_replace("^", HALF, HALF)) == M
    assert len(exprlib.fn_regex_replace("(a+)", "\\1\\1", HALF[1:])) == M - 2  # counted as M
    assert exprlib.fn_regex_replace("", "-", "abc") == "-a-b-c-"
    assert exprlib.fn_regex_replace("(b)", "\\1\\1", "abc") == "abbc"
    assert len(exprlib.fn_toJson([big[: M - 4]])) == M
    assert exprlib.fn_toJson({"a": [1, "x", None]}) == '{"a":[1,"x",null]}'
    assert exprlib.text([big[: M - 4]]) == '["' + big[: M - 4] + '"]'
    assert exprlib.fn_title("hello wide world") == "Hello Wide World"


def test_json_size_measures_shared_values_once() -> None:
    """A list doubled 60 times has 2**60 leaves: its size is known in 60 steps."""
    v: object = ["ab"]
    for _ in range(60):
        v = [v, v]
    assert exprlib.json_size(v) > M
    with pytest.raises(EvalError, match="^toJson: the text would be"):
        exprlib.fn_toJson(v)
    assert 20 <= exprlib.json_size({"a": ["xy", 1, None], "bc": {}}) <= len('{"a":["xy",1,null],"bc":{}}')
    loop: list[object] = []
    loop.append(loop)
    assert exprlib.json_size(loop) > M  # a value inside itself


def test_native_code_of_a_built_plan_stops_at_the_limit(tmp_path: Path) -> None:
    """Per loop item the expressions are compiled (Cython where a C compiler is around): the
    same checks, the same message."""
    (tmp_path / "loop.yaml").write_text("""\
name: loop
schemaVersion: "1.0.0"
workloads:
  - name: a
    lifecycle: {policy: run_once}
    loop: [1, 2]
    process:
      module: exec
      params: {command: /bin/true, args: ['{{ $y := "ab" }}{{ range 30 }}{{ $y = $y + $y }}{{ end }}']}
""")
    run_hostile(["gxoc", "build", "loop.yaml", "-o", "loop.gxp"], expect_rc=0, cwd=tmp_path, max_rss_mb=1000,
                timeout=300)
    run_hostile(["gxo", "exec", "--state-dir", tmp_path / "state", "loop.gxp"], expect_rc=1,
                message=f"+: the text would be 33,554,432 characters, {LIMIT}", cwd=tmp_path)


def test_the_usual_values_are_measured_exactly_and_printed_as_before() -> None:
    """A value printed at every item (a record, a list of names) takes the short way; its
    text is the same JSON as ever, and json_size is its length from below."""
    for v in ({"name": "web", "port": 8080, "tags": ["a", "b"], "on": True, "none": None},
              ["alice", "bob"], (1, 2.5), [], {}, [[[]]], {"a": {"b": {"c": "é"}}}):
        assert exprlib._tree_size(v, [4096]) == exprlib.json_size(v) <= len(exprlib.text(v))
    deep: object = []
    for _ in range(40):
        deep = [deep]
    assert exprlib._tree_size(deep, [4096]) == -1  # too deep for the short way
    assert exprlib.text(deep) == "[" * 41 + "]" * 41
    assert exprlib.fn_join(",", []) == ""
    assert exprlib.fn_join(",", [1, "a", [2], {"k": None}]) == '1,a,[2],{"k":null}'
