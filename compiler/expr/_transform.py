"""The inline Lark transformer: builds :mod:`.ast` nodes as the LALR parser reduces rules.

Lark calls one method per rule (named by the grammar's ``->`` aliases) with the children as a
list: tokens and already built nodes.  Node offsets come from the tokens, which hold offsets into
the whole string because the parser is given a ``TextSlice`` of it.  Problems found while
building (bad escapes, unknown functions, ...) go to the per-thread :data:`ctx`, since one
transformer instance serves every parse.
"""

from __future__ import annotations

import threading
from typing import Any

from lark import Token

from gxo.compiler.expr import ast
from gxo.compiler.expr._scan import SYNTAX
from gxo.compiler.expr._strings import decode_string
from gxo.compiler.expr.functions import FUNCTIONS, UNPROVIDED, suggest

__all__ = ["Build", "ctx", "keyword", "UNKNOWN_FUNCTION"]

UNKNOWN_FUNCTION = "unknown-function"

# Go template keywords GXO does not have; they lex as names.
_UNSUPPORTED_KEYWORDS = ("define", "template", "block", "break", "continue")
_LITERAL_SPELLINGS = {"none": "null", "null": "null", "nil": "nil", "true": "true",
                      "false": "false"}


class _Ctx(threading.local):
    """Per-thread state of the parse in progress, read by the inline transformer."""

    errors: list[ast.ExprError]  # problems found while building nodes
    in_condition: bool = False  # `${NAME}` is an operand only in conditions


ctx = _Ctx()


_KEYWORDS = {"if": "IF", "else": "ELSE", "end": "END", "range": "RANGE", "with": "WITH",
             "and": "AND", "or": "OR", "not": "NOT", "in": "IN", "true": "TRUE",
             "false": "FALSE", "null": "NULL", "nil": "NIL"}


def keyword(tok: Token) -> Token:
    """Keywords are reserved everywhere.  The contextual lexer offers only the terminals a
    parser state accepts, so where a name may stand but a keyword may not (``f end``), a keyword
    would lex as a function name; give it its keyword type so the parser reports it."""
    kind = _KEYWORDS.get(tok)
    if kind is not None:
        tok.type = kind
    return tok


def _error(message: str, start: int, end: int, help: str | None = None,
           code: str = SYNTAX) -> None:
    ctx.errors.append(ast.ExprError(code=code, message=message, start=start, end=end,
                                     help=help))


def _split_path(path: str, offset: int) -> tuple[tuple[str | int, ...], tuple[int, ...]]:
    """``.a.0`` at ``offset`` -> ``(("a", 0), (offset + 1, offset + 3))``."""
    if not path:
        return (), ()
    segments: list[str | int] = []
    starts: list[int] = []
    pos = offset + 1
    for seg in path[1:].split("."):
        segments.append(int(seg) if seg.isdigit() else seg)
        starts.append(pos)
        pos += len(seg) + 1
    return tuple(segments), tuple(starts)


_Child = Any  # a Token, an ast node or a _Paren
_Stage = tuple[str, Any, list[Any], int]


class _Paren:
    """A parenthesised expression while its parent is built: the parent's span includes the
    parentheses (``(.a + 1) * 2`` starts at the ``(``), the node stored is the one inside."""

    __slots__ = ("node", "start", "end")

    def __init__(self, node: Any, start: int, end: int) -> None:
        self.node = node
        self.start = start
        self.end = end


def _n(x: Any) -> Any:
    """The node of a child (unwrapping parentheses)."""
    return x.node if type(x) is _Paren else x


