"""Phase ``typecheck``: walk every expression with the types of the names it can see.

Reports ``undefined-name``, ``unknown-field``, ``type-mismatch`` and ``secret-in-log``, and
records every root reference (``Ref``) so that the graph phase can infer state edges.  Types
come from the module schemas (``types.from_schema``); ``any`` defers checks to run time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gxo.compiler import types as T
from gxo.compiler.diagnostics import Diagnostics, Span, did_you_mean
from gxo.compiler.expr import ast
from gxo.compiler.expr.functions import FUNCTIONS
from gxo.compiler.model import ExprSite
from gxo.runtime.exprlib import printf_format_problem
from gxo.runtime.limits import MAX_FORMAT_WIDTH

_COMPARE = {"==", "!=", "<", "<=", ">", ">="}
_ARITH = {"-", "*", "/", "%"}


@dataclass(frozen=True, slots=True)
class Ref:
    """A reference from an expression to a root name of the state."""

    name: str  # first path segment
    path: tuple[str | int, ...]  # the whole path
    span: Span
    kind: str  # register, var, gxo, loop, record, step; root: the whole state (name "", path ())


@dataclass
class Scope:
    """What the top of an expression's scope holds."""

    names: dict[str, tuple[T.Type, str]]  # name -> (type, kind)
    open: bool = False  # unknown top-level names are allowed (record fields of unknown shape)
    record: T.Type | None = None  # per-record sites: the record's type


@dataclass
class SiteResult:
    type: T.Type
    refs: list[Ref] = field(default_factory=list)
    secrets: list[tuple[str, Span]] = field(default_factory=list)


