"""Expressions compiled ahead of time: gxo.compiler.codegen + gxo.runtime.exprlib.

Every construct and every function of the language is generated into a ``plan_code`` module,
executed, and its result compared (table-driven); then errors, the text form, determinism of
the source and of its bytecode across ``PYTHONHASHSEED`` values, and a Cython build of the
generated module (same results as the pure module).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from gxo.compiler.codegen import CodegenError, CodegenItem, functions_of, render_plan_code, render_shard
from gxo.compiler.expr import ast
from gxo.compiler.expr.functions import FUNCTIONS as SIGNATURES
from gxo.compiler.expr.parser import parse_condition, parse_template
from gxo.runtime import exprlib
from gxo.runtime.exprlib import BasicContext, EvalError, text

NOW = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)

STATE: dict[str, Any] = {
    "name": "ann",
    "env": "production",
    "n": 12,
    "f": 2.5,
    "flag": True,
    "off": False,
    "nothing": None,
    "empty": "",
    "zero": 0,
    "users": ["alice", "bob"],
    "none": [],
    "rows": [{"id": 1, "tags": ["x"]}, {"id": 2, "tags": []}],
    "labels": {"b": "2", "a": "1"},
    "headers": {"Content-Type": "json"},
    "nums": {"0": "zero-key"},
    "r": {"stdout": "12%\n", "exit_code": 2},
    "csv": "a,b,,c",
    "line": "  hello world  ",
    "json": '{"id": 7, "ok": true}',
    "b64": base64.b64encode("héllo".encode()).decode(),
    "owner": {"name": "zed"},
    "_gxo": {"workloads": {"build": {"status": "Completed"}}},
}


def ctx() -> BasicContext:
    return BasicContext({"TOK": "s3cr3t", "F": "on"}, {"HOME": "/home/x"}, now=lambda: NOW)


def item(text_: str, i: int = 0, *, condition: bool = False, as_text: bool = False) -> CodegenItem:
    tree: ast.Template | ast.Condition | None
    tree, errors = (parse_condition if condition else parse_template)(text_)
    assert tree is not None and not errors, errors
    native = isinstance(tree, ast.Template) and tree.single is not None
    return CodegenItem(id=f"e{i}", tree=tree, native=native, as_text=as_text,
                       source=f"playbook.yaml:{i + 1}:9 params.x of 'w'")


def load(code: str) -> dict[str, Any]:
    """The module's namespace, with each expression id bound to its function (FUNCTIONS)."""
    ns: dict[str, Any] = {}
    exec(compile(code, "plan/plan_code.py", "exec"), ns)  # noqa: S102 - the module under test
    ns.update(dict(ns["FUNCTIONS"]))
    return ns


def run(text_: str, scope: Any = None, *, condition: bool = False, as_text: bool = False) -> Any:
    code = render_plan_code([item(text_, condition=condition, as_text=as_text)], header="test")
    ns = load(code)
    return ns["e0"](STATE if scope is None else scope, ctx())


# ---------------------------------------------------------------------------------------------
# Constructs

