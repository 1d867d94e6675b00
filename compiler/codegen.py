"""Expressions compiled ahead of time: the AST of ``gxo.compiler.expr.ast`` to ``plan_code.py``.

Each expression becomes a top-level function ``f_<digest>(s, c)`` (``s`` the scope, ``c`` the
:class:`gxo.runtime.exprlib.EvalContext`), named by the sha256 of its body: expressions with the
same generated code share one function, and a function's name and text do not depend on where
it stands in the playbook (``FUNCTIONS`` maps the manifest's expression ids, ``e0``, ``e1``...,
to them; a native shard holds functions only, so an edit rebuilds only the shard it touches).  The code is *direct* (design.md §7): a path
``.a.b`` is the subscript chain ``s["a"]["b"]`` inside ``try``; only a miss takes the ``except``
path, which re-walks the path with ``exprlib.lookup`` for the exact semantics and the message
(``no field 'b' in .a``).  Text is assembled with f-strings, comparisons against literals are
inlined behind an exact-type test, and ``and``/``or``/``default`` are Python's own short-circuit
operators (they have Go's semantics on JSON values).  Everything else calls a helper of
``gxo.runtime.exprlib``, imported by name (one global load per call).

The module skeleton comes from ``templates/plan_code.py.j2``; bodies are built here.  The output
is deterministic: no set or dict iteration reaches it, constants are written through
:func:`_const` (strings, numbers, booleans, null only), and the generated code never has a
constant ``x in (...)`` test (CPython would turn it into a frozenset constant, whose marshal
order depends on ``PYTHONHASHSEED``).
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import jinja2
from gxo.compiler.expr import ast
from gxo.compiler.expr.functions import FUNCTIONS as SIGNATURES
from gxo.compiler.records import record_shape
from gxo.runtime.limits import MAX_INT_BITS, MAX_TEXT_CHARS
from gxo.compiler.types import BOOL, FLOAT, INT, STR
from gxo.runtime import exprlib

__all__ = ["CodegenError", "CodegenItem", "Function", "functions_of", "render_function", "render_plan_code",
           "render_shard"]


class CodegenError(Exception):
    """The tree is not one the front end lets through (a bug in gxo, not in the playbook)."""


@dataclass(frozen=True)
class CodegenItem:
    id: str  # "e0", "e1", ...: the expression's id in the manifest
    tree: ast.Template | ast.Condition
    native: bool  # Template.single is set: return the native value
    as_text: bool  # the param's schema says string: convert to text form
    source: str  # "playbook.yaml:12:9 params.args[0] of 'build'" (for the comment)
    #: a data:map template: when its text is JSON-shaped, build the record directly (no text
    #: round trip, design.md section 10); other templates render as usual
    json_record: bool = False
    #: ``json_column`` of that template (its one field's name), or "": the function returns
    #: the field's value alone (``Expression.column``)
    column: str = ""
    #: computed from a secret (the taint map): the root names it reads that carry one; each
    #: template action reading a secret or one of them is passed to ``c.taint`` (tracked for
    #: redaction) before it is used.  None: not tainted.
    taint: frozenset[str] | None = None
    #: evaluated per stream record or per loop item: compiled into a native shard (design.md
    #: section 7; an expression evaluated once per task runs its bytecode)
    hot: bool = False
    #: the place, stable while other workloads change ("<workload> <where>"): where native
    #: shards are cut (gxo.compiler.native.split)
    site: str = ""


# ---------------------------------------------------------------------------------------------
# Constants


def _const(v: object) -> str:
    """Python source for a constant; only the value kinds of the expression language."""
    t = type(v)
    if v is None or t is bool:
        return repr(v)
    if t is int:
        return repr(v)
    if t is float:
        f: float = v  # type: ignore[assignment]
        if math.isnan(f):
            return 'float("nan")'
        if math.isinf(f):
            return 'float("inf")' if f > 0 else '-float("inf")'
        return repr(f)
    if t is str:
        return repr(v)
    if t is tuple:
        items = [_const(x) for x in v]  # type: ignore[attr-defined]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    raise CodegenError(f"not a constant the generated code may hold: {t.__name__}")


def _fstring_text(text: str) -> str:
    """``text`` escaped for the literal part of a double-quoted f-string."""
    out = []
    for ch in text:
        if ch == "{":
            out.append("{{")
        elif ch == "}":
            out.append("}}")
        elif ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ch.isprintable() and not (0xD800 <= ord(ch) <= 0xDFFF):
            out.append(ch)
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else
                       f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)


def _comment(text: str) -> str:
    """One comment line: control characters become spaces."""
    return "".join(ch if ch.isprintable() else " " for ch in text)


# ---------------------------------------------------------------------------------------------
# Expression compilation


class _V(NamedTuple):
    src: str  # a Python expression
    typ: str | None  # "str" "int" "float" "bool" "null" "list" "map" when known statically
    atomic: bool  # a local name or a constant: free to repeat, stable until reassigned


_HELPERS = {
    # exprlib name -> alias in plan_code.py
    "EvalError": "_EvalError",
    "LOOKUP_ERRORS": "_LOOKUP",
    "lookup": "_lookup",
    "text": "_text",
    "range_coll": "_range_coll",
    **{f"op_{o}": f"_{o}" for o in ("eq", "ne", "lt", "le", "gt", "ge", "in", "add", "sub",
                                        "mul", "div", "mod", "neg")},
}

_COMPARE = {"==": "eq", "!=": "ne", "<": "lt", "<=": "le", ">": "gt", ">=": "ge"}
_COMPARE_FUNCS = {v: k for k, v in _COMPARE.items()}
_ARITH = {"+": "add", "-": "sub", "*": "mul", "/": "div", "%": "mod"}
_SIG_TYPES = {STR: "str", INT: "int", FLOAT: "float", BOOL: "bool"}


# functions with a direct str-method form: "{x}" the subject, "{0}".. the literal arguments
_FAST_METHODS = {
    "upper": "{x}.upper()",
    "lower": "{x}.lower()",
    "trim": "{x}.strip()",
    "trimPrefix": "{x}.removeprefix({0})",
    "trimSuffix": "{x}.removesuffix({0})",
    "hasPrefix": "{x}.startswith({0})",
    "hasSuffix": "{x}.endswith({0})",
    "contains": "({0} in {x})",
    "replace": "{x}.replace({0}, {1})",
}


def _lit_type(v: object) -> str:
    if v is None:
        return "null"
    return {bool: "bool", int: "int", float: "float", str: "str"}[type(v)]


def _origin(origin: str, path: tuple[str | int, ...]) -> str:
    """How a path is named in messages: ``.a.b``, ``$x.a``, ``(...).a``."""
    out = origin
    for seg in path:
        out = f".{seg}" if out == "." else f"{out}.{seg}"
    return out


def _reassigned(parts: Sequence[ast.Part], into: set[str]) -> set[str]:
    for p in parts:
        if isinstance(p, ast.Assign) and not p.declare:
            into.add(p.name)
        elif isinstance(p, ast.If):
            for _, body in p.branches:
                _reassigned(body, into)
            _reassigned(p.else_body or (), into)
        elif isinstance(p, (ast.Range, ast.With)):
            _reassigned(p.body, into)
            _reassigned(p.else_body or (), into)
    return into


class _Fn:
    """The body of one generated function."""

    def __init__(self, imports: set[str]) -> None:
        self.lines: list[str] = []
        self.depth = 0
        self.ntemp = 0
        self.ndot = 0
        self.imports = imports  # exprlib names used (shared by the module)
        self.scopes: list[dict[str, str]] = [{}]  # $name -> Python local, innermost last
        self.locals: dict[str, str] = {}  # Python local -> $name
        self.dot = "s"
        self.reassigned: set[str] = set()
        self.cache: list[dict[tuple[str, tuple[str | int, ...]], str]] = [{}]  # dominating lookups
        self.paths: list[tuple[str, tuple[str | int, ...], str]] = []  # lookup p: base, path, origin
        self.taint: frozenset[str] | None = None  # CodegenItem.taint of the function being generated

    # -- output -------------------------------------------------------------------------------

    def emit(self, line: str) -> None:
        self.lines.append("    " * self.depth + line)

    def helper(self, name: str) -> str:
        self.imports.add(name)
        return _HELPERS.get(name) or "_" + name

    def temp(self) -> str:
        name = f"t{self.ntemp}"
        self.ntemp += 1
        return name

    def materialize(self, v: _V) -> _V:
        if v.atomic:
            return v
        t = self.temp()
        self.emit(f"{t} = {v.src}")
        return _V(t, v.typ, True)

    def stable(self, v: _V) -> _V:
        """A value that later statements cannot change (a copy of a reassigned variable)."""
        if v.atomic and self.locals.get(v.src) in self.reassigned:
            t = self.temp()
            self.emit(f"{t} = {v.src}")
            return _V(t, v.typ, True)
        return self.materialize(v)

    # -- variables ----------------------------------------------------------------------------

    def declare(self, name: str) -> str:
        local, n = f"v_{name}", 1
        while local in self.locals:  # a redeclaration (Go shadowing): a fresh local
            n += 1
            local = f"v_{name}__{n}"
        self.locals[local] = name
        self.scopes[-1][name] = local
        return local

    def resolve(self, name: str) -> str:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        raise CodegenError(f"variable '${name}' is not declared")

    # -- expressions --------------------------------------------------------------------------

    def args(self, nodes: Sequence[ast.Expr]) -> list[_V]:
        """Compile in order.  When a later argument emits statements, an earlier value is
        pinned in a temp assigned before them, so evaluation stays left to right."""
        out: list[_V] = []
        ends: list[int] = []
        for n in nodes:
            out.append(self.expr(n))
            ends.append(len(self.lines))
        for i in range(len(out) - 1, -1, -1):
            v = out[i]
            if ends[i] < len(self.lines) and not v.atomic:
                t = self.temp()
                self.lines.insert(ends[i], "    " * self.depth + f"{t} = {v.src}")
                out[i] = _V(t, v.typ, True)
        return out

    def expr(self, e: ast.Expr) -> _V:
        if isinstance(e, ast.Literal):
            return _V(_const(e.value), _lit_type(e.value), True)
        if isinstance(e, ast.Field):
            if not e.path:
                return _V(self.dot, None, True)
            return self.lookup(self.dot, e.path, ".")
        if isinstance(e, ast.Var):
            base = "s" if e.name == "" else self.resolve(e.name)
            if not e.path:
                return _V(base, None, True)
            return self.lookup(base, e.path, "$" + e.name)
        if isinstance(e, ast.Selector):
            target = self.materialize(self.expr(e.target))
            return self.lookup(target.src, e.path, "(...)")
        if isinstance(e, ast.ListLit):
            items = self.args(e.items)
            return _V("[" + ", ".join(i.src for i in items) + "]", "list", False)
        if isinstance(e, ast.MapLit):
            values = self.args([v for _, v in e.items])
            body = ", ".join(f"{_const(k)}: {v.src}" for (k, _), v in zip(e.items, values))
            return _V("{" + body + "}", "map", False)
        if isinstance(e, ast.SecretRef):
            return _V(f"c.secret({_const(e.name)})", "str", False)
        if isinstance(e, ast.UnaryOp):
            if e.op == "not":
                v = self.expr(e.operand)
                return _V(f"(not {v.src})", "bool", False)
            if e.op == "-":
                if isinstance(e.operand, ast.Literal) and type(e.operand.value) in (int, float):
                    return _V(_const(-e.operand.value), _lit_type(e.operand.value), True)
                v = self.expr(e.operand)
                return _V(f"{self.helper('op_neg')}({v.src})", None, False)
            raise CodegenError(f"unknown unary operator {e.op!r}")
        if isinstance(e, ast.BinOp):
            if e.op in ("and", "or"):
                return self.logic(e.op, [e.left, e.right])
            if e.op in _COMPARE:
                return self.compare(_COMPARE[e.op], e.left, e.right)
            if e.op in _ARITH:
                return self.arith(_ARITH[e.op], e.left, e.right)
            if e.op == "in":
                a, b = self.args([e.left, e.right])
                return _V(f"{self.helper('op_in')}({a.src}, {b.src})", "bool", False)
            raise CodegenError(f"unknown operator {e.op!r}")
        if isinstance(e, ast.Call):
            return self.call(e)
        raise CodegenError(f"unknown expression node {type(e).__name__}")

    def lookup(self, base: str, path: tuple[str | int, ...], origin: str) -> _V:
        """``base`` along ``path``: direct subscripts, one temp per segment (shared prefixes
        are reused while they dominate).  A miss raises KeyError/IndexError/TypeError, which
        the function's one ``except`` turns into the exact :class:`EvalError` by re-walking
        this path (lookup number ``p``) with ``exprlib.lookup``."""
        cacheable = self.locals.get(base) not in self.reassigned
        k = len(path)
        while k and not (cacheable and self.cached(base, path[:k])):
            k -= 1
        cur = self.cached(base, path[:k]) if k else base
        if k == len(path):
            return _V(cur, None, True)  # type: ignore[arg-type]
        start_origin = origin if not k else _origin(origin, path[:k])
        self.emit(f"p = {len(self.paths)}")
        self.paths.append((cur, tuple(path[k:]), start_origin))  # type: ignore[arg-type]
        for i in range(k, len(path)):
            seg = path[i]
            t = self.temp()
            if isinstance(seg, int):
                # a list is indexed directly; anything else (a map with key "0", a string:
                # an error) through the exact helper
                item = self.helper("item")
                where = _const(_origin(origin, path[:i]))
                self.emit(f"{t} = {cur}[{seg}] if type({cur}) is list else {item}({cur}, {seg}, {where})")
            else:
                self.emit(f"{t} = {cur}[{_const(seg)}]")
            if cacheable:
                self.cache[-1][(base, tuple(path[: i + 1]))] = t
            cur = t
        return _V(cur, None, True)

    def cached(self, base: str, prefix: tuple[str | int, ...]) -> str | None:
        for scope in reversed(self.cache):
            t = scope.get((base, prefix))
            if t is not None:
                return t
        return None

    def logic(self, op: str, nodes: Sequence[ast.Expr]) -> _V:
        """Go's and/or: an operand, short-circuit (Python's own operators on JSON values)."""
        acc = self.expr(nodes[0])
        for n in nodes[1:]:
            # the right side runs only when needed: inside an `if` when it emits statements
            t = self.temp()
            mark = len(self.lines)
            self.emit(f"{t} = {acc.src}")
            self.emit(f"if {t}:" if op == "and" else f"if not {t}:")
            self.depth += 1
            self.push()
            right = self.expr(n)
            self.pop()
            typ = acc.typ if acc.typ == right.typ else None
            if len(self.lines) == mark + 2:
                del self.lines[mark:]
                acc = _V(f"({acc.src} {op} {right.src})", typ, False)
            else:
                self.emit(f"{t} = {right.src}")
                acc = _V(t, typ, True)
            self.depth -= 1
        return acc

    def compare(self, name: str, left: ast.Expr, right: ast.Expr) -> _V:
        a, b = self.args([left, right])
        op = _COMPARE_FUNCS[name]
        # fast path: an exact str or int on one side, known statically or tested
        for x, y, flip in ((a, b, False), (b, a, True)):
            if y.typ in ("str", "int") and y.atomic:
                if x.typ == y.typ:
                    cond = None
                else:
                    x = self.materialize(x)
                    cond = f"type({x.src}) is {y.typ}"
                lhs, rhs = (y, x) if flip else (x, y)
                fast = f"{lhs.src} {op} {rhs.src}"
                if cond is None:
                    return _V(f"({fast})", "bool", False)
                slow = f"{self.helper('op_' + name)}({lhs.src}, {rhs.src})"
                return _V(f"({fast} if {cond} else {slow})", "bool", False)
        return _V(f"{self.helper('op_' + name)}({a.src}, {b.src})", "bool", False)

    def arith(self, name: str, left: ast.Expr, right: ast.Expr) -> _V:
        a, b = self.args([left, right])
        op = {"add": "+", "sub": "-", "mul": "*"}.get(name)
        if op is not None:
            if a.typ == b.typ == "int":
                if name == "mul":  # within the integer limit (a product adds the operands' bits)
                    a, b = self.materialize(a), self.materialize(b)
                    slow = f"{self.helper('op_mul')}({a.src}, {b.src})"
                    return _V(f"({a.src} * {b.src} if ({a.src}).bit_length() + ({b.src}).bit_length() <= "
                              f"{MAX_INT_BITS + 1} else {slow})", "int", False)
                return _V(f"({a.src} {op} {b.src})", a.typ, False)
            if name == "add" and a.typ == b.typ == "str":
                # within the text limit (the checking helper raises past it)
                a, b = self.materialize(a), self.materialize(b)
                slow = f"{self.helper('op_add')}({a.src}, {b.src})"
                return _V(f"({a.src} + {b.src} if len({a.src}) + len({b.src}) <= {MAX_TEXT_CHARS} else {slow})",
                          "str", False)
            if a.typ == "int" or b.typ == "int":  # one side unknown: test it is an int
                if a.typ == "int":
                    b = x = self.materialize(b)
                else:
                    a = x = self.materialize(a)
                if name == "mul":
                    a, b = self.materialize(a), self.materialize(b)
                    slow = f"{self.helper('op_mul')}({a.src}, {b.src})"
                    return _V(f"({a.src} * {b.src} if type({x.src}) is int and ({a.src}).bit_length() + "
                              f"({b.src}).bit_length() <= {MAX_INT_BITS + 1} else {slow})", None, False)
                slow = f"{self.helper('op_' + name)}({a.src}, {b.src})"
                return _V(f"({a.src} {op} {b.src} if type({x.src}) is int else {slow})", None, False)
        if name == "mod" and b.typ == "int" and b.atomic and b.src.lstrip("-").isdigit() and int(b.src) != 0:
            # `x % 2`: by a nonzero int literal, an int x needs no checks
            if a.typ == "int":
                return _V(f"({a.src} % {b.src})", "int", False)
            a = self.materialize(a)
            slow = f"{self.helper('op_mod')}({a.src}, {b.src})"
            return _V(f"({a.src} % {b.src} if type({a.src}) is int else {slow})", None, False)
        return _V(f"{self.helper('op_' + name)}({a.src}, {b.src})", None, False)

    def call(self, e: ast.Call) -> _V:
        name = e.name
        if name not in SIGNATURES or name not in exprlib.FUNCTIONS:
            raise CodegenError(f"unknown function {name!r}")
        sig = SIGNATURES[name]
        n = len(e.args)
        if n < sig.min_arity or (sig.max_arity is not None and n > sig.max_arity):
            raise CodegenError(f"{name!r} called with {n} argument(s)")
        if name in ("and", "or"):
            return self.logic(name, e.args)
        if name == "not":
            v = self.expr(e.args[0])
            return _V(f"(not {v.src})", "bool", False)
        if name in _COMPARE_FUNCS:
            return self.compare(name, e.args[0], e.args[1])
        if name == "default":
            d, v = self.args(e.args)
            return _V(f"({v.src} or {d.src})", None, False)
        if name == "str":
            v = self.expr(e.args[0])
            if v.typ == "str":
                return v
            return _V(f"{self.helper('text')}({v.src})", "str", False)
        if name in ("secret", "env") and isinstance(e.args[0], ast.Literal) \
                and type(e.args[0].value) is str:
            return _V(f"c.{name}({_const(e.args[0].value)})", "str", False)
        fast = _FAST_METHODS.get(name)
        if fast is not None and all(isinstance(a, ast.Literal) and type(a.value) is str
                                    for a in e.args[:-1]) \
                and not (name == "replace"
                         and len(e.args[1].value) > len(e.args[0].value)):  # type: ignore[attr-defined]
            # (a replace that grows the text: the helper, which checks the text limit)
            # a str method on the subject, behind an exact-type test; else the checking helper
            consts = [_const(a.value) for a in e.args[:-1]]  # type: ignore[union-attr]
            subj = self.expr(e.args[-1])
            if subj.typ != "str":
                subj = self.materialize(subj)
            call = fast.format(*consts, x=subj.src)
            if subj.typ == "str":
                return _V(call, _SIG_TYPES.get(sig.returns), False)
            slow = f"{self.helper('fn_' + name)}({', '.join([*consts, subj.src])})"
            return _V(f"({call} if type({subj.src}) is str else {slow})",
                      _SIG_TYPES.get(sig.returns), False)
        args = [v.src for v in self.args(e.args)]
        if name in exprlib.CONTEXT_FUNCTIONS:
            args.insert(0, "c")
        return _V(f"{self.helper('fn_' + name)}({', '.join(args)})",
                  _SIG_TYPES.get(sig.returns), False)

    # -- templates ----------------------------------------------------------------------------

    def to_text(self, v: _V) -> tuple[str, str]:
        """An f-string piece for a materialized value: ("str", src) when it is a str already,
        ("num", src) for an int or a float (an f-string writes them in their text form), else
        ("slot", src) whose value an f-string writes in its text form."""
        if not v.atomic:
            raise CodegenError(f"a template piece must be materialized: {v.src}")
        if v.typ == "str":
            return ("str", v.src)
        if v.typ in ("int", "float"):
            return ("num", v.src)
        self.helper("text")
        return ("slot", v.src)

    @staticmethod
    def fstring(pieces: list[tuple[str, str]]) -> str:
        """A str expression joining ("lit", text), ("str", src), ("num", src) and ("slot", src)
        pieces."""
        merged: list[tuple[str, str]] = []
        for k, t in pieces:
            if k == "lit" and merged and merged[-1][0] == "lit":
                merged[-1] = ("lit", merged[-1][1] + t)
            elif k != "lit" or t:
                # str and int are the common cases: written by the f-string itself, no call
                merged.append((k, f"{t} if type({t}) is str or type({t}) is int else {_HELPERS['text']}({t})"
                               if k == "slot" else t))
        if not merged:
            return '""'
        if len(merged) == 1:
            k, t = merged[0]
            return _const(t) if k == "lit" else t if k == "str" else f"f\"{{{t}}}\""
        body = "".join(_fstring_text(t) if k == "lit" else "{" + t + "}" for k, t in merged)
        return f'f"{body}"'

    def checked(self, pieces: list[tuple[str, str]]) -> tuple[str, str | None]:
        """``fstring(pieces)``, after statements that raise when its text would be longer than
        ``MAX_TEXT_CHARS`` (counted before it is built: lengths only; an int or a float counts
        nothing, it has at most 4,300 digits).  Returns the f-string and the local holding its
        length (None: nothing checked, at most one value that may be long)."""
        terms = []
        for k, t in pieces:
            if k == "str":
                terms.append(f"len({t})")
            elif k == "slot":
                # a str's or int's text is written by the f-string; anything else's is measured
                terms.append(f"(len({t}) if type({t}) is str else 0 if type({t}) is int "
                             f"else len({self.helper('text')}({t})))")
            # ("num": an int or a float, at most 4,300 digits)
        lit = sum(len(t) for k, t in pieces if k == "lit")
        if len(terms) < 2:
            # a literal, or one value with literal text around it: no longer than the value
            # and the playbook's text (a range counts each item's text itself)
            return self.fstring(pieces), None
        if lit:
            terms.append(str(lit))
        n = self.temp()
        self.emit(f"{n} = {' + '.join(terms)}")
        self.emit(f"if {n} > {MAX_TEXT_CHARS}:")
        self.emit(f"    raise {self.helper('text_too_long')}(\"template\", {n})")
        return self.fstring(pieces), n

    def assign(self, p: ast.Assign) -> None:
        v = self.expr(p.expr)
        local = self.declare(p.name) if p.declare else self.resolve(p.name)
        self.emit(f"{local} = {v.src}")

    def push(self) -> None:
        self.cache.append({})

    def pop(self) -> None:
        self.cache.pop()

    def block(self, parts: Sequence[ast.Part], dot: str | None = None) -> list[tuple[str, str]]:
        """Emit the statements of ``parts`` (in a new variable and lookup scope) and return the
        pieces of their text, in order."""
        saved = self.dot
        if dot is not None:
            self.dot = dot
        self.scopes.append({})
        self.push()
        pieces: list[tuple[str, str]] = []
        for p in parts:
            if isinstance(p, ast.Text):
                pieces.append(("lit", p.text))
            elif isinstance(p, ast.Action):
                if isinstance(p.expr, ast.Literal):
                    pieces.append(("lit", exprlib.text(p.expr.value)))
                    continue
                v = self.stable(self.expr(p.expr))
                if self.taint is not None and self.action_tainted(p.expr):
                    self.emit(f"c.taint({v.src})")
                pieces.append(self.to_text(v))
            elif isinstance(p, ast.Assign):
                self.assign(p)
            elif isinstance(p, ast.If):
                pieces.append(("str", self.if_(p)))
            elif isinstance(p, ast.Range):
                pieces.append(("str", self.range_(p)))
            elif isinstance(p, ast.With):
                pieces.append(("str", self.with_(p)))
            else:
                raise CodegenError(f"unknown template part {type(p).__name__}")
        self.pop()
        self.scopes.pop()
        self.dot = saved
        return pieces

    def action_tainted(self, e: ast.Node) -> bool:
        """Whether an action of a tainted template may carry a secret: it reads one, a tainted
        name, a variable, the whole scope, or anything inside ``range``/``with`` (where ``.``
        is an element of who knows what)."""
        assert self.taint is not None
        stack: list[object] = [e]
        while stack:
            cur = stack.pop()
            if isinstance(cur, tuple):
                stack.extend(cur)
                continue
            if not isinstance(cur, ast.Node):
                continue
            if isinstance(cur, (ast.SecretRef, ast.Var)) or (isinstance(cur, ast.Call) and cur.name == "secret"):
                return True
            if isinstance(cur, ast.Field) and (not cur.path or self.dot != "s" or str(cur.path[0]) in self.taint):
                return True
            stack.extend(getattr(cur, name) for name in cur.__dataclass_fields__)  # type: ignore[attr-defined]
        return False

    def branch(self, out: str, parts: Sequence[ast.Part] | None, dot: str | None = None) -> None:
        """``out = <text of parts>`` inside an already emitted ``if``/``else:`` line."""
        self.depth += 1
        pieces = self.block(parts or (), dot)
        self.emit(f"{out} = {self.checked(pieces)[0]}")
        self.depth -= 1

    def if_(self, p: ast.If) -> str:
        out = self.temp()
        depth = self.depth
        self.push()  # lookups of an `else if` condition run only when reached
        for i, (cond, body) in enumerate(p.branches):
            if i == 0:
                self.emit(f"if {self.expr(cond).src}:")
            else:
                # `elif` unless the condition needs statements first: then `else:` + `if`
                mark = len(self.lines)
                self.emit("else:")
                self.depth += 1
                c = self.expr(cond)
                if len(self.lines) == mark + 1:
                    del self.lines[mark:]
                    self.depth -= 1
                    self.emit(f"elif {c.src}:")
                else:
                    self.emit(f"if {c.src}:")
            self.branch(out, body)
        self.emit("else:")
        self.branch(out, p.else_body)
        self.pop()
        self.depth = depth
        return out

    def range_(self, p: ast.Range) -> str:
        coll = self.expr(p.expr)
        t = self.temp()
        out = self.temp()
        self.emit(f"{t} = {self.helper('range_coll')}({coll.src})")
        self.emit(f"if {t}:")
        self.depth += 1
        mark, outer = len(self.lines), self.depth  # where the text's accumulators go (a body with text)
        self.ndot += 1
        dot = f"d{self.ndot}"
        self.scopes.append({})
        if p.key_var is not None:
            key = self.declare(p.key_var)
            self.emit(f"for {key}, {dot} in ({t}.items() if type({t}) is dict else enumerate({t})):")
        else:
            self.emit(f"for {dot} in ({t}.values() if type({t}) is dict else {t}):")
        self.depth += 1
        body = len(self.lines)
        if p.value_var is not None:
            local = self.declare(p.value_var)
            self.emit(f"{local} = {dot}")
        src = self.checked(self.block(p.body, dot))[0]
        if src == '""':
            if len(self.lines) == body:
                self.emit("pass")  # an empty body
            self.depth -= 1
            self.emit(f'{out} = ""')  # no text (assignments only): nothing accumulates
        else:
            # the text so far is counted at each item (past the limit: the error), and its
            # pieces are joined by 4,096 (a list of many short strings costs more than the text)
            acc, part, size, piece = self.temp(), self.temp(), self.temp(), self.temp()
            self.lines[mark:mark] = ["    " * outer + line
                                     for line in (f"{acc} = []", f"{part} = []", f"{size} = 0")]
            self.emit(f"{piece} = {src}")
            self.emit(f"{size} += len({piece})")
            self.emit(f"if {size} > {MAX_TEXT_CHARS}:")
            self.emit(f"    raise {self.helper('text_too_long')}(\"template\", {size})")
            self.emit(f"{part}.append({piece})")
            self.emit(f"if len({part}) == 4096:")
            self.emit(f'    {acc}.append("".join({part}))')
            self.emit(f"    {part}.clear()")
            self.depth -= 1
            self.emit(f'{acc}.append("".join({part}))')
            self.emit(f'{out} = "".join({acc})')
        self.scopes.pop()
        self.depth -= 1
        self.emit("else:")
        self.branch(out, p.else_body)
        return out

    def with_(self, p: ast.With) -> str:
        v = self.expr(p.expr)
        out = self.temp()
        self.ndot += 1
        dot = f"d{self.ndot}"
        self.emit(f"{dot} = {v.src}")
        self.emit(f"if {dot}:")
        self.branch(out, p.body, dot)
        self.emit("else:")
        self.branch(out, p.else_body)
        return out

    # -- entry --------------------------------------------------------------------------------

    def json_record(self, tree: ast.Template, column: str = "") -> str | None:
        """Python source that builds the JSON object a template's text spells, with each action's
        value in place (native where an action is a whole JSON value, text inside a string), or
        None when the text is not JSON-shaped with actions only in value positions.  With
        ``column`` (``json_column``), the source of that one field's value alone."""
        shape = record_shape(tree)
        if shape is None:
            return None
        marker = re.compile("\u0001([0-9]+)\u0001")

        def build(v: object) -> str | None:
            if isinstance(v, dict):
                items = []
                for k, sub in v.items():
                    if marker.search(k):
                        return None  # a computed key: keep the text round trip
                    src = build(sub)
                    if src is None:
                        return None
                    items.append(f"{_const(k)}: {src}")
                return "{" + ", ".join(items) + "}"
            if isinstance(v, list):
                srcs = [build(x) for x in v]
                return None if any(x is None for x in srcs) else "[" + ", ".join(srcs) + "]"  # type: ignore[arg-type]
            if isinstance(v, str) and "\u0001" in v:
                whole = marker.fullmatch(v)
                if whole:
                    e = tree.parts[int(whole.group(1))].expr  # type: ignore[union-attr]
                    # `{{ x | toJson }}` spells the JSON of x in the text: the record holds x itself
                    while isinstance(e, ast.Call) and e.name == "toJson" and len(e.args) == 1:
                        e = e.args[0]
                    return self.materialize(self.expr(e)).src
                pieces: list[tuple[str, str]] = []
                pos = 0
                for m in marker.finditer(v):
                    pieces.append(("lit", v[pos:m.start()]))
                    val = self.materialize(self.expr(tree.parts[int(m.group(1))].expr))  # type: ignore[union-attr]
                    pieces.append(self.to_text(val))
                    pos = m.end()
                pieces.append(("lit", v[pos:]))
                return self.checked(pieces)[0]
            if v is None or isinstance(v, (bool, int, float, str)):
                return _const(v)
            return None

        if column:
            return build(shape[column])
        return build(shape)

    def function(self, item: CodegenItem) -> list[str]:
        tree = item.tree
        self.taint = item.taint
        self.depth = 1  # inside the function's try
        if isinstance(tree, ast.Condition):
            v = self.expr(tree.expr)
            self.emit(f"return {v.src}")
        elif isinstance(tree, ast.Template):
            self.reassigned = _reassigned(tree.parts, set())
            record = self.json_record(tree, item.column) if item.json_record else None
            if record is not None:
                self.emit(f"return {record}")
            elif item.native and not item.as_text and tree.single is not None:
                v = self.expr(tree.single)
                self.emit(f"return {v.src}")
            else:
                self.emit(f"return {self.checked(self.block(tree.parts))[0]}")
        else:
            raise CodegenError(f"not an expression tree: {type(tree).__name__}")
        if not self.paths:
            return [line[4:] for line in self.lines]
        # one handler: the lookup that failed is number p; re-walk it for the exact error
        # with one lookup the handler needs no counter: drop its (dead) store from the hot path
        body = self.lines if len(self.paths) > 1 else [ln for ln in self.lines if ln.strip() != "p = 0"]
        lines = ["try:", *body, f"except {self.helper('LOOKUP_ERRORS')}:"]
        lookup = self.helper("lookup")
        for i, (base, path, origin) in enumerate(self.paths):
            call = f"{lookup}({base}, {_const(path)}, {_const(origin)})"
            if len(self.paths) == 1:
                lines.append(f"    {call}")
            else:
                lines.append(f"    {'if' if i == 0 else 'elif'} p == {i}:")
                lines.append(f"        {call}")
        lines.append("    raise")
        return lines


