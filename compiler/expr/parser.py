"""Parse templates and conditions of the expression language into the AST (the ``parse`` phase).

A template is cut into text, ``${NAME}`` references and actions by :mod:`._scan`; each action's
inside is parsed by Lark (``grammar/expressions.lark``, LALR, strict; its tables are loaded from
``grammar/expressions.lalr.json``, see :mod:`._tables`) with an inline
transformer that builds :mod:`.ast` nodes directly, and the flat list of actions is then nested
into ``if``/``range``/``with`` blocks here.  A condition is parsed in one go: each ``{{``/``}}``
of an atom is replaced by two private-use characters of the same length (offsets are kept) and
the text around the atoms is checked to hold only literals, operators and parentheses.

Nothing here raises on bad input: every problem is an :class:`~.ast.ExprError` whose offsets
point into the parsed string.  Results are cached by text, since templates repeat.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any

from lark import Lark
from lark.exceptions import LarkError
from lark.utils import TextSlice

from gxo.compiler.expr import ast
from gxo.compiler.expr._errors import wrap_lark_error
from gxo.compiler.expr._tables import load_parser
from gxo.compiler.expr._scan import SYNTAX, Seg, scan
from gxo.compiler.expr._transform import Build, ctx, keyword

__all__ = ["is_templated", "parse_template", "parse_condition", "get_parser", "MAX_DEPTH", "MAX_RANGE_DEPTH"]

#: How deep an expression may nest (brackets, calls, operators, list and map literals and
#: if/range/with blocks all count a level).  Far above any real expression; the compiler's
#: passes and the generated code recurse, so a deeper one is refused (template-syntax).
MAX_DEPTH = 64
#: How many ``range`` blocks may nest inside each other (each is a loop of the generated code,
#: and CPython allows 20 nested loops and ``try`` blocks in one function).
MAX_RANGE_DEPTH = 16

_ATOM_OPEN = "\ue000\ue000"
_ATOM_CLOSE = "\ue001\ue001"
_SENTINEL = re.compile("[\ue000\ue001]")
_CONTROL_WORD = re.compile(r"\s*(else\s+if|if|else|end|range|with)(?![A-Za-z0-9_])")
_ASSIGNMENT = re.compile(r"\s*\$[A-Za-z0-9_]*\s*:?=(?!=)")
_OUTSIDE_OK = re.compile(r"""
    \s+
  | "(?:[^"\\\n]|\\.)*" | '(?:[^'\\\n]|\\.)*' | `[^`]*`
  | [0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?(?![A-Za-z0-9_.])
  | (?:and|or|not|in|true|false|null|nil)(?![A-Za-z0-9_])
  | ==|!=|<=|>=|[<>+\-*/%()\[\],]
  | \$\{[A-Za-z_][A-Za-z0-9_]*\}
""", re.X)
_OUTSIDE_BAD = re.compile(r"[A-Za-z0-9_.$]+|&&|\|\||\S")
_OUTSIDE_HINTS = {"=": "to compare, write '=='", "&&": "for a logical and, write 'and'",
                  "||": "for a logical or, write 'or'", "!": "for a logical not, write 'not'",
                  "|": "a pipe must be inside the braces: {{ .x | upper }}"}


def is_templated(text: str) -> bool:
    """Whether ``text`` must go through :func:`parse_template` (it holds ``{{`` or ``${``).

    ``$${`` counts too: the escape is undone by the parser, which yields plain text for it."""
    return "{{" in text or "${" in text


def parse_template(text: str) -> tuple[ast.Template | None, list[ast.ExprError]]:
    """Parse a templated string: ``(Template, [])``, or ``(None, errors)`` when it has any."""
    tree, errors = _parse_template(text)
    return tree, list(errors)


def parse_condition(text: str) -> tuple[ast.Condition | None, list[ast.ExprError]]:
    """Parse a condition: ``(Condition, [])``, or ``(None, errors)`` when it has any."""
    tree, errors = _parse_condition(text)
    return tree, list(errors)


# ---------------------------------------------------------------------------------------------
# Lark

_lark: Lark | None = None


def get_parser() -> Lark:
    """The Lark parser, made on first use from its stored tables (:mod:`._tables`) and kept for
    the process."""
    global _lark
    if _lark is None:
        _lark, _ = load_parser(Build(), {"NAME": keyword})
    return _lark


# ---------------------------------------------------------------------------------------------
# Templates

_Item = tuple[str, Seg, Any]


def _sentinel_error(text: str) -> ast.ExprError | None:
    m = _SENTINEL.search(text)
    if m is None:
        return None
    return ast.ExprError(code=SYNTAX, message=f"unexpected character U+{ord(m.group()):04X}",
                         start=m.start(), end=m.end())


@functools.lru_cache(maxsize=8192)
def _parse_template(text: str) -> tuple[ast.Template | None, tuple[ast.ExprError, ...]]:
    bad = _sentinel_error(text)
    if bad is not None:
        return None, (bad,)
    errors: list[ast.ExprError] = []
    ctx.errors = errors
    ctx.in_condition = False
    segs, scan_errors = scan(text)
    errors.extend(scan_errors)
    items: list[_Item] = []
    lark = get_parser()
    for seg in segs:
        if seg.kind == "text":
            items.append(("text", seg, ast.Text(text=seg.value, start=seg.start, end=seg.end)))
        elif seg.kind == "secret":
            ref = ast.SecretRef(name=seg.value, start=seg.start, end=seg.end)
            items.append(("expr", seg, ("expr", ref)))
        elif seg.kind == "comment":
            items.append(("comment", seg, None))
        elif not text[seg.inner_start:seg.inner_end].strip():
            errors.append(ast.ExprError(
                code=SYNTAX, message="empty action: expected an expression inside {{ }}",
                start=seg.start, end=seg.end))
        else:
            result: Any
            try:
                result = lark.parse(TextSlice(text, seg.inner_start, seg.inner_end),
                                    start="action")
            except LarkError as exc:
                errors.append(wrap_lark_error(exc, lark, text, seg.inner_start, seg.inner_end,
                                              (seg.inner_end, seg.end), "action"))
                result = _placeholder(text, seg)
            if result is not None:
                items.append((result[0], seg, result))
    parts = _nest(text, items, errors)
    if errors:
        return None, _sorted(errors)
    tree = ast.Template(parts=parts, single=_single(items), start=0, end=len(text))
    deep = _depth_error(tree)
    return (None, (deep,)) if deep is not None else (tree, ())


def _placeholder(text: str, seg: Seg) -> tuple[Any, ...] | None:
    """A stand-in for a broken action that opens or closes a block, so nesting stays right."""
    m = _CONTROL_WORD.match(text, seg.inner_start, seg.inner_end)
    if m is None:
        return None
    word = m.group(1)
    dummy = ast.Literal(value=None, start=seg.inner_start, end=seg.inner_end)
    if word.startswith("else") and word != "else":
        return ("elseif", dummy)
    return {"if": ("if", dummy), "else": ("else",), "end": ("end",),
            "range": ("range", dummy, None, None), "with": ("with", dummy)}[word]


def _single(items: list[_Item]) -> ast.Expr | None:
    """The lone expression when the whole string is one action with only whitespace around."""
    found: ast.Expr | None = None
    for kind, _, payload in items:
        if kind == "text":
            if payload.text.strip(" \t\r\n"):
                return None
        elif kind == "expr" and found is None:
            found = payload[1]
        else:
            return None
    return found


class _Block:
    """An open ``if``/``range``/``with`` while its body is being collected."""

    __slots__ = ("kind", "seg", "head", "key", "value", "branches", "body", "cur", "else_seg")

    def __init__(self, kind: str, seg: Seg, head: Any, key: Any = None, value: Any = None):
        self.kind = kind
        self.seg = seg  # the opening action
        self.head = head  # the condition (if) or the expression (range, with)
        self.key = key
        self.value = value
        self.branches: list[tuple[Any, tuple[Any, ...]]] = []  # if: closed branches
        self.body: tuple[Any, ...] | None = None  # range/with: the body, once `else` is seen
        self.cur: list[Any] = []  # the parts being collected
        self.else_seg: Seg | None = None  # the `else`, once seen

    def close(self, end: int) -> Any:
        start = self.seg.start
        rest = tuple(self.cur)
        if self.kind == "if":
            if self.else_seg is None:
                self.branches.append((self.head, rest))
            return ast.If(branches=tuple(self.branches),
                          else_body=rest if self.else_seg is not None else None,
                          start=start, end=end)
        body, else_body = (rest, None) if self.else_seg is None else (self.body or (), rest)
        if self.kind == "range":
            return ast.Range(expr=self.head, body=body, key_var=self.key, value_var=self.value,
                             else_body=else_body, start=start, end=end)
        return ast.With(expr=self.head, body=body, else_body=else_body, start=start, end=end)


def _nest(text: str, items: list[_Item], errors: list[ast.ExprError]) -> tuple[Any, ...]:
    """Nest the flat actions into blocks; report stray and missing ``else``/``end``."""
    root: list[Any] = []
    stack: list[_Block] = []

    def target() -> list[Any]:
        return stack[-1].cur if stack else root

    def stray(seg: Seg, message: str, help: str | None = None) -> None:
        errors.append(ast.ExprError(code=SYNTAX, message=message, start=seg.start,
                                    end=seg.end, help=help))

    for kind, seg, payload in items:
        if kind == "text":
            target().append(payload)
        elif kind == "expr":
            target().append(ast.Action(expr=payload[1], start=seg.start, end=seg.end))
        elif kind == "assign":
            _, name, expr, declare = payload
            target().append(ast.Assign(name=name, expr=expr, declare=declare, start=seg.start,
                                       end=seg.end))
        elif kind in ("if", "with"):
            stack.append(_Block(kind, seg, payload[1]))
        elif kind == "range":
            stack.append(_Block("range", seg, payload[1], payload[2], payload[3]))
        elif kind in ("else", "elseif"):
            word = "else" if kind == "else" else "else if"
            if not stack:
                stray(seg, f"unexpected '{word}': no open if/range/with")
                continue
            block = stack[-1]
            if block.else_seg is not None:
                stray(seg, f"unexpected '{word}': this '{block.kind}' already has an 'else'")
                continue
            if kind == "elseif":
                if block.kind != "if":
                    stray(seg, f"unexpected 'else if' inside '{block.kind}'",
                          help="'else if' continues an 'if'; in range/with write "
                               "{{ else }}{{ if ... }}...{{ end }}")
                    continue
                block.branches.append((block.head, tuple(block.cur)))
                block.head = payload[1]
                block.cur = []
                continue
            if block.kind == "if":
                block.branches.append((block.head, tuple(block.cur)))
            else:
                block.body = tuple(block.cur)
            block.cur = []
            block.else_seg = seg
        elif kind == "end":
            if not stack:
                stray(seg, "unexpected 'end': no open if/range/with")
                continue
            node = stack.pop().close(seg.end)
            target().append(node)
    for block in stack:
        errors.append(ast.ExprError(
            code=SYNTAX, message=f"unclosed '{block.kind}': missing {{{{ end }}}}",
            start=block.seg.start, end=block.seg.end,
            notes=((len(text), "the template ends here without {{ end }}"),)))
    return tuple(root)


_WRAPPERS = (ast.Template, ast.Condition, ast.Action, ast.Assign, ast.Text)


@functools.lru_cache(maxsize=None)
def _child_fields(cls: type) -> tuple[str, ...]:
    """The field names of an AST node class, but the lone action's expression (also under parts)."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.name != "single")


def _depth_error(tree: ast.Node) -> ast.ExprError | None:
    """An error at the first node nested deeper than ``MAX_DEPTH`` (or inside more than
    ``MAX_RANGE_DEPTH`` ranges), found without recursion (the parser itself does not recurse;
    the passes after it and the generated code do)."""
    stack: list[tuple[Any, int, int]] = [(tree, -1, 0)]
    while stack:
        obj, depth, ranges = stack.pop()
        if isinstance(obj, ast.Node):
            if not isinstance(obj, _WRAPPERS):
                depth += 1  # a lone operand is level 0, `str .a` level 1
            if isinstance(obj, ast.Range):
                ranges += 1
                if ranges > MAX_RANGE_DEPTH:
                    return ast.ExprError(
                        code=SYNTAX, start=obj.start, end=obj.start + 1,
                        message=f"range nested too deeply: more than {MAX_RANGE_DEPTH} ranges inside each other",
                        help="flatten the data first (e.g. in an earlier workload), or split the template")
            if depth > MAX_DEPTH:
                return ast.ExprError(
                    code=SYNTAX, start=obj.start, end=obj.start + 1,
                    message=f"expression nested too deeply: more than {MAX_DEPTH} levels",
                    help="split it: compute parts in vars or earlier workloads, or use a function "
                         "that takes a list (e.g. join) instead of a long chain")
            for name in _child_fields(type(obj)):
                stack.append((getattr(obj, name), depth, ranges))
        elif isinstance(obj, tuple):
            stack.extend((item, depth, ranges) for item in obj)
    return None


def _sorted(errors: list[ast.ExprError]) -> tuple[ast.ExprError, ...]:
    unique = list(dict.fromkeys(errors))
    unique.sort(key=lambda e: (e.start, e.end))
    return tuple(unique)


# ---------------------------------------------------------------------------------------------
# Conditions


@functools.lru_cache(maxsize=8192)
def _parse_condition(text: str) -> tuple[ast.Condition | None, tuple[ast.ExprError, ...]]:
    bad = _sentinel_error(text)
    if bad is not None:
        return None, (bad,)
    errors: list[ast.ExprError] = []
    ctx.errors = errors
    ctx.in_condition = True
    segs, scan_errors = scan(text, condition=True)
    if scan_errors:
        return None, _sorted(scan_errors)
    pieces: list[str] = []
    for seg in segs:
        if seg.kind == "text":
            _check_outside(text, seg, errors)
            pieces.append(seg.value)
        elif seg.kind == "comment":
            pieces.append(" " * (seg.end - seg.start))
        else:
            _check_atom(text, seg, errors)
            pieces.append(_ATOM_OPEN + " " * (seg.inner_start - seg.start - 2)
                          + text[seg.inner_start:seg.inner_end]
                          + " " * (seg.end - 2 - seg.inner_end) + _ATOM_CLOSE)
    if errors:
        return None, _sorted(errors)
    buf = "".join(pieces)
    if not buf.strip():
        return None, (ast.ExprError(code=SYNTAX, message="empty condition: expected an "
                                    "expression", start=0, end=len(text)),)
    lark = get_parser()
    expr: Any = None
    try:
        expr = lark.parse(buf, start="condition")
    except LarkError as exc:
        errors.append(wrap_lark_error(exc, lark, buf, 0, len(buf), (len(buf), len(buf)),
                                      "condition"))
    if errors:
        return None, _sorted(errors)
    tree = ast.Condition(expr=expr, start=0, end=len(text))
    deep = _depth_error(tree)
    return (None, (deep,)) if deep is not None else (tree, ())


def _check_outside(text: str, seg: Seg, errors: list[ast.ExprError]) -> None:
    """Text between atoms may hold only literals, operators and parentheses."""
    pos, end = seg.start, seg.end
    first = last = -1
    quote = False
    while pos < end:
        m = _OUTSIDE_OK.match(text, pos, end)
        if m is not None:
            pos = m.end()
            continue
        bad = _OUTSIDE_BAD.match(text, pos, end)
        assert bad is not None
        if first < 0:
            first = pos
            quote = text[pos] in "\"'`"
        last = pos = bad.end()
    if first < 0:
        return
    if quote:
        errors.append(ast.ExprError(
            code=SYNTAX, message="unterminated string literal", start=first, end=last,
            help="in a condition, {{ }} atoms are values: compare them directly, without "
                 "quotes around the braces, e.g. {{ .a }} == {{ .b }}"))
        return
    found = text[first:last]
    help = _OUTSIDE_HINTS.get(found.split()[0] if found.split() else found)
    if help is None:
        help = (f"found '{found}': put fields and functions inside the braces "
                f"(e.g. {{{{ gt .x 10 }}}}) and quote text: {{{{ .x }}}} == \"big\"")
    errors.append(ast.ExprError(
        code=SYNTAX,
        message="text outside {{ }} in a condition may hold only literals, operators and "
                "parentheses",
        start=first, end=last, help=help))


def _check_atom(text: str, seg: Seg, errors: list[ast.ExprError]) -> None:
    m = _CONTROL_WORD.match(text, seg.inner_start, seg.inner_end)
    if m is not None:
        word = m.group(1).split()[0]
        errors.append(ast.ExprError(
            code=SYNTAX, message=f"'{word}' cannot be used in a condition",
            start=seg.start, end=seg.end,
            help="a condition is one expression, e.g. \"{{ .a }} == 1 and {{ .b }}\"; "
                 "if/else/range/with/end belong in templates"))
    elif _ASSIGNMENT.match(text, seg.inner_start, seg.inner_end):
        errors.append(ast.ExprError(
            code=SYNTAX, message="a variable cannot be assigned in a condition",
            start=seg.start, end=seg.end,
            help="a condition is one expression; compute the value inside it instead"))