CONSTRUCTS: list[tuple[str, Any]] = [
    # text and fields
    ("plain text", "plain text"),
    ("", ""),
    ("Hello {{ .name }}!", "Hello ann!"),
    ("{{ .name }}", "ann"),
    ("  {{ .users }}  ", ["alice", "bob"]),  # one action alone keeps its type
    ("{{ .n }}", 12),
    ("{{ .rows.0.id }}", 1),
    ("{{ .rows.1.tags }}", []),
    ("{{ .nums.0 }}", "zero-key"),  # a numeric segment on a map reads that key
    ("{{ ._gxo.workloads.build.status }}", "Completed"),
    ("{{ . }}", STATE),
    ("{{ $ }}", STATE),
    ("{{ $.name }}", "ann"),
    ("{{ (.rows | first).id }}", 1),
    ("{{ (.json | fromJson).id }}", 7),
    ("a  {{- .name -}}  b", "aannb"),
    ("x{{/* comment */}}y", "xy"),
    ('{{ "{{" }}', "{{"),
    ("echo $${HOME}", "echo ${HOME}"),
    ("{ braces } {{ .n }} }}", "{ braces } 12 }}"),
    ('quote " backslash \\ tab\t nl\n {{ .name }}', 'quote " backslash \\ tab\t nl\n ann'),
    ("ünïcödé ☃ {{ .name }} \U0001F600", "ünïcödé ☃ ann \U0001F600"),
    # literals
    ('{{ "a\\tb" }}', "a\tb"),
    ("{{ 'single' }}", "single"),
    ("{{ `raw\\n` }}", "raw\\n"),
    ("{{ 42 }}", 42),
    ("{{ -7 }}", -7),
    ("{{ 3.14 }}", 3.14),
    ("{{ 1e6 }}", 1e6),
    ("{{ true }}", True),
    ("{{ null }}", None),
    ("{{ nil }}", None),
    ('{{ [1, "a", .n] }}', [1, "a", 12]),
    ('{{ {"name": .name, "tags": [.n]} }}', {"name": "ann", "tags": [12]}),
    # secrets
    ("Bearer ${TOK}", "Bearer s3cr3t"),
    ("${TOK}", "s3cr3t"),
    ('{{ secret "F" }}', "on"),
    # variables and Go scoping
    ("{{ $x := 1 }}{{ $x }}{{ $x = 2 }}{{ $x }}", "12"),
    ("{{ $x := .name }}{{ if true }}{{ $x := 5 }}{{ $x }}{{ end }}{{ $x }}", "5ann"),
    ("{{ $x := 0 }}{{ range .users }}{{ $x = . }}{{ end }}{{ $x }}", "bob"),
    ("{{ $r := .rows }}{{ $r.1.id }}", "2"),
    ("{{ $x := .owner }}{{ with $x }}{{ $x.name }}{{ .name }}{{ end }}", "zedzed"),
    # if / else if / else
    ("{{ if .flag }}yes{{ end }}", "yes"),
    ("{{ if .off }}yes{{ end }}", ""),
    ('{{ if eq .env "staging" }}s{{ else if eq .env "production" }}p{{ else }}d{{ end }}', "p"),
    ('{{ if eq .env "x" }}s{{ else if .off }}o{{ else if .r.exit_code }}r{{ end }}', "r"),
    ("{{ if .empty }}a{{ else }}b{{ end }}", "b"),
    ("{{ if .none }}a{{ else }}b{{ end }}", "b"),
    ("{{ if .labels }}a{{ else }}b{{ end }}", "a"),
    # range over lists, maps, ints; else
    ("{{ range .users }}[{{ . }}]{{ end }}", "[alice][bob]"),
    ("{{ range $i, $u := .users }}{{ $i }}:{{ $u }} {{ end }}", "0:alice 1:bob "),
    ("{{ range $v := .users }}{{ $v }}{{ end }}", "alicebob"),
    ("{{ range $k, $v := .labels }}{{ $k }}={{ $v }};{{ end }}", "b=2;a=1;"),
    ("{{ range .labels }}{{ . }}{{ end }}", "21"),
    ("{{ range 3 }}{{ . }}{{ end }}", "012"),
    ("{{ range .none }}x{{ else }}empty{{ end }}", "empty"),
    ("{{ range .nothing }}x{{ else }}nil{{ end }}", "nil"),
    ("{{ range .rows }}{{ .id }}{{ range .tags }}<{{ . }}>{{ end }}{{ end }}", "1<x>2"),
    ("{{ range .rows }}{{ $.name }}{{ end }}", "annann"),
    # with
    ("{{ with .owner }}owner: {{ .name }}{{ else }}nobody{{ end }}", "owner: zed"),
    ("{{ with .nothing }}x{{ else }}nobody{{ end }}", "nobody"),
    # operators
    ("{{ .name or \"anonymous\" }}", "ann"),
    ('{{ .empty or "anonymous" }}', "anonymous"),
    ("{{ .n and .name }}", "ann"),
    ("{{ .zero and .name }}", 0),
    ("{{ .off or .zero }}", 0),
    ("{{ and .n .flag .name }}", "ann"),
    ("{{ or .empty .zero .name }}", "ann"),
    ("{{ .off and .missing.deep }}", False),  # short-circuit: the right side never runs
    ("{{ .flag or .missing }}", True),
    ("{{ not .flag }}", False),
    ("{{ not .empty }}", True),
    ("{{ .n == 12 }}", True),
    ("{{ .n == 12.0 }}", True),
    ("{{ .f == 2.5 }}", True),
    ('{{ .name == "ann" }}', True),
    ('{{ "ann" == .name }}', True),
    ("{{ .name != \"bob\" }}", True),
    ("{{ .users == [\"alice\", \"bob\"] }}", True),
    ('{{ .labels == {"b": "2", "a": "1"} }}', True),
    ("{{ .nothing == null }}", True),
    ("{{ .n == null }}", False),
    ("{{ .flag == true }}", True),
    ("{{ [1, \"a\"] == [1, 2] }}", False),
    ("{{ .n < 13 }}", True),
    ("{{ .n <= 12 }}", True),
    ("{{ .n > 2.5 }}", True),
    ("{{ .f >= .n }}", False),
    ('{{ "a" < "b" }}', True),
    ('{{ "bob" in .users }}', True),
    ('{{ "carol" in .users }}', False),
    ('{{ "a" in .labels }}', True),
    ('{{ "ell" in "hello" }}', True),
    ('{{ "x" not in .users }}', True),
    ("{{ .n + 1 }}", 13),
    ("{{ 1 + .n }}", 13),
    ("{{ .n + .f }}", 14.5),
    ('{{ "v" + .name }}', "vann"),
    ("{{ .users + [\"c\"] }}", ["alice", "bob", "c"]),
    ("{{ .n - 2 }}", 10),
    ("{{ .n * 2 }}", 24),
    ("{{ .n / 8 }}", 1.5),
    ("{{ .n % 5 }}", 2),
    ("{{ -.n }}", -12),
    ("{{ 2 + 3 * 4 }}", 14),
    ("{{ (.users | len) > 1 }}", True),
    # pipes
    ("{{ .name | upper | lower }}", "ann"),
    ('{{ .r.stdout | split "\\n" | first | trim | trimSuffix "%" | int }}', 12),
    ('{{ .line | trim | split " " | slice 1 | join "," }}', "world"),
]