class Build:
    """Inline transformer: Lark calls one method per reduced rule, children as a list."""

    # --- actions ---------------------------------------------------------------------------

    def act_expr(self, c: list[_Child]) -> tuple[Any, ...]:
        return ("expr", _n(c[0]))

    def act_declare(self, c: list[_Child]) -> tuple[Any, ...]:
        return ("assign", self._var_name(c[0]), _n(c[2]), True)

    def act_assign(self, c: list[_Child]) -> tuple[Any, ...]:
        return ("assign", self._var_name(c[0]), _n(c[2]), False)

    def act_if(self, c: list[_Child]) -> tuple[Any, ...]:
        return ("if", _n(c[1]))

    def act_else(self, c: list[_Child]) -> tuple[Any, ...]:
        return ("else",)

    def act_else_if(self, c: list[_Child]) -> tuple[Any, ...]:
        return ("elseif", _n(c[2]))

    def act_range(self, c: list[_Child]) -> tuple[Any, ...]:
        return ("range", _n(c[1]), None, None)

    def act_range_v(self, c: list[_Child]) -> tuple[Any, ...]:
        return ("range", _n(c[3]), None, self._var_name(c[1]))

    def act_range_kv(self, c: list[_Child]) -> tuple[Any, ...]:
        return ("range", _n(c[5]), self._var_name(c[1]), self._var_name(c[3]))

    def act_with(self, c: list[_Child]) -> tuple[Any, ...]:
        return ("with", _n(c[1]))

    def act_end(self, c: list[_Child]) -> tuple[Any, ...]:
        return ("end",)

    def condition(self, c: list[_Child]) -> Any:
        return _n(c[0])

    @staticmethod
    def _var_name(tok: Any) -> str:
        value = str(tok)
        if value == "$" or "." in value:
            _error(f"cannot assign to '{value}': expected a variable name such as '$x'",
                   tok.start_pos, tok.end_pos)
        return value[1:].split(".", 1)[0]

    # --- operators and calls ------------------------------------------------------------------

    def pipe(self, c: list[_Child]) -> Any:
        left, _, stage = c
        kind, name, args, end = stage
        if kind == "not":
            return ast.UnaryOp(op="not", operand=_n(left), start=left.start, end=name.end_pos)
        return self._call(name, [*args, left], end)

    def stage_call(self, c: list[_Child]) -> _Stage:
        name = c[0]
        args = c[1:]
        return ("call", name, args, args[-1].end if args else name.end_pos)

    def stage_not(self, c: list[_Child]) -> _Stage:
        return ("not", c[0], [], c[0].end_pos)

    def call(self, c: list[_Child]) -> Any:
        name = c[0]
        args = c[1:]
        return self._call(name, args, args[-1].end if args else name.end_pos)

    @staticmethod
    def _call(name_tok: Any, args: list[Any], end: int) -> Any:
        name = str(name_tok)
        start = name_tok.start_pos
        nodes = tuple(_n(a) for a in args)
        if name not in FUNCTIONS:
            _unknown_function(name, start, name_tok.end_pos)
        elif (name == "secret" and len(nodes) == 1 and isinstance(nodes[0], ast.Literal)
              and isinstance(nodes[0].value, str)):
            return ast.SecretRef(name=nodes[0].value, start=min(start, args[0].start),
                                 end=max(end, args[0].end))
        return ast.Call(name=name, args=nodes, start=start, end=end, name_end=name_tok.end_pos)

    def binop(self, c: list[_Child]) -> Any:
        left, op, right = c
        return ast.BinOp(op=str(op), left=_n(left), right=_n(right), start=left.start,
                         end=right.end)

    def not_in(self, c: list[_Child]) -> Any:
        left, _, _, right = c
        inner = ast.BinOp(op="in", left=_n(left), right=_n(right), start=left.start,
                          end=right.end)
        return ast.UnaryOp(op="not", operand=inner, start=left.start, end=right.end)

    def unary(self, c: list[_Child]) -> Any:
        op, operand = c
        node = _n(operand)
        if (op.type == "MINUS" and isinstance(node, ast.Literal)
                and type(node.value) in (int, float)):
            assert isinstance(node.value, (int, float))
            return ast.Literal(value=-node.value, start=op.start_pos, end=operand.end)
        return ast.UnaryOp(op=str(op), operand=node, start=op.start_pos, end=operand.end)

    # --- operands -------------------------------------------------------------------------------

    def field(self, c: list[_Child]) -> Any:
        tok = c[0]
        value = str(tok)
        path, starts = _split_path("" if value == "." else value, tok.start_pos)
        return ast.Field(path=path, segment_starts=starts, start=tok.start_pos, end=tok.end_pos)

    def var(self, c: list[_Child]) -> Any:
        tok = c[0]
        body = str(tok)[1:]
        dot = body.find(".")
        name, rest = (body, "") if dot < 0 else (body[:dot], body[dot:])
        path, starts = _split_path(rest, tok.start_pos + 1 + len(name))
        return ast.Var(name=name, path=path, segment_starts=starts, start=tok.start_pos,
                       end=tok.end_pos)

    def selector(self, c: list[_Child]) -> Any:
        lpar, target, _, sel = c
        path, starts = _split_path(str(sel), sel.start_pos)
        return ast.Selector(target=_n(target), path=path, segment_starts=starts,
                            start=lpar.start_pos, end=sel.end_pos)

    def paren(self, c: list[_Child]) -> Any:
        return _Paren(_n(c[1]), c[0].start_pos, c[2].end_pos)

    def atom(self, c: list[_Child]) -> Any:
        return _n(c[1])

    def string(self, c: list[_Child]) -> Any:
        tok = c[0]
        value, problem = decode_string(str(tok))
        if problem is not None:
            offset, length, message = problem
            _error(message, tok.start_pos + offset, tok.start_pos + offset + length)
        return ast.Literal(value=value, start=tok.start_pos, end=tok.end_pos)

    def number(self, c: list[_Child]) -> Any:
        tok = c[0]
        text = str(tok)
        value: int | float
        if "." in text or "e" in text or "E" in text:
            value = float(text)
            if value in (float("inf"), float("-inf")):
                _error(f"number {text} is too large", tok.start_pos, tok.end_pos)
        else:
            value = int(text) if len(text) <= 4000 else 0
            if len(text) > 4000:
                _error("integer literal is too long", tok.start_pos, tok.end_pos)
        return ast.Literal(value=value, start=tok.start_pos, end=tok.end_pos)

    def const(self, c: list[_Child]) -> Any:
        tok = c[0]
        value = {"TRUE": True, "FALSE": False}.get(tok.type)
        return ast.Literal(value=value, start=tok.start_pos, end=tok.end_pos)

    def secret_ref(self, c: list[_Child]) -> Any:
        tok = c[0]
        name = str(tok)[2:-1]
        if not ctx.in_condition:
            _error(f"'${{{name}}}' cannot be used inside {{{{ }}}}", tok.start_pos, tok.end_pos,
                   help=f'write {{{{ secret "{name}" }}}}, or put ${{{name}}} in the text '
                        f"outside the braces")
        return ast.SecretRef(name=name, start=tok.start_pos, end=tok.end_pos)

    def list_items(self, c: list[_Child]) -> list[Any]:
        return [_n(x) for x in c if not isinstance(x, Token)]

    def list_lit(self, c: list[_Child]) -> Any:
        lsq, items, rsq = c
        return ast.ListLit(items=tuple(items or ()), start=lsq.start_pos, end=rsq.end_pos)

    def map_items(self, c: list[_Child]) -> list[Any]:
        return [x for x in c if not isinstance(x, Token)]

    def map_item(self, c: list[_Child]) -> tuple[Any, Any]:
        return (_n(c[0]), _n(c[2]))

    def map_lit(self, c: list[_Child]) -> Any:
        lbrace, items, rbrace = c
        out: list[tuple[str, Any]] = []
        seen: set[str] = set()
        for key, value in items or ():
            if not (isinstance(key, ast.Literal) and isinstance(key.value, str)):
                _error("map keys must be string literals", key.start, key.end,
                       help='quote the key: {"name": .value}')
                continue
            if key.value in seen:
                _error(f"duplicate key '{key.value}' in a map literal", key.start, key.end)
            seen.add(key.value)
            out.append((key.value, value))
        return ast.MapLit(items=tuple(out), start=lbrace.start_pos, end=rbrace.end_pos)


