"""Rewrite Lark's parse errors in the user's terms (``wrap_lark_error``).

Lark reports a terminal name and the set it expected (``RBRACE``, ``$END``...); a user wants
"expected a function name after '|'" under the token that is wrong.  The rules below look at
the offending token and the one before it (found by lexing the text again: this runs only on
the error path) and never show a terminal name.
"""

from __future__ import annotations

from copy import copy
from typing import Any

from lark import Lark, Token
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedEOF, UnexpectedToken
from lark.lexer import BasicLexer, LexerThread
from lark.utils import TextSlice

from gxo.compiler.expr.ast import ExprError

__all__ = ["wrap_lark_error", "describe"]

SYNTAX = "template-syntax"

# Terminals that need an expression after them.
_NEEDS_OPERAND = {
    "EQ", "NE", "LT", "LE", "GT", "GE", "IN", "PLUS", "MINUS", "STAR", "SLASH", "PERCENT",
    "AND", "OR", "NOT", "IF", "RANGE", "WITH", "DECLARE", "ASSIGN", "COMMA", "COLON",
    "LPAR", "LSQB", "ATOM_OPEN",
}
_COMPARISONS = {"EQ", "NE", "LT", "LE", "GT", "GE", "IN"}
# Terminals that end an operand: a value followed by one of _STARTS_OPERAND is two in a row.
_ENDS_OPERAND = {"FIELD", "VAR", "STRING", "NUMBER", "TRUE", "FALSE", "NULL", "NIL", "RPAR",
                 "RSQB", "RBRACE", "SELECTOR", "ATOM_CLOSE", "SECRET_REF", "NAME"}
_STARTS_OPERAND = {"FIELD", "VAR", "STRING", "NUMBER", "TRUE", "FALSE", "NULL", "NIL", "LPAR",
                   "LSQB", "LBRACE", "ATOM_OPEN", "SECRET_REF", "NAME"}
_CLOSERS = {"RPAR": "LPAR", "RSQB": "LSQB", "RBRACE": "LBRACE", "ATOM_CLOSE": "ATOM_OPEN"}
_OPENERS = {v: k for k, v in _CLOSERS.items()}
_SHOWN = {"ATOM_OPEN": "{{", "ATOM_CLOSE": "}}"}


def _shown(tok: Token) -> str:
    return _SHOWN.get(tok.type, str(tok))


def describe(tok: Token, where: str) -> str:
    """A token as a user reads it: ``field '.a'``, ``number 3``, ``'end'``, ``end of action``."""
    kind = tok.type
    value = str(tok)
    if kind == "$END":
        return f"end of {where}"
    if len(value) > 40:
        value = value[:37] + "..."
    if kind in ("FIELD", "SELECTOR"):
        return f"field '{value}'"
    if kind == "VAR":
        return f"variable '{value}'"
    if kind == "STRING":
        return f"string {value}"
    if kind == "NUMBER":
        return f"number {value}"
    if kind == "NAME":
        return f"name '{value}'"
    return f"'{_shown(tok)}'"


_basic_lexers: dict[int, BasicLexer] = {}


def _tokens_before(lark: Lark, text: str, start: int, end: int) -> list[Token]:
    """The tokens of ``text[start:end]`` (as far as they lex), for looking back from an error."""
    lexer = _basic_lexers.get(id(lark))
    if lexer is None:
        conf = copy(lark.lexer_conf)
        conf.skip_validation = True  # the grammar was validated (strict) when it was built
        lexer = _basic_lexers[id(lark)] = BasicLexer(conf)
    out: list[Token] = []
    try:
        thread = LexerThread.from_text(lexer, TextSlice(text, start, end))
        for tok in thread.lex(None):  # type: ignore[no-untyped-call]
            out.append(tok)
    except LarkError:
        pass
    return out


def _unclosed_opener(tokens: list[Token]) -> Token | None:
    stack: list[Token] = []
    for tok in tokens:
        if tok.type in _OPENERS:
            stack.append(tok)
        elif tok.type in _CLOSERS and stack and stack[-1].type == _CLOSERS[tok.type]:
            stack.pop()
    return stack[-1] if stack else None