@pytest.mark.parametrize(("src", "expected"), CONSTRUCTS, ids=[c[0] or "<empty>" for c in CONSTRUCTS])
def test_construct(src: str, expected: Any) -> None:
    got = run(src)
    assert got == expected and type(got) is type(expected), (got, expected)


def test_all_constructs_in_one_module() -> None:
    """The same results when every construct shares one module (shared imports, ids)."""
    items = [item(src, i) for i, (src, _) in enumerate(CONSTRUCTS)]
    ns = load(render_plan_code(items, header="all"))
    assert [name for name, _ in ns["FUNCTIONS"]] == [f"e{i}" for i in range(len(CONSTRUCTS))]
    for (name, fn), (src, expected) in zip(ns["FUNCTIONS"], CONSTRUCTS):
        assert fn(STATE, ctx()) == expected, src


CONDITIONS: list[tuple[str, Any]] = [
    ("{{ .n }} >= 10", True),
    ("{{ .n }} >= 100", False),
    ('{{ .env }} == "production" and {{ len .users }} > 0', True),
    ('{{ .env }} == "production" and not {{ .flag }}', False),
    ('${F} == "on"', True),
    ("true", True),
    ("1 == 1", True),
    ("{{ .name }}", "ann"),  # the value; the runtime applies truthiness
    ("{{ .empty }} or {{ .n }}", 12),
    ('{{ and (eq .env "production") (not .off) }}', True),
    ("({{ .n }} + 1) * 2 == 26", True),
    ('{{ .name }} in ["ann", "bob"]', True),
]


@pytest.mark.parametrize(("src", "expected"), CONDITIONS)
def test_condition(src: str, expected: Any) -> None:
    assert run(src, condition=True) == expected


def test_as_text_converts_a_single_action() -> None:
    assert run("{{ .r.exit_code }}", as_text=True) == "2"
    assert run("{{ .users }}", as_text=True) == '["alice","bob"]'
    assert run("{{ .nothing }}", as_text=True) == "null"
    assert run(" {{ .n }} ", as_text=True) == " 12 "


def test_per_record_scope() -> None:
    record = {"host": "db1", "cpu": 93.5}
    assert run('{{ .host }}: {{ printf "%.1f" .cpu }}', record) == "db1: 93.5"
    assert run("{{ .cpu }} > 90", record, condition=True) is True


# ---------------------------------------------------------------------------------------------
# Functions: every name in compiler/expr/functions.py

