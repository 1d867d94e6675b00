"""Cut a template or condition string into literal text, ``${NAME}`` references and actions.

Lark sees only what lies between one action's delimiters (or, for a condition, the whole
string with each atom's delimiters replaced); this scanner finds those delimiters the way Go's
lexer does: ``{{-``/``-}}`` trim markers need a space beside the dash, a ``}}`` inside a string
literal does not close the action, and neither does one that closes a map literal opened
inside the action (``{{ {"a": {"b": 1}} }}``).  Trimming and ``$${`` unescaping are applied here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gxo.compiler.expr.ast import ExprError

__all__ = ["Seg", "scan", "SYNTAX"]

SYNTAX = "template-syntax"

_WS = " \t\r\n"
_OPEN_TEMPLATE = re.compile(r"\{\{|\$\$\{|\$\{")
_OPEN_CONDITION = re.compile(r"\{\{")
_SECRET = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_INTERESTING = re.compile(r"[\"'`{}]")


@dataclass(slots=True)
class Seg:
    """One piece of the scanned string.

    ``kind`` is ``text`` (``value`` is the unescaped, trimmed text), ``secret`` (``value`` is
    the NAME of ``${NAME}``), ``action`` (the expression is ``inner_start:inner_end``) or
    ``comment``.  ``start:end`` is the piece's extent, delimiters included."""

    kind: str
    start: int
    end: int
    value: str = ""
    inner_start: int = 0
    inner_end: int = 0
    trim_left: bool = False
    trim_right: bool = False


def _find_close(text: str, pos: int) -> int:
    """The offset of the ``}}`` that closes the action whose content starts at ``pos``, or -1.

    String literals are skipped (an unterminated one counts as a plain character, so that Lark
    reports it); braces opened inside the action must be closed before a ``}}`` ends it, but if
    none does, the first ``}}`` seen inside such braces is taken (Lark then reports the ``{``)."""
    n = len(text)
    depth = 0
    fallback = -1
    search = _INTERESTING.search
    while True:
        m = search(text, pos)
        if m is None:
            return fallback
        p = m.start()
        c = text[p]
        if c == "}":
            double = p + 1 < n and text[p + 1] == "}"
            if depth == 0:
                if double:
                    return p
            else:
                if double and fallback < 0:
                    fallback = p
                depth -= 1
            pos = p + 1
        elif c == "{":
            depth += 1
            pos = p + 1
        elif c == "`":
            q = text.find("`", p + 1)
            pos = q + 1 if q >= 0 else p + 1
        else:  # a quote
            q = p + 1
            while q < n:
                d = text[q]
                if d == "\\":
                    q += 2
                    continue
                if d == c or d == "\n":
                    break
                q += 1
            pos = q + 1 if q < n and text[q] == c else p + 1


def _next_close(text: str, pos: int) -> int:
    """The end of the next ``}}`` at or after ``pos`` (to resume after a broken action), or -1."""
    q = text.find("}}", pos)
    return -1 if q < 0 else q + 2


class _TextRun:
    """Collects one run of literal text (with ``$${`` unescaped) and emits it as a segment."""

    __slots__ = ("start", "pieces")

    def __init__(self, start: int) -> None:
        self.start = start
        self.pieces: list[str] = []


def scan(text: str, *, condition: bool = False) -> tuple[list[Seg], list[ExprError]]:
    """Split ``text`` into segments.

    In a condition only ``{{ }}`` is special and no text is trimmed, so that the text segments
    and actions tile ``text`` exactly."""
    segs: list[Seg] = []
    errors: list[ExprError] = []
    n = len(text)
    opener = _OPEN_CONDITION if condition else _OPEN_TEMPLATE
    run = _TextRun(0)
    trim_next = False  # the previous action ended with `-}}`
    pos = 0

    def flush(end: int) -> None:
        nonlocal trim_next
        if run.pieces or run.start < end:
            value = "".join(run.pieces)
            start = run.start
            if trim_next and not condition:
                stripped = value.lstrip(_WS)
                start += len(value) - len(stripped)
                value = stripped
            if value:
                segs.append(Seg("text", start, end, value))
        trim_next = False

    def trim_previous() -> None:
        if segs and segs[-1].kind == "text":
            last = segs[-1]
            stripped = last.value.rstrip(_WS)
            last.end -= len(last.value) - len(stripped)
            last.value = stripped
            if not stripped:
                segs.pop()

    while pos < n:
        m = opener.search(text, pos)
        if m is None:
            run.pieces.append(text[pos:])
            pos = n
            break
        j = m.start()
        run.pieces.append(text[pos:j])
        token = m.group()
        if token == "$${":  # an escaped, literal `${`
            run.pieces.append("${")
            pos = m.end()
            continue
        if token == "${":
            sm = _SECRET.match(text, j)
            if sm is None:
                close = text.find("}", j + 2)
                end = close + 1 if 0 <= close < j + 80 and "\n" not in text[j:close] else j + 2
                errors.append(ExprError(
                    code=SYNTAX, message="invalid secret reference: expected ${NAME}",
                    start=j, end=end,
                    help="a secret name is letters, digits and '_', not starting with a digit; "
                         "write $${ for a literal '${'"))
                run.pieces.append("${")
                pos = j + 2
                continue
            flush(j)
            segs.append(Seg("secret", j, sm.end(), sm.group(1)))
            run = _TextRun(sm.end())
            pos = sm.end()
            continue
        # `{{`: an action or a comment.
        flush(j)
        k = j + 2
        trim_left = k + 1 < n and text[k] == "-" and text[k + 1] in _WS
        if trim_left:
            k += 1
            if not condition:  # a condition keeps its text: offsets must not move
                trim_previous()
        p = k
        while p < n and text[p] in _WS:
            p += 1
        if text.startswith("/*", p):
            e = text.find("*/", p + 2)
            if e < 0:
                errors.append(ExprError(
                    code=SYNTAX, message="unclosed comment: missing '*/'", start=p, end=p + 2,
                    notes=((n, "the text ends here"),)))
                run = _TextRun(n)
                pos = n
                break
            q = e + 2
            while q < n and text[q] in _WS:
                q += 1
            trim_right = False
            if text.startswith("-}}", q) and q > e + 2:
                trim_right = True
                q += 1
            if not text.startswith("}}", q):
                errors.append(ExprError(
                    code=SYNTAX, message="a comment must end with '*/}}'", start=e, end=e + 2,
                    help="write {{/* comment */}}; nothing may follow '*/' but '}}'"))
                resume = _next_close(text, q)
                pos = n if resume < 0 else resume
                run = _TextRun(pos)
                continue
            segs.append(Seg("comment", j, q + 2, trim_left=trim_left, trim_right=trim_right))
            trim_next = trim_right
            pos = q + 2
            run = _TextRun(pos)
            continue
        c = _find_close(text, k)
        if c < 0:
            errors.append(ExprError(
                code=SYNTAX, message="unclosed action: missing '}}'", start=j, end=j + 2,
                notes=((n, "the text ends here"),),
                help='to write a literal "{{", use {{ "{{" }}'))
            run = _TextRun(n)
            pos = n
            break
        inner_end = c
        trim_right = c - 2 >= k and text[c - 1] == "-" and text[c - 2] in _WS
        if trim_right:
            inner_end = c - 1
        segs.append(Seg("action", j, c + 2, inner_start=k, inner_end=inner_end,
                        trim_left=trim_left, trim_right=trim_right))
        trim_next = trim_right
        pos = c + 2
        run = _TextRun(pos)
    flush(n)
    return segs, errors
