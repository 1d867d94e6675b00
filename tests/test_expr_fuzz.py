"""Property tests of the expression parser: it never raises, and valid trees round-trip.

Also the parse-speed budget.  The deterministic cases are in ``test_expr_parser.py``.
"""

from __future__ import annotations

import re
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from expr_util import cond, expr, sx
from gxo.compiler.expr import ast, functions, parser

# ---------------------------------------------------------------------------------------------
# helpers: tests/expr_util.py


_LARKISH = re.compile(r"(?<!{)\b(RBRACE|LBRACE|RPAR|LPAR|RSQB|LSQB|FIELD|VAR|NAME|NUMBER|"
                      r"STRING|PIPE|DECLARE|COMMA|COLON|SELECTOR|ATOM_OPEN|ATOM_CLOSE|"
                      r"SECRET_REF)\b|\$END|Token\(")


def _unquoted(text: str) -> str:
    return re.sub(r"'[^']*'|\"[^\"]*\"", "", text)


# ---------------------------------------------------------------------------------------------
# never raise


_FRAGMENTS = ["{{", "}}", "{{-", "-}}", "{{- ", " -}}", "|", ".a", ".b.0", "$x", "$", ":=", "=",
              "if", "else", "end", "range", "with", "and", "or", "not", "in", '"', "'", "`",
              "(", ")", "[", "]", "{", "}", ",", ":", "/*", "*/", "${", "$${", "${X}", "1",
              "-", "==", "<", "upper", "eq", "secret", '"s"', " ", "\n", "\\", ".", "1.5e",
              "nil", "foo", "\ue000", "\ue001"]


def _check_result(text: str, tree: object, errors: list[ast.ExprError]) -> None:
    assert (tree is None) == bool(errors)
    for e in errors:
        assert e.code in ("template-syntax", "unknown-function")
        assert 0 <= e.start <= e.end <= len(text), (text, e)
        assert all(o is None or 0 <= o <= len(text) for o, _ in e.notes)
        assert not _LARKISH.search(_unquoted(e.message + " " + (e.help or ""))), (text, e)


@settings(max_examples=2500, derandomize=True, deadline=None,
          suppress_health_check=list(HealthCheck))
@given(st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.text(max_size=3)),
                max_size=24).map("".join))
def test_never_raises_on_arbitrary_text(text: str) -> None:
    tree, errors = parser.parse_template(text)
    _check_result(text, tree, errors)
    ctree, cerrors = parser.parse_condition(text)
    _check_result(text, ctree, cerrors)


def _grammar_strategy() -> st.SearchStrategy[str]:
    from hypothesis.extra.lark import from_lark
    from lark import Lark

    from gxo.compiler.expr._tables import grammar_text

    grammar = grammar_text()
    lark = Lark(grammar, parser="lalr", start=["action", "condition"])
    # Explicit strategies for the regex terminals: drawing from the regexes is slow.
    return from_lark(lark, start="action", explicit={
        "SELECTOR": st.sampled_from([".a", ".b.0"]),
        "FIELD": st.sampled_from([".", ".a", ".rows.0.id", ".x_1"]),
        "VAR": st.sampled_from(["$", "$x", "$.a", "$v.0"]),
        "NUMBER": st.sampled_from(["0", "42", "1.5", "2e3"]),
        "STRING": st.sampled_from(['"s"', "'it\\'s'", "`raw`", '"\\n"']),
        "SECRET_REF": st.just("${TOKEN}"),
        "WS": st.just(" "),
        "NAME": st.sampled_from(sorted(functions.FUNCTIONS)),
        "ATOM_OPEN": st.just("(("), "ATOM_CLOSE": st.just("))"),
    })


# from_lark draws slowly on this grammar (~0.1 s an example): a small sample here, and the
# round-trip test below covers valid expressions in depth.
@settings(max_examples=50, derandomize=True, deadline=None,
          suppress_health_check=list(HealthCheck))
@given(st.deferred(_grammar_strategy))
def test_never_raises_on_grammar_generated_actions(src: str) -> None:
    text = "{{ " + src + " }}"
    tree, errors = parser.parse_template(text)
    _check_result(text, tree, errors)


# Round trip: random trees are rendered with the fewest parentheses the precedence table
# allows, then parsed back; the tree must come back the same.  Precedences as in the grammar.
_PIPE, _OR, _AND, _NOT, _CMP, _ADD, _MUL, _NEG, _CALL, _ATOM = range(1, 11)
_BINARY = {"or": _OR, "and": _AND, "==": _CMP, "!=": _CMP, "<": _CMP, ">=": _CMP, "in": _CMP,
           "+": _ADD, "-": _ADD, "*": _MUL, "/": _MUL, "%": _MUL}
_FUNCS = ["len", "upper", "eq", "default", "printf", "join", "now", "uuid"]