FUNCTION_CASES: list[tuple[str, str, Any]] = [
    ("and", "{{ and 1 0 2 }}", 0),
    ("and", "{{ and 1 2 }}", 2),
    ("b64dec", "{{ .b64 | b64dec }}", "héllo"),
    ("b64enc", '{{ "héllo" | b64enc }}', base64.b64encode("héllo".encode()).decode()),
    ("bool", '{{ bool "TRUE" }}', True),
    ("bool", '{{ bool " 0 " }}', False),
    ("bool", "{{ bool 0.0 }}", False),
    ("bool", '{{ bool "no" }}', True),
    ("bool", "{{ bool .users }}", True),
    ("coalesce", '{{ .empty | coalesce .nothing "fallback" }}', "fallback"),
    ("coalesce", '{{ .name | coalesce "fallback" }}', "ann"),
    ("coalesce", "{{ .empty | coalesce .zero }}", None),
    ("contains", '{{ .line | contains "hello" }}', True),
    ("contains", '{{ contains "bye" .line }}', False),
    ("default", "{{ .zero | default 8080 }}", 8080),
    ("default", "{{ .n | default 8080 }}", 12),
    ("default", '{{ default "x" .empty }}', "x"),
    ("dict", '{{ dict "name" .name "id" 3 }}', {"name": "ann", "id": 3}),
    ("dict", "{{ dict }}", {}),
    ("env", '{{ env "HOME" }}', "/home/x"),
    ("env", '{{ env "NOPE_NOT_SET" }}', ""),
    ("eq", '{{ eq .env "production" }}', True),
    ("eq", "{{ eq .rows.0 .rows.0 }}", True),
    ("first", "{{ .users | first }}", "alice"),
    ("first", "{{ .none | first }}", None),
    ("float", '{{ float " 2.5 " }}', 2.5),
    ("float", "{{ float 3 }}", 3.0),
    ("fromJson", "{{ .json | fromJson }}", {"id": 7, "ok": True}),
    ("ge", "{{ ge .n 12 }}", True),
    ("get", '{{ .headers | get "Content-Type" }}', "json"),
    ("get", '{{ .headers | get "X-None" }}', None),
    ("gt", "{{ gt .n 12 }}", False),
    ("hasPrefix", '{{ .env | hasPrefix "prod" }}', True),
    ("hasSuffix", '{{ .env | hasSuffix "prod" }}', False),
    ("index", "{{ index .rows 1 }}", {"id": 2, "tags": []}),
    ("index", '{{ index .rows 0 "tags" 0 }}', "x"),
    ("index", '{{ index .headers "Content-Type" }}', "json"),
    ("int", '{{ int " 42 " }}', 42),
    ("int", "{{ int 3.9 }}", 3),
    ("int", "{{ int (-3.9) }}", -3),
    ("int", "{{ int true }}", 1),
    ("int", '{{ int "7.0" }}', 7),
    ("join", '{{ .users | join ", " }}', "alice, bob"),
    ("join", '{{ [1, true, null, "s", 1.5] | join "|" }}', "1|true|null|s|1.5"),
    ("keys", "{{ .labels | keys }}", ["b", "a"]),
    ("last", "{{ .users | last }}", "bob"),
    ("last", "{{ .none | last }}", None),
    ("le", "{{ le .n 11 }}", False),
    ("len", "{{ len .users }}", 2),
    ("len", "{{ len .labels }}", 2),
    ("len", '{{ len "héllo" }}', 5),
    ("list", "{{ list .n \"a\" }}", [12, "a"]),
    ("list", "{{ list }}", []),
    ("lower", '{{ "ABC" | lower }}', "abc"),
    ("lt", '{{ lt "a" "b" }}', True),
    ("ne", '{{ ne .env "production" }}', False),
    ("not", "{{ not .zero }}", True),
    ("not", "{{ .users | not }}", False),
    ("now", "{{ now }}", "2024-05-06T07:08:09Z"),
    ("or", "{{ or 0 \"\" .name }}", "ann"),
    ("or", "{{ or 0 \"\" }}", ""),
    ("print", '{{ print "id-" .n }}', "id-12"),
    ("print", "{{ print 1 2 \"a\" 3 }}", "1 2a3"),
    ("print", "{{ print }}", ""),
    ("printf", '{{ printf "%s is at %d%%" .name 93 }}', "ann is at 93%"),
    ("printf", '{{ printf "%.2f|%f" 3.14159 2 }}', "3.14|2.000000"),
    ("printf", '{{ printf "%v %v %v" .users true null }}', '["alice","bob"] true null'),
    ("printf", '{{ printf "%q" "a\\"b" }}', '"a\\"b"'),
    ("printf", '{{ printf "[%5s][%-5s][%03d]" "ab" "cd" 7 }}', "[   ab][cd   ][007]"),
    ("println", "{{ println .name 1 }}", "ann 1\n"),
    ("quote", "{{ .name | quote }}", '"ann"'),
    ("quote", '{{ "a\\nb" | quote }}', '"a\\nb"'),
    ("regex_match", '{{ "v1.2" | regex_match "^v[0-9]+" }}', True),
    ("regex_match", '{{ .env | regex_match "^v[0-9]+" }}', False),
    ("regex_replace", '{{ "a.example.com" | regex_replace "[.]example[.]com$" "" }}', "a"),
    ("regex_replace", '{{ "ab-12" | regex_replace "([a-z]+)-([0-9]+)" "\\\\2-\\\\1" }}', "12-ab"),
    ("replace", '{{ "/a/b" | replace "/" "_" }}', "_a_b"),
    ("secret", '{{ secret "TOK" }}', "s3cr3t"),
    ("sha256", '{{ "abc" | sha256 }}', hashlib.sha256(b"abc").hexdigest()),
    ("slice", "{{ .users | slice 1 }}", ["bob"]),
    ("slice", "{{ .users | slice (-1) }}", ["bob"]),
    ("slice", '{{ "hello" | slice 3 }}', "lo"),
    ("split", '{{ .csv | split "," }}', ["a", "b", "", "c"]),
    ("split", '{{ "abc" | split "" }}', ["a", "b", "c"]),
    ("str", "{{ str .n }}", "12"),
    ("str", "{{ str .users }}", '["alice","bob"]'),
    ("str", "{{ str 2.0 }}", "2.0"),
    ("title", '{{ "hello wORLD-x" | title }}', "Hello WORLD-X"),
    ("toJson", "{{ .labels | toJson }}", '{"b":"2","a":"1"}'),
    ("toJson", '{{ "é" | toJson }}', '"é"'),
    ("trim", "{{ .line | trim }}", "hello world"),
    ("trimPrefix", '{{ "refs/heads/main" | trimPrefix "refs/heads/" }}', "main"),
    ("trimSuffix", '{{ "a.txt" | trimSuffix ".txt" }}', "a"),
    ("upper", "{{ .name | upper }}", "ANN"),
    ("urlquery", '{{ "a b&c/é" | urlquery }}', "a+b%26c%2F%C3%A9"),
    ("urlquery", '{{ urlquery "a" 1 }}', "a1"),
    ("uuid", "{{ len uuid }}", 36),  # the value is random: test_uuid checks its form
]