class Checker:
    def __init__(self, site: ExprSite, scope: Scope, diags: Diagnostics) -> None:
        self.site = site
        self.scope = scope
        self.diags = diags
        self.result = SiteResult(T.ANY)

    def span(self, node: ast.Node, start: int | None = None, end: int | None = None) -> Span:
        s = node.start if start is None else start
        e = node.end if end is None else end
        return self.site.node.sub_span(s, max(e, s + 1))

    # -- entry -----------------------------------------------------------------------------

    def check(self) -> SiteResult:
        tree = self.site.tree
        if isinstance(tree, ast.Condition):
            self.result.type = self.expr(tree.expr, None, {})
        elif isinstance(tree, ast.Template):
            vars_: dict[str, T.Type] = {}
            if tree.single is not None:
                self.result.type = self.expr(tree.single, None, vars_)
            else:
                self.parts(tree.parts, None, vars_)
                self.result.type = T.STR
        return self.result

    def parts(self, parts: tuple, dot: T.Type | None, vars_: dict[str, T.Type]) -> None:
        for p in parts:
            if isinstance(p, ast.Action):
                self.expr(p.expr, dot, vars_)
            elif isinstance(p, ast.Assign):
                t = self.expr(p.expr, dot, vars_)
                if not p.declare and p.name not in vars_:
                    self.diags.add("undefined-name", f"variable '${p.name}' is assigned before it is declared",
                                   self.span(p), help=f"declare it first: {{{{ ${p.name} := ... }}}}")
                vars_[p.name] = t
            elif isinstance(p, ast.If):
                for cond, body in p.branches:
                    self.expr(cond, dot, vars_)
                    self.parts(body, dot, dict(vars_))
                if p.else_body:
                    self.parts(p.else_body, dot, dict(vars_))
            elif isinstance(p, ast.Range):
                t = self.expr(p.expr, dot, vars_)
                key_t, elem = self.iter_types(t, p.expr)
                inner = dict(vars_)
                if p.value_var:
                    inner[p.value_var] = elem
                if p.key_var:
                    inner[p.key_var] = key_t
                self.parts(p.body, elem, inner)
                if p.else_body:
                    self.parts(p.else_body, dot, dict(vars_))
            elif isinstance(p, ast.With):
                t = self.expr(p.expr, dot, vars_)
                self.parts(p.body, t, dict(vars_))
                if p.else_body:
                    self.parts(p.else_body, dot, dict(vars_))

    def iter_types(self, t: T.Type, node: ast.Node) -> tuple[T.Type, T.Type]:
        if isinstance(t, T.ListT):
            return T.INT, t.elem
        if isinstance(t, T.DictT):
            return T.STR, t.value
        if isinstance(t, T.MapT):
            return T.STR, T.union(v for _, v in t.fields) if t.fields and not t.open else T.ANY
        if t == T.ANY or isinstance(t, T.UnionT):
            return T.ANY, T.ANY
        if t == T.INT:
            return T.INT, T.INT  # range over an integer counts, as in Go 1.22
        self.diags.add("type-mismatch", f"cannot range over a value of type {t}", self.span(node),
                       help="range takes a list or a mapping")
        return T.ANY, T.ANY

    # -- expressions ------------------------------------------------------------------------

    def expr(self, e: ast.Node, dot: T.Type | None, vars_: dict[str, T.Type]) -> T.Type:
        if isinstance(e, ast.Literal):
            return T.of_value(e.value)
        if isinstance(e, ast.Field):
            if dot is None:
                return self.root_path(e, e.path, e.segment_starts)
            return self.walk(dot, e.path, e, e.segment_starts, ".")
        if isinstance(e, ast.Var):
            if e.name == "":
                return self.root_path(e, e.path, e.segment_starts)
            if e.name not in vars_:
                self.diags.add("undefined-name", f"variable '${e.name}' is not defined",
                               self.span(e, e.start, e.start + 1 + len(e.name)),
                               help=did_you_mean(e.name, vars_) or f"declare it: {{{{ ${e.name} := ... }}}}")
                return T.ANY
            return self.walk(vars_[e.name], e.path, e, e.segment_starts, f"${e.name}")
        if isinstance(e, ast.Selector):
            base = self.expr(e.target, dot, vars_)
            return self.walk(base, e.path, e, e.segment_starts, "(...)")
        if isinstance(e, ast.ListLit):
            return T.ListT(T.union(self.expr(i, dot, vars_) for i in e.items) if e.items else T.ANY)
        if isinstance(e, ast.MapLit):
            return T.MapT(tuple((k, self.expr(v, dot, vars_)) for k, v in e.items))
        if isinstance(e, ast.SecretRef):
            self.result.secrets.append((e.name, self.span(e)))
            return T.STR
        if isinstance(e, ast.UnaryOp):
            t = self.expr(e.operand, dot, vars_)
            if e.op == "not":
                return T.BOOL
            if not T.assignable(t, T.FLOAT):
                self.mismatch(e, f"cannot negate a value of type {t}")
            return t if t in T.NUMERIC else T.ANY
        if isinstance(e, ast.BinOp):
            return self.binop(e, dot, vars_)
        if isinstance(e, ast.Call):
            return self.call(e, dot, vars_)
        return T.ANY

    def mismatch(self, node: ast.Node, msg: str, help: str | None = None) -> None:
        self.diags.add("type-mismatch", msg, self.span(node), help=help)

    def binop(self, e: ast.BinOp, dot: T.Type | None, vars_: dict[str, T.Type]) -> T.Type:
        lt = self.expr(e.left, dot, vars_)
        rt = self.expr(e.right, dot, vars_)
        op = e.op
        if op in _COMPARE:
            if not T.comparable(lt, rt):
                hint = None
                if T.STR in T.options(lt) or T.STR in T.options(rt):
                    hint = "convert one side: (int .x) or (str .x)"
                self.mismatch(e, f"comparing {lt} with {rt}: '{op}' between these types is never meaningful", hint)
            elif op not in ("==", "!=") and not (_orderable(lt) and _orderable(rt)):
                self.mismatch(e, f"'{op}' needs numbers or strings, got {lt} and {rt}")
            return T.BOOL
        if op == "in":
            if not any(isinstance(o, (T.ListT, T.MapT, T.DictT)) or o in (T.STR, T.ANY) for o in T.options(rt)):
                self.mismatch(e, f"'in' needs a list, a mapping or a string on its right, got {rt}")
            return T.BOOL
        if op in ("and", "or"):
            return T.union((lt, rt))
        if op == "+":
            if T.is_any(lt) or T.is_any(rt):
                return lt if T.is_any(rt) else rt
            if T.assignable(lt, T.FLOAT) and T.assignable(rt, T.FLOAT):
                return T.FLOAT if T.FLOAT in (lt, rt) else (T.INT if lt == rt == T.INT else T.union((lt, rt)))
            if T.assignable(lt, T.STR) and T.assignable(rt, T.STR):
                return T.STR
            if isinstance(lt, T.ListT) and isinstance(rt, T.ListT):
                return T.ListT(T.union((lt.elem, rt.elem)))
            self.mismatch(e, f"cannot add {lt} and {rt}", "convert with (int .x), (float .x) or (str .x)")
            return T.ANY
        if op in _ARITH:
            if not (T.assignable(lt, T.FLOAT) and T.assignable(rt, T.FLOAT)):
                self.mismatch(e, f"'{op}' needs numbers, got {lt} and {rt}", "convert with (int .x) or (float .x)")
                return T.ANY
            if op == "/" or T.FLOAT in (lt, rt):
                return T.FLOAT if op == "/" else T.union((lt, rt))
            return T.INT if lt == rt == T.INT else T.ANY
        return T.ANY

    def call(self, e: ast.Call, dot: T.Type | None, vars_: dict[str, T.Type]) -> T.Type:
        args = [self.expr(a, dot, vars_) for a in e.args]
        sig = FUNCTIONS.get(e.name)
        if sig is None:
            return T.ANY  # reported by the parser (unknown-function)
        if e.name == "secret" and e.args and isinstance(e.args[0], ast.Literal):
            self.result.secrets.append((str(e.args[0].value), self.span(e)))
        elif e.name == "secret":
            self.result.secrets.append(("<dynamic>", self.span(e)))
        elif e.name == "printf" and e.args and isinstance(e.args[0], ast.Literal) \
                and isinstance(e.args[0].value, str):
            problem = printf_format_problem(e.args[0].value)
            if problem is not None:
                self.diags.add("expr-limit", problem, self.span(e.args[0]),
                               help=f"a printf width or precision is at most {MAX_FORMAT_WIDTH:,}; "
                                    "pad or cut the text another way")
        elif e.name in ("regex_match", "regex_replace"):
            self.regex_literals(e)
        n = len(args)
        lo = sig.min_args if sig.min_args is not None else len(sig.params)
        hi = None if sig.variadic is not None else len(sig.params)
        name_span = self.span(e, e.start, e.name_end or e.start + len(e.name))
        if n < lo or (hi is not None and n > hi):
            want = f"{lo}" if hi == lo else (f"at least {lo}" if hi is None else f"{lo} to {hi}")
            self.diags.add("type-mismatch", f"'{e.name}' takes {want} argument(s), got {n}", name_span,
                           help=sig.example or None)
            return sig.returns
        for i, (a, t) in enumerate(zip(e.args, args)):
            want_t = sig.params[i] if i < len(sig.params) else sig.variadic
            if want_t is not None and not T.assignable(t, want_t):
                self.mismatch(a, f"argument {i + 1} of '{e.name}' must be {want_t}, got {t}",
                              sig.example or None)
        return _refine_return(e.name, sig.returns, args)

    def regex_literals(self, e: ast.Call) -> None:
        """A literal pattern (and replacement) that RE2 rejects fails here, not at run time."""
        from gxo.runtime import regex

        pat = e.args[0] if e.args else None
        if not (isinstance(pat, ast.Literal) and type(pat.value) is str):
            return
        try:
            rx = regex.compile(pat.value)
            repl = e.args[1] if e.name == "regex_replace" and len(e.args) > 1 else None
            if isinstance(repl, ast.Literal) and type(repl.value) is str:
                try:
                    regex._template(repl.value, rx.groups, rx.groupindex)
                except regex.RegexError as exc:
                    self.diags.add("invalid-regex", f"invalid replacement for '{e.name}': {exc}",
                                   self.span(repl), help="\\1 or \\g<name> names a group of the pattern")
        except regex.RegexError as exc:
            self.diags.add("invalid-regex", f"invalid regular expression for '{e.name}': {exc}",
                           self.span(pat), help=regex.DIALECT)

    # -- paths --------------------------------------------------------------------------------

    def root_path(self, e: ast.Node, path: tuple, starts: tuple) -> T.Type:
        if not path:
            if self.scope.record is not None:
                return self.scope.record
            # the whole state (``{{ . }}``): it reads every register and var, whole
            self.result.refs.append(Ref("", (), self.span(e), "root"))
            return T.MapT(tuple((k, v[0]) for k, v in self.scope.names.items()), open=self.scope.open)
        first = path[0]
        first_start = starts[0] if starts else e.start
        first_span = self.span(e, first_start, first_start + len(str(first)))
        entry = self.scope.names.get(str(first))
        if entry is None:
            if self.scope.open:
                self.result.refs.append(Ref(str(first), path, first_span, "record"))
                return T.ANY
            rec = self.scope.record
            if isinstance(rec, T.MapT):
                self.diags.add(
                    "unknown-field",
                    f"the input records have no field '{first}'",
                    first_span,
                    help=did_you_mean(str(first), rec.names())
                    or (f"their fields are: {', '.join(rec.names())}" if rec.names() else "they have no fields"),
                )
                return T.ANY
            self.diags.add(
                "undefined-name",
                f"'{first}' is not defined",
                first_span,
                help=did_you_mean(str(first), self.scope.names)
                or "names are registers, vars, _gxo, or the loop variable",
            )
            return T.ANY
        t, kind = entry
        self.result.refs.append(Ref(str(first), path, self.span(e), kind))
        return self.walk(t, path[1:], e, starts[1:], f".{first}")

    def walk(self, t: T.Type, path: tuple, e: ast.Node, starts: tuple, prefix: str) -> T.Type:
        for i, seg in enumerate(path):
            s = starts[i] if i < len(starts) else e.start
            seg_span = self.span(e, s, s + len(str(seg)))
            nxt = _step(t, seg)
            if nxt is None:
                if isinstance(t, T.MapT):
                    legacy = "_gxo.tasks was renamed: write ._gxo.workloads.<name>.status" \
                        if prefix == "._gxo" and seg == "tasks" else None
                    self.diags.add("unknown-field", f"{prefix} has no field '{seg}'", seg_span,
                                   help=legacy or did_you_mean(str(seg), t.names())
                                   or (f"its fields are: {', '.join(t.names())}" if t.names() else None))
                elif isinstance(t, T.ListT):
                    self.diags.add("unknown-field", f"{prefix} is a list: index it with a number, not '{seg}'",
                                   seg_span, help=f"for example {prefix}.0")
                else:
                    self.diags.add("unknown-field", f"{prefix} is {t} and has no field '{seg}'", seg_span)
                return T.ANY
            t = nxt
            prefix = f"{prefix}.{seg}"
        return t