def _render(e: ast.Expr, draw: st.DrawFn) -> tuple[str, int]:
    def sub(x: ast.Expr, need: int) -> str:
        text, prec = _render(x, draw)
        return text if prec >= need else f"({text})"

    if isinstance(e, ast.Field):
        return "." + ".".join(map(str, e.path)), _ATOM
    if isinstance(e, ast.Literal):
        v = e.value
        return (f'"{v}"' if isinstance(v, str) else "null" if v is None else str(v).lower()), _ATOM
    if isinstance(e, ast.ListLit):
        return "[" + ", ".join(sub(i, _PIPE) for i in e.items) + "]", _ATOM
    if isinstance(e, ast.Selector):
        return f"({_render(e.target, draw)[0]}).{'.'.join(map(str, e.path))}", _ATOM
    if isinstance(e, ast.UnaryOp):
        if e.op == "not":
            return "not " + sub(e.operand, _NOT), _NOT
        return "-" + sub(e.operand, _NEG), _NEG
    if isinstance(e, ast.BinOp):
        p = _BINARY[e.op]
        right_need = _ADD if p == _CMP else p + 1
        return f"{sub(e.left, _ADD if p == _CMP else p)} {e.op} {sub(e.right, right_need)}", p
    assert isinstance(e, ast.Call)
    if not e.args:
        return e.name, _ATOM
    args = [sub(a, _ATOM) for a in e.args]
    if draw(st.booleans()):  # as a pipe stage: the last argument is piped in
        return f"{sub(e.args[-1], _PIPE)} | {' '.join([e.name, *args[:-1]])}", _PIPE
    return " ".join([e.name, *args]), _CALL


def _trees() -> st.SearchStrategy[ast.Expr]:
    leaves = st.one_of(
        st.lists(st.sampled_from(["a", "b", "rows", 0, 3]), min_size=1, max_size=3).map(
            lambda p: ast.Field(path=tuple(p))),
        st.integers(0, 99).map(lambda v: ast.Literal(value=v)),
        st.sampled_from(["x", "", "a b"]).map(lambda v: ast.Literal(value=v)),
        st.sampled_from([True, False, None]).map(lambda v: ast.Literal(value=v)),
        st.sampled_from(["now", "uuid"]).map(lambda n: ast.Call(name=n)),
    )

    def grow(inner: st.SearchStrategy[ast.Expr]) -> st.SearchStrategy[ast.Expr]:
        return st.one_of(
            st.builds(lambda o, a, b: ast.BinOp(op=o, left=a, right=b),
                      st.sampled_from(sorted(_BINARY)), inner, inner),
            inner.map(lambda x: ast.UnaryOp(op="not", operand=x)),
            inner.filter(lambda x: not isinstance(x, ast.Literal)).map(
                lambda x: ast.UnaryOp(op="-", operand=x)),
            st.builds(lambda n, a: ast.Call(name=n, args=tuple(a)),
                      st.sampled_from(_FUNCS[:6]), st.lists(inner, min_size=1, max_size=3)),
            st.lists(inner, max_size=3).map(lambda i: ast.ListLit(items=tuple(i))),
            inner.map(lambda x: ast.Selector(target=x, path=("id",))),
        )

    return st.recursive(leaves, grow, max_leaves=12)


@settings(max_examples=2000, derandomize=True, deadline=None,
          suppress_health_check=list(HealthCheck))
@given(st.data(), _trees())
def test_rendered_trees_parse_back(data: st.DataObject, tree: ast.Expr) -> None:
    text, _ = _render(tree, data.draw)
    assert sx(expr(text)) == sx(tree), text
    assert sx(cond("{{ " + text + " }}")) == sx(tree), text


# ---------------------------------------------------------------------------------------------
# speed


def test_a_typical_template_parses_well_under_a_millisecond() -> None:
    parser.get_parser()
    texts = [f"echo {{{{ .step_{i}.stdout | trim }}}} {{{{ if eq .env \"prod\" }}}}!{{{{ end }}}}"
             for i in range(300)]
    started = time.perf_counter()
    for text in texts:
        assert parser.parse_template(text)[1] == []
    per_template = (time.perf_counter() - started) / len(texts)
    assert per_template < 1e-3, f"{per_template * 1e6:.0f} µs per template"


# ---------------------------------------------------------------------------------------------
# deep nesting: refused at its place past parser.MAX_DEPTH, never a RecursionError later

_NESTERS = [("(str ", ")"), ("not ", ""), ("[", "]"), ("(", ")"), (".a + ", ""), ("-(", ")"),
            ('{"k": ', "}"), ("(", ").a"), ("", " | str"), ("", " and true"), ("{{ if .a }}", "{{ end }}")]


@settings(max_examples=400, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.sampled_from(_NESTERS), max_size=300))
def test_deep_nesting_is_refused_past_the_limit(wrappers: list[tuple[str, str]]) -> None:
    inner = ".a"
    blocks = 0
    for left, right in wrappers:
        if left.startswith("{{"):
            blocks += 1
            continue
        inner = left + inner + right
    text = "{{ if .a }}" * blocks + "{{ " + inner + " }}" + "{{ end }}" * blocks
    tree, errors = parser.parse_template(text)
    _check_result(text, tree, errors)
    if len(wrappers) > parser.MAX_DEPTH + 1:
        assert any("nested too deeply" in e.message for e in errors), text
    if blocks == 0:
        ctree, cerrors = parser.parse_condition("{{ " + inner + " }}")
        _check_result("{{ " + inner + " }}", ctree, cerrors)


def test_depth_error_points_at_the_level_past_the_limit() -> None:
    n = parser.MAX_DEPTH + 1
    text = "{{ " + "(str " * n + ".a" + ")" * n + " }}"
    tree, errors = parser.parse_template(text)
    assert tree is None and len(errors) == 1
    (e,) = errors
    assert e.code == "template-syntax" and e.message == "expression nested too deeply: more than 64 levels"
    assert e.start == 3 + 5 * n and text[e.start:e.start + 2] == ".a"  # level 65, under 65 calls
    assert parser.parse_template("{{ " + "(str " * (n - 1) + ".a" + ")" * (n - 1) + " }}")[1] == []
