"""Helpers shared by the expression parser tests: compact S-expressions of trees."""

from __future__ import annotations

from gxo.compiler.expr import ast, parser


def sx(e: object) -> str:
    """A compact S-expression of an expression, to state expected trees in one line."""
    if isinstance(e, ast.Field):
        return "." + ".".join(map(str, e.path))
    if isinstance(e, ast.Var):
        return "$" + e.name + "".join(f".{p}" for p in e.path)
    if isinstance(e, ast.Selector):
        return f"(sel {sx(e.target)} {'.'.join(map(str, e.path))})"
    if isinstance(e, ast.Literal):
        return repr(e.value)
    if isinstance(e, ast.ListLit):
        return "[" + " ".join(sx(i) for i in e.items) + "]"
    if isinstance(e, ast.MapLit):
        return "{" + " ".join(f"{k!r}:{sx(v)}" for k, v in e.items) + "}"
    if isinstance(e, ast.Call):
        return "(" + " ".join([e.name, *(sx(a) for a in e.args)]) + ")"
    if isinstance(e, ast.BinOp):
        return f"({e.op} {sx(e.left)} {sx(e.right)})"
    if isinstance(e, ast.UnaryOp):
        return f"({e.op} {sx(e.operand)})"
    if isinstance(e, ast.SecretRef):
        return f"(secret! {e.name!r})"
    raise AssertionError(e)


def expr(src: str) -> ast.Expr:
    tree, errors = parser.parse_template("{{ " + src + " }}")
    assert errors == [], errors
    assert tree is not None and tree.single is not None
    return tree.single


def cond(text: str) -> ast.Expr:
    tree, errors = parser.parse_condition(text)
    assert errors == [], errors
    assert tree is not None
    return tree.expr


def template(text: str) -> ast.Template:
    tree, errors = parser.parse_template(text)
    assert errors == [], errors
    assert tree is not None
    return tree