#: names from Jinja2 and Sprig that users reach for, and GXO's spelling of the same thing
_OTHER_ENGINES = {
    "capitalize": "title", "length": "len", "count": "len", "tojson": "toJson", "to_json": "toJson",
    "from_json": "fromJson", "fromjson": "fromJson", "d": "default", "toString": "str", "string": "str",
    "lowercase": "lower", "uppercase": "upper", "strip": "trim", "b64encode": "b64enc",
    "b64decode": "b64dec", "regexMatch": "regex_match", "regexReplaceAll": "regex_replace",
    "hasKey": "in", "sha256sum": "sha256", "uuidv4": "uuid",
}


def _unknown_function(name: str, start: int, end: int) -> None:
    if name in _UNSUPPORTED_KEYWORDS:
        _error(f"'{name}' is not supported in GXO templates", start, end,
               help="GXO templates have if/else/range/with/end, variables and functions; "
                    "there are no named templates, blocks or loop breaks")
        return
    hint = UNPROVIDED.get(name)
    literal = _LITERAL_SPELLINGS.get(name.lower())
    if hint is None and literal is not None:
        hint = f"keywords are lower case: write '{literal}'"
    if hint is None and name in _OTHER_ENGINES and suggest(name) != _OTHER_ENGINES[name]:
        hint = f"that is another template engine's name: GXO spells it '{_OTHER_ENGINES[name]}'"
    if hint is None:
        close = suggest(name)
        if close is not None:
            hint = f"did you mean '{close}'?"
        else:
            hint = (f"see docs/expressions.md for the functions; to read a field named '{name}', "
                    f"write '.{name}'")
    _error(f"unknown function '{name}'", start, end, help=hint, code=UNKNOWN_FUNCTION)