# ---------------------------------------------------------------------------------------------
# Module


@functools.lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("gxo.compiler", "templates"),
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )


def render_function(item: CodegenItem, imports: set[str]) -> list[str]:
    """The body lines of the item's function (unindented); adds the helpers it uses."""
    if re.fullmatch(r"e[0-9]+", item.id) is None:
        raise CodegenError(f"bad expression id {item.id!r}")
    return _Fn(imports).function(item)


@dataclass(frozen=True)
class Function:
    """One generated function, named by the digest of its body: the same code under the same
    name in every plan, whatever the playbook's other expressions and their places."""

    name: str  # "f_" + 16 hex digits of sha256(body)
    body: tuple[str, ...]
    imports: tuple[str, ...]  # the exprlib helpers it uses, sorted
    ids: tuple[str, ...]  # the expressions it serves, in item order
    sources: tuple[str, ...]  # their places (comments in plan_code.py)
    hot: bool  # one of them is evaluated per record or per loop item


def functions_of(items: Sequence[CodegenItem]) -> list[Function]:
    """The distinct functions of ``items`` in order of first use.  Expressions whose generated
    bodies are equal share one function (their manifest entries keep their own places)."""
    ids = [i.id for i in items]
    if len(set(ids)) != len(ids):
        raise CodegenError("duplicate expression ids")
    order: list[str] = []
    found: dict[str, dict] = {}
    for item in items:
        used: set[str] = set()
        body = tuple(render_function(item, used))
        name = "f_" + hashlib.sha256("\n".join(body).encode("utf-8")).hexdigest()[:16]
        entry = found.get(name)
        if entry is None:
            found[name] = {"body": body, "imports": tuple(sorted(used)), "ids": [item.id],
                           "sources": [f"{item.id}: {_comment(item.source)}"], "hot": item.hot}
            order.append(name)
        elif entry["body"] != body:
            raise CodegenError(f"two function bodies share the name {name}")  # a digest collision
        else:
            entry["ids"].append(item.id)
            entry["sources"].append(f"{item.id}: {_comment(item.source)}")
            entry["hot"] = entry["hot"] or item.hot
    return [Function(name=n, body=found[n]["body"], imports=found[n]["imports"], ids=tuple(found[n]["ids"]),
                     sources=tuple(found[n]["sources"]), hot=found[n]["hot"]) for n in order]