@pytest.mark.parametrize(("fn", "src", "expected"), FUNCTION_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(FUNCTION_CASES)])
def test_function(fn: str, src: str, expected: Any) -> None:
    got = run(src)
    assert got == expected and type(got) is type(expected), (got, expected)


def test_every_function_is_covered_and_implemented() -> None:
    assert set(exprlib.FUNCTIONS) == set(SIGNATURES)
    assert {c[0] for c in FUNCTION_CASES} == set(SIGNATURES)


def test_uuid() -> None:
    a, b = run("{{ uuid }}"), run("{{ uuid }}")
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", a)
    assert a != b


def test_now_uses_utc() -> None:
    other = datetime(2024, 5, 6, 9, 8, 9, tzinfo=UTC).astimezone()
    c = BasicContext({}, {}, now=lambda: other)
    ns = load(render_plan_code([item("{{ now }}")], header=""))
    assert ns["e0"]({}, c) == "2024-05-06T09:08:09Z"


# ---------------------------------------------------------------------------------------------
# Errors

ERRORS: list[tuple[str, str]] = [
    ("{{ .missing }}", "no field 'missing' in ."),
    ("{{ .owner.nick }}", "no field 'nick' in .owner"),
    ("{{ .owner.name }}{{ .owner.nick.x }}", "no field 'nick' in .owner"),
    ("{{ .rows.5.id }}", "index 5 out of range in .rows (length 2)"),
    ("{{ .rows.0.nope }}", "no field 'nope' in .rows.0"),
    ("{{ .users.name }}", ".users is a list: index it with a number, not 'name'"),
    ("{{ .name.first }}", ".name is str: no field 'first'"),
    ("{{ .name.0 }}", ".name is str: cannot index it with 0"),
    ("{{ .nothing.x }}", ".nothing is null: no field 'x'"),
    ("{{ $x := .owner }}{{ $x.nick }}", "no field 'nick' in $x"),
    ("{{ (.rows | first).nick }}", "no field 'nick' in (...)"),
    ("{{ range .rows }}{{ .nick }}{{ end }}", "no field 'nick' in ."),
    ("{{ if .flag }}{{ .nope }}{{ end }}", "no field 'nope' in ."),
    ('{{ .n == "12" }}', "cannot compare int with str"),
    ("{{ .n < .name }}", "'<' needs two numbers or two strings, got int and str"),
    ('{{ .n + "a" }}', "cannot add int and str"),
    ("{{ .flag + 1 }}", "cannot add bool and int"),
    ('{{ .name * 2 }}', "'*' needs numbers, got str and int"),
    ("{{ .n / 0 }}", "division by zero"),
    ("{{ -.name }}", "cannot negate a value of type str"),
    ('{{ 1 in "abc" }}', "'in' a string needs a string on its left"),
    ("{{ 1 in .n }}", "'in' needs a list, a map or a string on its right, got int"),
    ("{{ range .name }}x{{ end }}", "range cannot iterate over a value of type str"),
    ("{{ .n | upper }}", "upper: S must be a string, got int"),
    ('{{ int "abc" }}', 'int: "abc" is not a number'),
    ("{{ int .users }}", "int: cannot convert list to an integer"),
    ('{{ float "x" }}', 'float: "x" is not a number'),
    ('{{ fromJson "{" }}', "fromJson: not valid JSON"),
    ('{{ b64dec "!!" }}', "b64dec: not valid base64"),
    ("{{ index .rows 9 }}", "index: index 9 out of range (length 2)"),
    ('{{ index .headers "nope" }}', 'index: no key "nope" in the map'),
    ('{{ printf "%d" "x" }}', "printf: %d needs an integer, got str"),
    ('{{ printf "%s %s" "x" }}', "printf: missing argument for %s"),
    ('{{ printf "%s" "x" "y" }}', "printf: 1 extra argument(s)"),
    ('{{ printf "%z" 1 }}', "printf: unknown verb %z"),
    ('{{ regex_match "(" "x" }}', "regex_match: invalid regular expression"),
    ('{{ dict "a" }}', "dict: needs an even number of arguments"),
    ("{{ dict 1 2 }}", "dict: keys must be strings, got int"),
    ("{{ len 3 }}", "len: cannot take the length of int"),
    ("{{ keys .users }}", "keys: M must be a map, got list"),
    ("{{ first .name }}", "first: L must be a list, got str"),
    ('{{ secret "NOPE" }}', "secret 'NOPE' is not set"),
    ("${NOPE}", "secret 'NOPE' is not set"),
    ("{{ toJson (float \"nan\") }}", "toJson:"),
]


