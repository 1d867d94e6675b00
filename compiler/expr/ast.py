"""The closed node set of the expression language (templates and conditions).

Every node carries ``start``/``end``: character offsets into the *value* of the YAML string
that holds the expression (after YAML unescaping and folding).  The loader maps an offset back
to the file's line and column (``ScalarNode.position``), so diagnostics point at the token.
Offsets are excluded from equality so that two parses of the same text compare equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union


@dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    start: int = field(default=0, compare=False)
    end: int = field(default=0, compare=False)


# ---------------------------------------------------------------------------------------------
# Expressions (inside ``{{ }}``)


@dataclass(frozen=True, slots=True, kw_only=True)
class Field(Node):
    """``.a.b.0``: a path from the current scope ``.``; ``path == ()`` is ``.`` itself.

    ``segment_starts`` gives the offset of each segment (for pointing at an unknown field)."""

    kind: str = "field"
    path: tuple[str | int, ...] = ()
    segment_starts: tuple[int, ...] = field(default=(), compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Var(Node):
    """``$x.a.b`` (``name == ""`` is ``$``, the root data)."""

    kind: str = "var"
    name: str = ""
    path: tuple[str | int, ...] = ()
    segment_starts: tuple[int, ...] = field(default=(), compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Selector(Node):
    """``(expr).a.b``: a path applied to the value of a parenthesised expression."""

    kind: str = "selector"
    target: "Expr"
    path: tuple[str | int, ...] = ()
    segment_starts: tuple[int, ...] = field(default=(), compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Literal(Node):
    """A string, number, ``true``/``false`` or ``null``."""

    kind: str = "literal"
    value: str | int | float | bool | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ListLit(Node):
    kind: str = "list"
    items: tuple["Expr", ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class MapLit(Node):
    """``{"k": expr, ...}``; keys are string literals."""

    kind: str = "map"
    items: tuple[tuple[str, "Expr"], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Call(Node):
    """A function call: Go style ``f a b``, ``(f a b)``, or a pipe stage.

    ``x | f a`` is ``Call(name="f", args=(a, x))``: the piped value is the last argument.
    ``name_end`` marks the end of the function name (``start`` is its first character)."""

    kind: str = "call"
    name: str
    args: tuple["Expr", ...] = ()
    name_end: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class BinOp(Node):
    """Infix ``== != < <= > >= in and or + - * / %``."""

    kind: str = "binop"
    op: str
    left: "Expr"
    right: "Expr"


@dataclass(frozen=True, slots=True, kw_only=True)
class UnaryOp(Node):
    """``not x`` and ``-x``."""

    kind: str = "unary"
    op: str
    operand: "Expr"


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretRef(Node):
    """``${NAME}`` in template text, or ``secret "NAME"``: a tainted secret lookup."""

    kind: str = "secret"
    name: str


Expr = Union[Field, Var, Selector, Literal, ListLit, MapLit, Call, BinOp, UnaryOp, SecretRef]


# ---------------------------------------------------------------------------------------------
# Template structure


@dataclass(frozen=True, slots=True, kw_only=True)
class Text(Node):
    """Literal text between actions (after ``{{-``/``-}}`` trimming and ``$${`` unescaping)."""

    kind: str = "text"
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Action(Node):
    """``{{ expr }}``: the value's text form is written out."""

    kind: str = "action"
    expr: Expr


@dataclass(frozen=True, slots=True, kw_only=True)
class Assign(Node):
    """``{{ $x := e }}`` (``declare``) or ``{{ $x = e }}``; writes nothing."""

    kind: str = "assign"
    name: str
    expr: Expr
    declare: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class If(Node):
    """``if c1 ... else if c2 ... else ... end``; ``branches`` pairs conditions with bodies."""

    kind: str = "if"
    branches: tuple[tuple[Expr, tuple["Part", ...]], ...]
    else_body: tuple["Part", ...] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Range(Node):
    """``range [$i,] [$v :=] expr`` ... ``[else ...]`` ``end``; inside, ``.`` is the element."""

    kind: str = "range"
    expr: Expr
    body: tuple["Part", ...]
    key_var: str | None = None
    value_var: str | None = None
    else_body: tuple["Part", ...] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class With(Node):
    """``with expr`` ... ``[else ...]`` ``end``; inside, ``.`` is the value when truthy."""

    kind: str = "with"
    expr: Expr
    body: tuple["Part", ...]
    else_body: tuple["Part", ...] | None = None


Part = Union[Text, Action, Assign, If, Range, With]


@dataclass(frozen=True, slots=True, kw_only=True)
class Template(Node):
    """A templated string.  ``single`` is the lone expression when the whole string is exactly
    one ``{{ expr }}`` action (surrounding whitespace allowed): it yields a native value."""

    kind: str = "template"
    parts: tuple[Part, ...]
    single: Expr | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Condition(Node):
    """A condition (``when``, ``condition``): ``{{ }}`` atoms combined by operators written
    outside the braces, e.g. ``"{{ .attempts }} >= 10"`` is ``BinOp(>=, .attempts, 10)``."""

    kind: str = "condition"
    expr: Expr


Tree = Union[Template, Condition]


@dataclass(frozen=True, slots=True, kw_only=True)
class ExprError:
    """A problem found while parsing an expression string.

    ``code`` is a diagnostic code of the registry (``template-syntax`` or ``unknown-function``);
    offsets are into the parsed string; ``notes`` are (offset-or-None, text) pairs, e.g. the
    end of the string for an unclosed ``{{ if }}``."""

    code: str
    message: str
    start: int
    end: int
    help: str | None = None
    notes: tuple[tuple[int | None, str], ...] = ()
