"""The expression language front end: grammar, parser, error messages, function table, docs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from expr_util import cond, expr, sx, template
from gxo.compiler.expr import ast, functions, parser
from gxo.compiler.types import ANY, INT, STR, ListT

DOCS = Path(__file__).resolve().parent.parent / "docs" / "expressions.md"


# ---------------------------------------------------------------------------------------------
# helpers (more in tests/expr_util.py)


def errors_of(text: str, mode: str = "t") -> list[ast.ExprError]:
    tree, errors = (parser.parse_template if mode == "t" else parser.parse_condition)(text)
    assert tree is None and errors
    return errors


def at(text: str, start: int, end: int) -> str:
    return text[start:end]


# ---------------------------------------------------------------------------------------------
# grammar and API


def test_lark_parser_is_strict_lalr_and_built_once() -> None:
    lark = parser.get_parser()
    assert lark.options.parser == "lalr"
    assert lark.options.strict is True
    assert lark.options.propagate_positions is True
    assert parser.get_parser() is lark


@pytest.mark.parametrize(("text", "templated"), [
    ("plain", False), ("{{ .a }}", True), ("x ${A} y", True), ("$${A}", True),
    ("{ {", False), ("$ {A}", False), ("", False),
])
def test_is_templated(text: str, templated: bool) -> None:
    assert parser.is_templated(text) is templated


def test_results_are_cached_but_lists_are_fresh() -> None:
    a_tree, a_errors = parser.parse_template("{{ .cache.me }}")
    b_tree, b_errors = parser.parse_template("{{ .cache.me }}")
    assert a_tree is b_tree
    bad1 = parser.parse_template("{{ .a | }}")[1]
    bad1.append(bad1[0])
    assert len(parser.parse_template("{{ .a | }}")[1]) == 1


# ---------------------------------------------------------------------------------------------
# values


@pytest.mark.parametrize(("src", "expected"), [
    (".", "."), (".a", ".a"), (".a.b_c.D9", ".a.b_c.D9"), (".rows.0.id", ".rows.0.id"),
    ("$", "$"), ("$x", "$x"), ("$x.a.1", "$x.a.1"), ("$.a", "$.a"),
    ('"a\\tb\\n\\"q\\"\\\\"', repr('a\tb\n"q"\\')), ("'multi char'", "'multi char'"),
    ("'it\\'s'", repr("it's")), ("`raw\\n{{`", repr("raw\\n{{")),
    ('"\\x41\\101\\u00e9\\U0001F600"', repr("AAé😀")),
    ("42", "42"), ("-7", "-7"), ("3.5", "3.5"), ("1e3", "1000.0"), ("-2.5e-1", "-0.25"),
    ("true", "True"), ("false", "False"), ("null", "None"), ("nil", "None"),
    ('[1, "a", .x]', "[1 'a' .x]"), ("[]", "[]"), ("[1, 2,]", "[1 2]"),
    ('{"k": .v, "n": [1]}', "{'k':.v 'n':[1]}"), ("{}", "{}"),
    ('{"a": {"b": 1}}', "{'a':{'b':1}}"),
    ("(index .rows 0).id", "(sel (index .rows 0) id)"), ("(.a).b.0", "(sel .a b.0)"),
])
def test_values(src: str, expected: str) -> None:
    assert sx(expr(src)) == expected


def test_numeric_path_segments_are_ints() -> None:
    e = expr(".rows.0.id")
    assert isinstance(e, ast.Field) and e.path == ("rows", 0, "id")
    v = expr("$r.2")
    assert isinstance(v, ast.Var) and v.name == "r" and v.path == (2,)


def test_selector_needs_the_dot_to_touch_the_parenthesis() -> None:
    assert sx(expr("eq (f1 .x).a .b".replace("f1", "int"))) == "(eq (sel (int .x) a) .b)"
    assert sx(expr("eq (int .x) .a")) == "(eq (int .x) .a)"


# ---------------------------------------------------------------------------------------------
# operators, calls and pipes


@pytest.mark.parametrize(("src", "expected"), [
    ("1 + 2 * 3", "(+ 1 (* 2 3))"),
    ("1 - 2 - 3", "(- (- 1 2) 3)"),
    ("8 / 4 % 3", "(% (/ 8 4) 3)"),
    ("-.a * 2", "(* (- .a) 2)"),
    ("- (1)", "-1"),
    (".a + 1 == .b", "(== (+ .a 1) .b)"),
    (".a == 1 and .b != 2 or .c", "(or (and (== .a 1) (!= .b 2)) .c)"),
    ("not .a and .b", "(and (not .a) .b)"),
    ("not .a == 1", "(not (== .a 1))"),
    (".a in [1, 2]", "(in .a [1 2])"),
    (".a not in .b", "(not (in .a .b))"),
    (".a < .b", "(< .a .b)"), (".a <= .b", "(<= .a .b)"),
    (".a > .b", "(> .a .b)"), (".a >= .b", "(>= .a .b)"),
    ("eq .a .b", "(eq .a .b)"),
    ('default "x" .y', "(default 'x' .y)"),
    ("gt (int .disk.stdout) 90", "(gt (int .disk.stdout) 90)"),
    ("len .a + 1", "(+ (len .a) 1)"),
    ("now", "(now)"), ("uuid", "(uuid)"),
    ('printf "%s" now', "(printf '%s' (now))"),
    (".data | trim | split \" \"", "(split ' ' (trim .data))"),
    ('.s | replace "a" "b"', "(replace 'a' 'b' .s)"),
    (".a == 1 | not", "(not (== .a 1))"),
    ("(.a | len) > 2", "(> (len .a) 2)"),
    ("and (eq .a 1) .b", "(and (eq .a 1) .b)"),
    ("or .a .b .c", "(or .a .b .c)"),
    (".a and .b", "(and .a .b)"),
    (".a and and .b .c", "(and .a (and .b .c))"),
    ("not (and .a .b)", "(not (and .a .b))"),
    (".a | and .b", "(and .b .a)"),
    ('.v | coalesce "fallback"', "(coalesce 'fallback' .v)"),
    ('secret "DB"', "(secret! 'DB')"),
    ("'DB' | secret", "(secret! 'DB')"),
    ("secret .name", "(secret .name)"),
])
def test_operators_calls_and_pipes(src: str, expected: str) -> None:
    assert sx(expr(src)) == expected


def test_call_positions() -> None:
    text = '{{ .s | replace "a" "b" }}'
    call = template(text).single
    assert isinstance(call, ast.Call)
    assert at(text, call.start, call.name_end) == "replace"
    assert at(text, call.start, call.end) == 'replace "a" "b"'
    piped = call.args[-1]
    assert at(text, piped.start, piped.end) == ".s"


def test_expression_positions() -> None:
    text = "{{ (index .rows 0).id + $x.a.0 * 2 }}"
    e = template(text).single
    assert isinstance(e, ast.BinOp)
    assert at(text, e.start, e.end) == "(index .rows 0).id + $x.a.0 * 2"
    sel = e.left
    assert isinstance(sel, ast.Selector)
    assert at(text, sel.start, sel.end) == "(index .rows 0).id"
    assert [at(text, s, s + 2) for s in sel.segment_starts] == ["id"]
    mul = e.right
    assert isinstance(mul, ast.BinOp) and isinstance(mul.left, ast.Var)
    var = mul.left
    assert at(text, var.start, var.end) == "$x.a.0"
    assert [text[s] for s in var.segment_starts] == ["a", "0"]
    field = expr(".alpha.beta.7")
    assert isinstance(field, ast.Field)
    assert field.segment_starts == (4, 10, 15)


def test_parent_spans_include_parentheses() -> None:
    text = "{{ (.a + 1) * (int .b) }}"
    e = template(text).single
    assert isinstance(e, ast.BinOp)
    assert at(text, e.start, e.end) == "(.a + 1) * (int .b)"
    assert at(text, e.left.start, e.left.end) == ".a + 1"
    assert isinstance(e.right, ast.Call)
    assert at(text, e.right.start, e.right.name_end) == "int"
    neg = template("{{ -(2) }}").single
    assert neg == ast.Literal(value=-2) and (neg.start, neg.end) == (3, 7)


def test_literal_and_unary_positions() -> None:
    text = '{{ [-1, "x", not .a] }}'
    lst = template(text).single
    assert isinstance(lst, ast.ListLit)
    assert [at(text, i.start, i.end) for i in lst.items] == ["-1", '"x"', "not .a"]
    assert at(text, lst.start, lst.end) == '[-1, "x", not .a]'


# ---------------------------------------------------------------------------------------------
# template structure


def test_text_and_actions() -> None:
    text = "echo {{ .a }} and {{ .b | upper }}!"
    t = template(text)
    assert [type(p).__name__ for p in t.parts] == ["Text", "Action", "Text", "Action", "Text"]
    assert [at(text, p.start, p.end) for p in t.parts] == [
        "echo ", "{{ .a }}", " and ", "{{ .b | upper }}", "!"]
    assert t.single is None and (t.start, t.end) == (0, len(text))


def test_plain_and_empty_strings() -> None:
    assert template("").parts == ()
    t = template("no actions")
    assert t.parts == (ast.Text(text="no actions"),) and t.single is None


def test_if_else_if_else() -> None:
    text = "{{ if eq .a 1 }}A{{ else if .b }}B{{ else }}C{{ end }}"
    (node,) = template(text).parts
    assert isinstance(node, ast.If) and (node.start, node.end) == (0, len(text))
    assert [sx(c) for c, _ in node.branches] == ["(eq .a 1)", ".b"]
    assert [body for _, body in node.branches] == [(ast.Text(text="A"),), (ast.Text(text="B"),)]
    assert node.else_body == (ast.Text(text="C"),)
    (plain,) = template("{{ if .a }}x{{ end }}").parts
    assert isinstance(plain, ast.If) and plain.else_body is None


def test_range_forms() -> None:
    (r,) = template("{{ range .xs }}{{ . }}{{ end }}").parts
    assert isinstance(r, ast.Range) and (r.key_var, r.value_var) == (None, None)
    assert r.body == (ast.Action(expr=ast.Field()),) and r.else_body is None
    (r,) = template("{{ range $v := .xs }}{{ $v }}{{ end }}").parts
    assert isinstance(r, ast.Range) and (r.key_var, r.value_var) == (None, "v")
    (r,) = template("{{ range $i, $v := .xs }}{{ $i }}{{ else }}none{{ end }}").parts
    assert isinstance(r, ast.Range) and (r.key_var, r.value_var) == ("i", "v")
    assert r.else_body == (ast.Text(text="none"),)


def test_with_and_nesting() -> None:
    (w,) = template("{{ with .o }}{{ if .x }}{{ .x }}{{ end }}{{ else }}no{{ end }}").parts
    assert isinstance(w, ast.With) and sx(w.expr) == ".o"
    (inner,) = w.body
    assert isinstance(inner, ast.If)
    assert w.else_body == (ast.Text(text="no"),)


def test_assignments() -> None:
    text = "{{ $x := 1 }}{{ $x = .y }}{{ $x }}"
    decl, assign, use = template(text).parts
    assert decl == ast.Assign(name="x", expr=ast.Literal(value=1), declare=True)
    assert assign == ast.Assign(name="x", expr=ast.Field(path=("y",)), declare=False)
    assert at(text, assign.start, assign.end) == "{{ $x = .y }}"
    assert isinstance(use, ast.Action) and sx(use.expr) == "$x"


@pytest.mark.parametrize(("text", "texts"), [
    ("a  {{- .x -}}  b", ["a", "b"]),
    ("a \n {{- .x }} b", ["a", " b"]),
    ("a {{ .x -}} \n\t b", ["a ", "b"]),
    ("a  {{- /* c */ -}}  b", ["a", "b"]),
    ("a {{/* c */}} b", ["a ", " b"]),
    ("{{ if .a -}}\n  yes\n{{- end }}", ["yes"]),
])
def test_trimming_and_comments(text: str, texts: list[str]) -> None:
    t = template(text)

    def walk(parts: tuple[ast.Part, ...]) -> list[ast.Text]:
        out: list[ast.Text] = []
        for p in parts:
            if isinstance(p, ast.Text):
                out.append(p)
            elif isinstance(p, ast.If):
                for _, body in p.branches:
                    out += walk(body)
        return out

    found = walk(t.parts)
    assert [p.text for p in found] == texts
    for p in found:  # the span is that of the text kept
        assert text[p.start:p.end] == p.text


def test_minus_without_space_is_not_a_trim_marker() -> None:
    assert template("{{-3}}").single == ast.Literal(value=-3)
    assert sx(expr("3 -1")) == "(- 3 1)"


def test_escapes_secrets_and_literal_braces() -> None:
    t = template("echo $${HOME} {{ \"{{\" }} }}")
    assert t.parts[0] == ast.Text(text="echo ${HOME} ")
    assert (t.parts[0].start, t.parts[0].end) == (0, 14)
    assert t.parts[1] == ast.Action(expr=ast.Literal(value="{{"))
    assert t.parts[2] == ast.Text(text=" }}")
    text = "Bearer ${API_TOKEN}."
    _, ref, _ = template(text).parts
    assert isinstance(ref, ast.Action) and ref.expr == ast.SecretRef(name="API_TOKEN")
    assert at(text, ref.expr.start, ref.expr.end) == "${API_TOKEN}"


@pytest.mark.parametrize(("text", "single"), [
    ("{{ .users }}", ".users"),
    ("  {{ .users }}\n", ".users"),
    ("{{- .users -}}", ".users"),
    ("${TOKEN}", "(secret! 'TOKEN')"),
    (" ${TOKEN} ", "(secret! 'TOKEN')"),
    ('{{ secret "X" }}', "(secret! 'X')"),
    ("x{{ .a }}", None),
    ("{{ .a }}{{ .b }}", None),
    ("{{ .a }}.", None),
    ("{{/* c */}}{{ .a }}", None),
    ("{{ $x := 1 }}", None),
    ("{{ if .a }}{{ .a }}{{ end }}", None),
    ("Bearer ${TOKEN}", None),
    ("plain", None),
])
def test_single_detection(text: str, single: str | None) -> None:
    t = template(text)
    assert (None if t.single is None else sx(t.single)) == single


# ---------------------------------------------------------------------------------------------
# conditions


@pytest.mark.parametrize(("text", "expected"), [
    ("{{ .attempts }} >= 10", "(>= .attempts 10)"),
    ('{{ .a }} == "x" and {{ .b }}', "(and (== .a 'x') .b)"),
    ("{{ .a }}", ".a"),
    ("  {{- .a -}} ", ".a"),
    ("({{ .a }} or {{ .b }}) and not {{ .c }}", "(and (or .a .b) (not .c))"),
    ('{{ .env }} in ["dev", "test"]', "(in .env ['dev' 'test'])"),
    ("{{ .a }} not in [1]", "(not (in .a [1]))"),
    ("-1 < {{ len .xs }}", "(< -1 (len .xs))"),
    ('{{ .a | default "x" }} != null', "(!= (default 'x' .a) None)"),
    ('{{ {"a": {"b": 1}} }} != null', "(!= {'a':{'b':1}} None)"),
    ("{{/* why */}} {{ .ok }}", ".ok"),
    ('${FLAG} == "on"', "(== (secret! 'FLAG') 'on')"),
    ("true", "True"), ("1 == 1", "(== 1 1)"),
])
def test_conditions(text: str, expected: str) -> None:
    assert sx(cond(text)) == expected


def test_condition_positions_are_those_of_the_string() -> None:
    text = '{{ .a }} == "x" and {{ .b.c }}'
    tree, _ = parser.parse_condition(text)
    assert tree is not None and (tree.start, tree.end) == (0, len(text))
    e = tree.expr
    assert isinstance(e, ast.BinOp) and isinstance(e.left, ast.BinOp)
    assert at(text, e.left.left.start, e.left.left.end) == ".a"
    assert at(text, e.left.right.start, e.left.right.end) == '"x"'
    assert at(text, e.right.start, e.right.end) == ".b.c"


@pytest.mark.parametrize(("text", "message", "span", "help_part"), [
    ("{{ .x }} is big", "text outside {{ }} in a condition may hold only literals, operators "
     "and parentheses", "is big", "quote text"),
    ("yes", "text outside {{ }}", "yes", None),
    ("{{ .x }} | upper", "text outside {{ }}", "| upper", "inside the braces"),
    ("{{ .a }} = 1", "text outside {{ }}", "=", "'=='"),
    ("{{ .a }} && {{ .b }}", "text outside {{ }}", "&&", "'and'"),
    ("{{ .a }}.b", "text outside {{ }}", ".b", None),
    ('{{ .a }} == "{{ .b }}"', "unterminated string literal", '"', "without quotes"),
    ("{{ if .a }}", "'if' cannot be used in a condition", "{{ if .a }}", "one expression"),
    ("{{ end }}", "'end' cannot be used in a condition", "{{ end }}", None),
    ("{{ range .a }}", "'range' cannot be used in a condition", "{{ range .a }}", None),
    ("{{ $x := 1 }}", "a variable cannot be assigned in a condition", "{{ $x := 1 }}", None),
    ("{{ .a }} {{ .b }}", "unexpected '{{': two values in a row", "{{", "operator"),
    ("{{ .a | }} == 1", "expected a function name after '|'", "}}", None),
    ("{{ .a }} ==", "expected an expression after '=='", "==", None),
    ("{{ }}", "empty {{ }}", "{{ }}", None),
    ("", "empty condition", "", None),
    ("{{/* c */}}", "empty condition", "{{/* c */}}", None),
    ("1 == 1 == 1", "comparisons cannot be chained", "==", "'and'"),
    ("{{ .a", "unclosed action: missing '}}'", "{{", None),
    ("{{ foo .a }} > 1", "unknown function 'foo'", "foo", None),
])
def test_condition_errors(text: str, message: str, span: str,
                          help_part: str | None) -> None:
    first = errors_of(text, "c")[0]
    assert message in first.message
    assert at(text, first.start, first.end) == span
    if help_part is not None:
        assert first.help is not None and help_part in first.help


# ---------------------------------------------------------------------------------------------
# template errors


@pytest.mark.parametrize(("text", "code", "message", "span", "help_part"), [
    ("{{ .a | }}", "template-syntax", "expected a function name after '|'", "}}", None),
    ("{{ .a | -}}", "template-syntax", "expected a function name after '|'", "-}}", None),
    ("{{ .a | .b }}", "template-syntax", "expected a function name after '|', found field "
     "'.b'", ".b", None),
    ("{{ .a | true }}", "template-syntax", "expected a function name after '|'", "true", None),
    ("{{ .a +  }}", "template-syntax", "expected an expression after '+'", "}}", None),
    ("{{ if }}{{ end }}", "template-syntax", "expected an expression after 'if'", "}}", None),
    ("{{ }}", "template-syntax", "empty action", "{{ }}", None),
    ("{{ .a", "template-syntax", "unclosed action: missing '}}'", "{{", "{{ \"{{\" }}"),
    ("a {{ .a }", "template-syntax", "unclosed action: missing '}}'", "{{", None),
    ("{{ end }}", "template-syntax", "unexpected 'end': no open if/range/with", "{{ end }}",
     None),
    ("x {{ else }}", "template-syntax", "unexpected 'else': no open if/range/with",
     "{{ else }}", None),
    ("{{ if .a }}{{ else }}{{ else }}{{ end }}", "template-syntax",
     "this 'if' already has an 'else'", "{{ else }}", None),
    ("{{ range .a }}{{ else if .b }}{{ end }}", "template-syntax",
     "unexpected 'else if' inside 'range'", "{{ else if .b }}", "{{ else }}{{ if"),
    ("{{ .a .b }}", "template-syntax", "unexpected field '.b': two values in a row", ".b",
     "write its name first"),
    ("{{ .a == .b == .c }}", "template-syntax", "comparisons cannot be chained", "==", "and"),
    ("{{ .a | len > 2 }}", "template-syntax", "unexpected '>' after a pipe", ">",
     "(.a | len) > 2"),
    ("{{ (.a }}", "template-syntax", "unclosed '(': missing ')'", "(", None),
    ("{{ [1, 2 }}", "template-syntax", "unclosed '[': missing ']'", "[", None),
    ('{{ {"a": 1 }}', "template-syntax", "unclosed '{': missing '}'", "{", None),
    ("{{ .a ) }}", "template-syntax", "unexpected ')'", ")", None),
    ('{{ "abc }}', "template-syntax", "unterminated string literal", '"abc ', None),
    ("{{ `abc }}", "template-syntax", "unterminated raw string literal", "`", None),
    ("{{ .a && .b }}", "template-syntax", "unexpected '&&'", "&&", "'and'"),
    ("{{ .a || .b }}", "template-syntax", "unexpected '||'", "||", "'or'"),
    ("{{ !.a }}", "template-syntax", "unexpected '!'", "!", "'not'"),
    ("{{ .a = 1 }}", "template-syntax", "unexpected '='", "=", "'=='"),
    ("{{ @ }}", "template-syntax", "unexpected character '@'", "@", None),
    ("{{ .café }}", "template-syntax", "unexpected character 'é'", "é", "get"),
    ("{{ .a end }}", "template-syntax", "unexpected 'end'", "end", "alone"),
    ("{{ if if }}{{ end }}", "template-syntax", "expected an expression after 'if', found "
     "'if'", "if", None),
    ("{{ $x.a := 1 }}", "template-syntax", "cannot assign to '$x.a'", "$x.a", None),
    ("{{ range $i, }}{{ end }}", "template-syntax", "expected a variable after ','", "}}",
     None),
    ("{{ range $i, $v }}{{ end }}", "template-syntax", "expected ':=' after '$v'", "}}", None),
    ("{{ .a not .b }}", "template-syntax", "expected 'in' after 'not'", ".b", None),
    ('{{ "a\\qb" }}', "template-syntax", "invalid escape '\\q'", "\\q", None),
    ('{{ "\\ud800" }}', "template-syntax", "not a valid Unicode code point", "\\ud800", None),
    ("{{ 1e999 }}", "template-syntax", "too large", "1e999", None),
    ("{{ {.k: 1} }}", "template-syntax", "map keys must be string literals", ".k", None),
    ('{{ {"a": 1, "a": 2} }}', "template-syntax", "duplicate key 'a'", '"a"', None),
    ("{{ ${X} }}", "template-syntax", "'${X}' cannot be used inside {{ }}", "${X}",
     'secret "X"'),
    ("${1X}", "template-syntax", "invalid secret reference", "${1X}", "$${"),
    ("{{/* open", "template-syntax", "unclosed comment: missing '*/'", "/*", None),
    ("{{ /* c */ x }}", "template-syntax", "a comment must end with '*/}}'", "*/", None),
    ("{{ define \"x\" }}", "template-syntax", "'define' is not supported", "define", None),
    ("{{ foo .x }}", "unknown-function", "unknown function 'foo'", "foo", "'.foo'"),
    ("{{ .x | tojson }}", "unknown-function", "unknown function 'tojson'", "tojson",
     "did you mean 'toJson'?"),
    ("{{ lowr .x }}", "unknown-function", "unknown function 'lowr'", "lowr",
     "did you mean 'lower'?"),
    ("{{ html .x }}", "unknown-function", "unknown function 'html'", "html",
     "GXO does not provide 'html'"),
    ("{{ js .x }}", "unknown-function", "unknown function 'js'", "js",
     "GXO does not provide 'js'"),
    ("{{ call .f }}", "unknown-function", "unknown function 'call'", "call",
     "GXO does not provide 'call'"),
    ("{{ None }}", "unknown-function", "unknown function 'None'", "None", "write 'null'"),
    ("{{ True }}", "unknown-function", "unknown function 'True'", "True", "write 'true'"),
    ("\ue000", "template-syntax", "unexpected character U+E000", "\ue000", None),
])
def test_template_errors(text: str, code: str, message: str, span: str,
                         help_part: str | None) -> None:
    first = errors_of(text)[0]
    assert first.code == code
    assert message in first.message, first
    assert at(text, first.start, first.end) == span
    if help_part is not None:
        assert first.help is not None and help_part in first.help, first.help


def test_unclosed_blocks_are_reported_at_their_opening_action() -> None:
    text = "{{ if .a }}x{{ range .b }}y"
    errors = errors_of(text)
    assert [(e.message, at(text, e.start, e.end)) for e in errors] == [
        ("unclosed 'if': missing {{ end }}", "{{ if .a }}"),
        ("unclosed 'range': missing {{ end }}", "{{ range .b }}"),
    ]
    for e in errors:
        assert e.notes == ((len(text), "the template ends here without {{ end }}"),)
    (w,) = errors_of("{{ with .a }}")
    assert w.message == "unclosed 'with': missing {{ end }}"


def test_several_errors_are_reported_in_order() -> None:
    text = "{{ .a | }} and {{ nope }} and {{ end }}"
    errors = errors_of(text)
    assert [at(text, e.start, e.end) for e in errors] == ["}}", "nope", "{{ end }}"]
    assert [e.code for e in errors] == ["template-syntax", "unknown-function",
                                        "template-syntax"]


def test_a_broken_block_action_keeps_the_nesting() -> None:
    # the broken `if` still opens a block, so `end` is not reported as stray
    text = "{{ if .a | }}x{{ end }}"
    assert [e.message for e in errors_of(text)] == ["expected a function name after '|'"]


def test_messages_never_show_lark_terminal_names() -> None:
    samples = ["{{ ( }}", "{{ ) }}", "{{ [ }}", "{{ { }}", "{{ .a ] }}", "{{ range $i }}",
               "{{ .a : }}", "{{ , }}", "{{ $ := 1 }}", "{{ 1 2 }}", "{{ .a | 1 }}",
               "{{ with }}", "{{ else if }}"]
    for text in samples:
        for e in errors_of(text):
            assert not _LARKISH.search(_unquoted(e.message + " " + (e.help or ""))), e


_LARKISH = re.compile(r"(?<!{)\b(RBRACE|LBRACE|RPAR|LPAR|RSQB|LSQB|FIELD|VAR|NAME|NUMBER|STRING|"
                      r"PIPE|DECLARE|COMMA|COLON|SELECTOR|ATOM_OPEN|ATOM_CLOSE|SECRET_REF)\b"
                      r"|\$END|Token\(")


def _unquoted(text: str) -> str:
    return re.sub(r"'[^']*'|\"[^\"]*\"", "", text)


# ---------------------------------------------------------------------------------------------
# functions


def test_every_checklist_and_design_function_is_known() -> None:
    required = """env secret eq now int gt and trim split first upper slice join dict toJson
        fromJson get coalesce or not len index print printf println ne lt le ge urlquery lower
        replace keys b64enc b64dec sha256 uuid regex_match regex_replace float str bool
        default contains hasPrefix hasSuffix last list quote trimPrefix trimSuffix
        title""".split()
    assert set(required) <= set(functions.FUNCTIONS)
    assert not set(functions.UNPROVIDED) & set(functions.FUNCTIONS)
    assert set(functions.UNPROVIDED) == {"call", "html", "js"}


@pytest.mark.parametrize(("name", "arity"), [
    ("default", 2), ("replace", 3), ("regex_replace", 3), ("regex_match", 2), ("split", 2),
    ("join", 2), ("slice", 2), ("get", 2), ("keys", 1), ("now", 0), ("uuid", 0),
])
def test_piped_value_last_signatures(name: str, arity: int) -> None:
    sig = functions.FUNCTIONS[name]
    assert sig.min_arity == arity and sig.max_arity == arity


def test_signature_types() -> None:
    f = functions.FUNCTIONS
    assert f["split"].params == (STR, STR) and f["split"].returns == ListT(STR)
    assert f["len"].returns == INT and f["keys"].returns == ListT(STR)
    assert f["coalesce"].variadic == ANY and f["coalesce"].min_arity == 1
    assert f["printf"].params == (STR,) and f["printf"].max_arity is None
    assert f["dict"].min_arity == 0
    for name, sig in f.items():
        assert sig.name == name and sig.doc and sig.example
    with pytest.raises(AttributeError):
        f["len"].name = "x"  # type: ignore[misc]


def test_every_function_example_parses() -> None:
    for sig in functions.FUNCTIONS.values():
        tree, errors = parser.parse_template(sig.example)
        assert errors == [], (sig.name, errors)


def test_suggest() -> None:
    assert functions.suggest("tojson") == "toJson"
    assert functions.suggest("to_json") == "toJson"
    assert functions.suggest("regexMatch") == "regex_match"
    assert functions.suggest("uper") == "upper"
    assert functions.suggest("zzzzzz") is None


# ---------------------------------------------------------------------------------------------
# docs


def test_docs_list_every_function_and_the_table_is_current() -> None:
    doc = DOCS.read_text(encoding="utf-8")
    for name in functions.FUNCTIONS:
        assert f"`{name}`" in doc, name
    begin = doc.index("<!-- BEGIN FUNCTIONS")
    begin = doc.index("\n", begin) + 1
    end = doc.index("<!-- END FUNCTIONS -->")
    assert doc[begin:end] == functions.markdown_table(), (
        "docs/expressions.md is stale: paste functions.markdown_table() between the markers")


def test_doc_snippets_parse() -> None:
    yaml = pytest.importorskip("yaml")
    doc = DOCS.read_text(encoding="utf-8")
    checked = 0

    def walk(value: object, key: object = None) -> None:
        nonlocal checked
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, k)
        elif isinstance(value, list):
            for v in value:
                walk(v, key)
        elif isinstance(value, str) and parser.is_templated(value):
            parse = parser.parse_condition if key == "when" else parser.parse_template
            assert parse(value)[1] == [], value
            checked += 1

    for block in re.findall(r"```yaml\n(.*?)```", doc, re.S):
        walk(yaml.safe_load(block))
    assert checked >= 10