def _last_operator_at_depth(tokens: list[Token]) -> str | None:
    """The latest `|` or comparison at the nesting level of the last token."""
    depth = 0
    for tok in reversed(tokens):
        if tok.type in _CLOSERS:
            depth += 1
        elif tok.type in _OPENERS:
            if depth == 0:
                return None
            depth -= 1
        elif depth == 0 and (tok.type == "PIPE" or tok.type in _COMPARISONS):
            return tok.type
        elif depth == 0 and tok.type in ("AND", "OR"):
            return None
    return None


def _err(message: str, span: tuple[int, int], help: str | None = None,
         notes: tuple[tuple[int | None, str], ...] = ()) -> ExprError:
    return ExprError(code=SYNTAX, message=message, start=span[0], end=span[1], help=help,
                     notes=notes)


def _span(tok: Token) -> tuple[int, int]:
    return (tok.start_pos or 0, tok.end_pos or 0)


def wrap_lark_error(exc: LarkError, lark: Lark, text: str, start: int, end: int,
                    close: tuple[int, int], where: str) -> ExprError:
    """The user-facing error for Lark's ``exc`` raised while parsing ``text[start:end]``.

    ``close`` is the span of the closing delimiter (``}}``), where an error at the end of the
    input points; ``where`` is ``action`` or ``condition``."""
    if isinstance(exc, UnexpectedCharacters):
        pos: int = getattr(exc, "pos_in_stream", 0)  # typed `None` in Lark's stubs
        return _bad_character(text, pos, end)
    if isinstance(exc, UnexpectedToken):
        tok: Any = exc.token
        expected = set(exc.expected)
    elif isinstance(exc, UnexpectedEOF):
        tok = Token("$END", "")
        expected = set(exc.expected)
    else:  # pragma: no cover - Lark raises only the three above while parsing
        return _err(f"invalid {where}", (start, end))
    at_end = tok.type == "$END"
    pos = close[0] if at_end else tok.start_pos
    span: tuple[int, int] = close if at_end else _span(tok)
    tokens = _tokens_before(lark, text, start, pos if not at_end else end)
    tokens = [t for t in tokens if t.end_pos is not None and t.end_pos <= pos]
    prev = tokens[-1] if tokens else None
    what = describe(tok, where)
    if at_end and close[0] == close[1] and prev is not None:
        span = _span(prev)  # no delimiter to point at: show the last token

    if prev is None:
        if at_end:
            return _err(f"empty {where}: expected an expression", span)
        return _err(f"unexpected {what}: expected an expression", span)
    ptype = prev.type
    if ptype == "PIPE" and tok.type == "PIPE" and prev.end_pos == tok.start_pos:
        return _err("unexpected '||'", (_span(prev)[0], _span(tok)[1]),
                    help="for a logical or, write 'or'")
    if ptype == "PIPE" and tok.type != "NAME":
        found = "" if at_end else f", found {what}"
        return _err(f"expected a function name after '|'{found}", span,
                    help="a pipe passes its value as the last argument of a function: "
                         "'.name | upper'")
    if ptype == "ATOM_OPEN" and tok.type == "ATOM_CLOSE":
        return _err("empty {{ }}: expected an expression inside the braces",
                    (_span(prev)[0], _span(tok)[1]))
    if len(expected) == 1:
        (only,) = expected
        need = {"VAR": "a variable", "DECLARE": "':='", "IN": "'in'", "NAME": "a function name",
                "RPAR": "')'", "RSQB": "']'", "RBRACE": "'}'", "COLON": "':'",
                "ATOM_CLOSE": "'}}'"}.get(only)
        if need is not None:
            found = "" if at_end else f", found {what}"
            return _err(f"expected {need} after '{_shown(prev)}'{found}", span)
    if ptype in _NEEDS_OPERAND:
        found = "" if at_end else f", found {what}"
        return _err(f"expected an expression after '{_shown(prev)}'{found}", span)
    opener = _unclosed_opener(tokens)
    if opener is not None and (at_end or tok.type in _CLOSERS):
        want = {"LPAR": ")", "LSQB": "]", "LBRACE": "}", "ATOM_OPEN": "}}"}[opener.type]
        here = "the action" if where == "action" else "the condition"
        if not at_end:
            here = f"'{_shown(tok)}'"
        return _err(f"unclosed '{_shown(opener)}': missing '{want}'", _span(opener),
                    notes=((span[0], f"{here} ends here without '{want}'" if at_end
                            else f"found {here} here"),))
    if tok.type in _COMPARISONS or tok.type in ("PLUS", "MINUS", "STAR", "SLASH", "PERCENT"):
        last = _last_operator_at_depth(tokens)
        if last == "PIPE":
            return _err(f"unexpected {what} after a pipe", span,
                        help="a pipe is the loosest operator: wrap it in parentheses to "
                             "use its result, e.g. '(.a | len) > 2'")
        if last in _COMPARISONS and tok.type in _COMPARISONS:
            return _err(f"unexpected {what}: comparisons cannot be chained", span,
                        help="combine comparisons with 'and': '.a < .b and .b < .c'")
    if tok.type == "ASSIGN":
        return _err("unexpected '='", span, help="to compare, write '=='; to assign a "
                                                  "variable, write '{{ $name = value }}'")
    if tok.type in ("IF", "ELSE", "END", "RANGE", "WITH"):
        return _err(f"unexpected {what}", span,
                    help=f"'{tok}' must begin its own action, as in '{{{{ {tok} ... }}}}'"
                    if tok.type not in ("ELSE", "END") else
                    f"'{tok}' must stand alone in its action: '{{{{ {tok} }}}}'")
    if ptype in _ENDS_OPERAND and tok.type in _STARTS_OPERAND:
        if ptype == "ATOM_CLOSE" or tok.type == "ATOM_OPEN":
            hint = "join the {{ }} atoms with an operator, e.g. '{{ .a }} and {{ .b }}'"
        else:
            hint = ("to pass values to a function, write its name first ('eq .a .b'); "
                    "to combine values, put an operator between them")
        return _err(f"unexpected {what}: two values in a row", span, help=hint)
    if at_end:
        if "DECLARE" in expected:
            return _err(f"expected ':=' after '{prev}'", span)
        return _err(f"unexpected end of {where} after '{_shown(prev)}'", span)
    return _err(f"unexpected {what}", span)