@pytest.mark.parametrize(("src", "message"), ERRORS)
def test_error(src: str, message: str) -> None:
    with pytest.raises(EvalError) as info:
        run(src)
    assert message in str(info.value)


def test_condition_error_naming_the_path() -> None:
    with pytest.raises(EvalError, match=r"no field 'attempts' in \."):
        run("{{ .attempts }} >= 10", condition=True)


def test_codegen_refuses_what_the_front_end_rejects() -> None:
    tree, _ = parse_template("{{ $y }}")
    assert tree is not None
    with pytest.raises(CodegenError):
        render_plan_code([CodegenItem(id="e0", tree=tree, native=True, as_text=False, source="x")],
                         header="")
    tree, _ = parse_template("{{ .a }}")
    assert tree is not None
    with pytest.raises(CodegenError):
        render_plan_code([CodegenItem(id="bad id", tree=tree, native=True, as_text=False,
                                      source="x")], header="")


# ---------------------------------------------------------------------------------------------
# Text form (design.md §4)

TEXT_FORM: list[tuple[Any, str]] = [
    ("as is", "as is"),
    (True, "true"),
    (False, "false"),
    (None, "null"),
    (42, "42"),
    (-7, "-7"),
    (0.1, "0.1"),
    (2.0, "2.0"),
    (1e20, "1e+20"),
    (1.5e-7, "1.5e-07"),
    ([1, "a", None, True], '[1,"a",null,true]'),
    ({"ok": True, "é": [1.0]}, '{"ok":true,"é":[1.0]}'),
    ({"b": 1, "a": 2}, '{"b":1,"a":2}'),  # insertion order
    ((1, 2), "[1,2]"),
]