def _render(functions: Sequence[Function], *, header: str, table: Sequence[tuple[str, str]],
            comments: bool, sites: bool) -> str:
    imports = sorted({name for fn in functions for name in fn.imports})
    header_lines = [_comment(line).rstrip() for line in header.splitlines()]
    return _environment().get_template("plan_code.py.j2").render(
        header_lines=header_lines,
        imports=[(name, _HELPERS.get(name) or "_" + name) for name in imports],
        functions=[{"name": fn.name, "comments": fn.sources if comments else (), "body": fn.body}
                   for fn in functions],
        table=table,
        sites=sites,
    )


def render_plan_code(items: Sequence[CodegenItem], *, header: str,
                     functions: Sequence[Function] | None = None) -> str:
    """``plan_code.py``: each distinct function once (in order of first use, a comment naming
    the places it serves) and ``FUNCTIONS``, expression id -> function, in item order.

    ``header`` is free text written as comment lines at the top (e.g. the playbook's name and
    the compiler version).  The same items and header always give the same text."""
    if functions is None:
        functions = functions_of(items)
    by_id = {i: fn.name for fn in functions for i in fn.ids}
    return _render(functions, header=header, table=[(i.id, by_id[i.id]) for i in items],
                   comments=True, sites=True)


SHARD_HEADER = "Native shard: its functions are named by the digest of their bodies."


def render_shard(functions: Sequence[Function]) -> str:
    """The source of one native shard: ``functions`` and ``FUNCTIONS``, name -> function.

    It holds nothing of the playbook but the functions themselves (no places, no digest of the
    playbook, no expression ids), so an edit elsewhere in the playbook leaves it unchanged and
    its compiled form is taken from the cache."""
    return _render(functions, header=SHARD_HEADER, table=[(fn.name, fn.name) for fn in functions],
                   comments=False, sites=False)