def _step(t: T.Type, seg: str | int) -> T.Type | None:
    if t == T.ANY:
        return T.ANY
    if isinstance(t, T.UnionT):
        found = [x for x in (_step(o, seg) for o in t.options if o != T.NULL) if x is not None]
        return T.union(found) if found else None
    if isinstance(t, T.MapT):
        f = t.field(str(seg))
        if f is not None:
            return f
        return T.ANY if t.open else None
    if isinstance(t, T.DictT):
        return t.value
    if isinstance(t, T.ListT):
        return t.elem if isinstance(seg, int) else None
    return None


def _orderable(t: T.Type) -> bool:
    return all(o in (T.INT, T.FLOAT, T.STR, T.ANY, T.NULL) for o in T.options(t))


def _refine_return(name: str, ret: T.Type, args: list[T.Type]) -> T.Type:
    """Return types that depend on the arguments (the piped value is the last one)."""
    if not args:
        return ret
    last = args[-1]
    if name in ("first", "last") and isinstance(last, T.ListT):
        return last.elem
    if name == "slice" and isinstance(last, (T.ListT,)):
        return last
    if name in ("default", "coalesce"):
        return T.union(a for a in args if a != T.NULL) if args else ret
    if name == "index" and isinstance(args[0], T.ListT):
        return args[0].elem
    return ret


def check_site(site: ExprSite, scope: Scope, diags: Diagnostics) -> SiteResult:
    if site.tree is None:
        return SiteResult(T.ANY)
    return Checker(site, scope, diags).check()