@pytest.mark.parametrize(("value", "expected"), TEXT_FORM)
def test_text_form(value: Any, expected: str) -> None:
    assert text(value) == expected
    assert run("{{ .v }}!", {"v": value}) == expected + "!"


def test_template_building_json_is_valid_json() -> None:
    tpl = '{"ok": {{ .flag }}, "n": {{ .n }}, "f": {{ .f }}, "none": {{ .nothing }}, ' \
          '"users": {{ .users }}, "labels": {{ .labels }}, "name": {{ .name | quote }}}'
    out = run(tpl)
    assert json.loads(out) == {"ok": True, "n": 12, "f": 2.5, "none": None,
                               "users": ["alice", "bob"], "labels": {"b": "2", "a": "1"},
                               "name": "ann"}
    assert run('{"ok": {{ .flag }}}', {"flag": False}) == '{"ok": false}'


def test_truthiness() -> None:
    for v in (False, None, 0, 0.0, "", [], {}):
        assert exprlib.truthy(v) is False
        assert run("{{ if .v }}t{{ else }}f{{ end }}", {"v": v}) == "f"
    for v in (True, 1, -1, 0.5, "false", "0", " ", [0], {"a": None}):
        assert exprlib.truthy(v) is True
        assert run("{{ if .v }}t{{ else }}f{{ end }}", {"v": v}) == "t"


# ---------------------------------------------------------------------------------------------
# Determinism


def _corpus() -> list[CodegenItem]:
    items = [item(src, i) for i, (src, _) in enumerate(CONSTRUCTS)]
    n = len(items)
    items += [item(src, n + i, condition=True) for i, (src, _) in enumerate(CONDITIONS)]
    n = len(items)
    items += [item(src, n + i) for i, (_, src, _) in enumerate(FUNCTION_CASES)]
    return items


def test_same_items_same_text() -> None:
    a = render_plan_code(_corpus(), header="playbook.yaml\ngxoc test")
    b = render_plan_code(_corpus(), header="playbook.yaml\ngxoc test")
    assert a == b
    assert "set(" not in a and "frozenset" not in a
    assert a.splitlines()[0].startswith("# AUTOGENERATED")


def test_comment_names_the_source() -> None:
    code = render_plan_code([item("{{ .n }}")], header="")
    name = functions_of([item("{{ .n }}")])[0].name
    assert f"# e0: playbook.yaml:1:9 params.x of 'w'\ndef {name}(s, c):" in code
    assert f'FUNCTIONS = (\n    ("e0", {name}),\n)' in code


def test_functions_are_named_by_their_body() -> None:
    """The same expression gives the same function name wherever it stands; equal bodies share
    one function (each id keeps its entry in FUNCTIONS); a different expression, another name."""
    a = functions_of([item("{{ .n }}", 0), item("{{ .m }}", 1), item("{{ .n }}", 2)])
    b = functions_of([item("{{ .x }}", 5), item("{{ .n }}", 7)])
    assert [fn.ids for fn in a] == [("e0", "e2"), ("e1",)]
    assert a[0].name == b[1].name and a[0].name != a[1].name
    assert re.fullmatch(r"f_[0-9a-f]{16}", a[0].name)
    code = render_plan_code([item("{{ .n }}", 0), item("{{ .m }}", 1), item("{{ .n }}", 2)], header="")
    assert code.count(f"def {a[0].name}(") == 1
    ns = load(code)
    assert ns["e0"] is ns["e2"] and ns["e0"]({"n": 3}, ctx()) == 3