def _bad_character(text: str, pos: int, end: int) -> ExprError:
    ch = text[pos] if pos < len(text) else ""
    if ch in "\"'":
        stop = text.find("\n", pos)
        stop = end if stop < 0 or stop > end else stop
        return _err("unterminated string literal", (pos, max(stop, pos + 1)),
                    help=f"close the string with {ch} on the same line")
    if ch == "`":
        return _err("unterminated raw string literal", (pos, pos + 1),
                    help="close the string with a backtick")
    two = text[pos:pos + 2]
    if two == "&&":
        return _err("unexpected '&&'", (pos, pos + 2), help="for a logical and, write 'and'")
    if two == "||":
        return _err("unexpected '||'", (pos, pos + 2), help="for a logical or, write 'or'")
    if ch == "!":
        return _err("unexpected '!'", (pos, pos + 1), help="for a logical not, write 'not'")
    if ch == "$":
        return _err("invalid variable name after '$'", (pos, pos + 1),
                    help="a variable is '$' followed by letters, digits and '_'")
    if ch == "\ue000" or ch == "\ue001":
        return _err(f"unexpected character U+{ord(ch):04X}", (pos, pos + 1))
    shown = repr(ch)[1:-1] if not ch.isprintable() or ch.isspace() else ch
    help = None
    if ch.isalpha():  # a non-ASCII letter, e.g. in `.café`
        help = ("names in paths are ASCII letters, digits and '_'; for any other key use "
                "get: .m | get \"café\"")
    return _err(f"unexpected character '{shown}'", (pos, pos + 1), help=help)