def test_shard_holds_only_functions() -> None:
    """A shard's text depends on its functions only: no header, places or expression ids."""
    fns = functions_of([item("{{ .n }}", 0), item("{{ .m | upper }}", 1)])
    moved = functions_of([item("{{ .n }}", 40), item("{{ .m | upper }}", 41, as_text=False)])
    code = render_shard(fns)
    assert code == render_shard(moved)
    assert "playbook.yaml" not in code and '"e0"' not in code
    ns: dict[str, Any] = {}
    exec(compile(code, "shard.py", "exec"), ns)  # noqa: S102 - the module under test
    assert [n for n, _ in ns["FUNCTIONS"]] == [fn.name for fn in fns]
    assert dict(ns["FUNCTIONS"])[fns[1].name]({"m": "a"}, ctx()) == "A"


_CHILD = textwrap.dedent("""
    import hashlib, marshal, sys
    sys.path[:0] = {path!r}
    import test_codegen as t
    code = t.render_plan_code(t._corpus(), header="h")
    blob = marshal.dumps(compile(code, "plan/plan_code.py", "exec"))
    print(hashlib.sha256(code.encode()).hexdigest(), hashlib.sha256(blob).hexdigest())
""")


def test_deterministic_across_hash_seeds() -> None:
    """Same source and the same marshalled bytecode under different PYTHONHASHSEED values."""
    script = _CHILD.format(path=[str(Path(__file__).parent)])
    outs = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                           text=True, check=True)
        outs.add(r.stdout.strip())
    assert len(outs) == 1, outs
    # the source is also the same in this process; the bytecode is compared between children
    # only: marshal marks objects whose refcount is above 1, so its bytes also depend on what
    # else the process holds (the same program in a fresh process gives the same bytes)
    code = render_plan_code(_corpus(), header="h")
    assert outs.pop().split()[0] == hashlib.sha256(code.encode()).hexdigest()


def test_plan_code_imports_only_the_runtime() -> None:
    code = render_plan_code(_corpus(), header="h")
    imports = [line for line in code.splitlines() if line.startswith(("import ", "from "))]
    assert imports == ["from gxo.runtime.exprlib import ("]


def test_exprlib_imports_no_compiler_dependency() -> None:
    script = ("import sys; import gxo.runtime.exprlib; "
              "bad = [m for m in sys.modules if m.split('.')[0] in "
              "('lark', 'jinja2', 'yaml', 'jsonschema', 'networkx') or m.startswith('gxo.compiler')]; "
              "print(bad)")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------
# Cython: the generated module compiles and gives the same results


def test_cython_build_matches_pure(tmp_path: Path) -> None:
    pytest.importorskip("Cython")
    if shutil.which(os.environ.get("CC", "cc")) is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler")
    cases = [
        ("Hello {{ .name | upper }}, {{ len .users }} users{{ if .flag }}!{{ end }}", None),
        ("{{ range $i, $r := .rows }}{{ $i }}={{ $r.id }};{{ else }}-{{ end }}", None),
        ('{{ .env }} == "production" and {{ .n }} >= 10', "condition"),
        ("{{ .rows.1.id }}", None),
        ('{{ printf "%s:%d" .name .n }} {{ .labels | toJson }} ${TOK}', None),
        ("{{ with .owner }}{{ .name }}{{ else }}none{{ end }} {{ .n + 1 }} {{ .f * 2 }}", None),
        ("{{ .missing }}", None),
    ]
    items = [item(src, i, condition=kind == "condition") for i, (src, kind) in enumerate(cases)]
    code = render_plan_code(items, header="cython test")
    (tmp_path / "plan_code_cy.py").write_text(code, encoding="utf-8")
    (tmp_path / "setup.py").write_text(
        "from setuptools import setup, Extension\n"
        "from Cython.Build import cythonize\n"
        "setup(ext_modules=cythonize([Extension('plan_code_cy', ['plan_code_cy.py'],"
        " extra_compile_args=['-O0'])], compiler_directives={'language_level': '3'},"
        " quiet=True))\n", encoding="utf-8")
    r = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-q"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    so = next(tmp_path.glob("plan_code_cy*.so"))
    spec = importlib.util.spec_from_file_location("plan_code_cy", so)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert type(dict(mod.FUNCTIONS)["e0"]).__name__ != "function"  # really compiled
    pure = load(code)
    for (name, fn), (_, cy_fn) in zip(pure["FUNCTIONS"], mod.FUNCTIONS):
        try:
            want: Any = fn(STATE, ctx())
        except EvalError as e:
            with pytest.raises(EvalError, match=re.escape(str(e))):
                cy_fn(STATE, ctx())
            continue
        assert cy_fn(STATE, ctx()) == want, name
