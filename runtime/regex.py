"""Regular expressions that come from a playbook, run on RE2 (linear time in the text).

Every user-supplied pattern (``regex_match``, ``regex_replace``, ``data:parse`` format
``regex``, ``test:assert`` ``matches_regex``, ``gxo test --run``) is compiled here.  RE2
(google-re2) matches in time linear in the text, so no pattern can backtrack catastrophically
(``^(a+)+$`` against ``aaaa...!`` takes microseconds, not hours).  The price is the dialect:
no backreferences (``\\1`` in a pattern) and no lookaround (``(?=``, ``(?!``, ``(?<=``,
``(?<!``); ``\\Z`` is written ``\\z``; ``\\d``, ``\\w``, ``\\s`` and ``\\b`` are ASCII.  Named
groups are ``(?P<name>...)`` (or ``(?<name>...)``), as in Python.  docs/expressions.md
("Regular expressions") is the user's reference.

A pattern RE2 rejects raises ``RegexError`` whose message names the problem and the dialect;
the compiler reports it at the pattern's place when the pattern is a literal.
"""

from __future__ import annotations

from typing import Iterator

import re2
from re2 import _re2

_UNANCHORED = re2._Anchor.UNANCHORED
_NO_SPAN = (-1, -1)

#: the dialect in one line, for a message's help
DIALECT = ("patterns are RE2 syntax: no backreferences (\\1) or lookaround ((?=, (?!, (?<=, (?<!), "
           "\\z for the end of the text; see docs/expressions.md#regular-expressions")


class RegexError(ValueError):
    """A pattern RE2 cannot compile, or a replacement that refers to a missing group."""


def _options(*, capture: bool) -> re2.Options:
    opts = re2.Options()
    opts.log_errors = False  # RE2 would print the error to stderr too
    opts.never_capture = not capture
    return opts


_CAPTURE = _options(capture=True)
_TEST = _options(capture=False)


def _why(pattern: str, error: str | bytes) -> str:
    """RE2's error in the user's terms: what is unsupported and what to write instead."""
    if isinstance(error, bytes):
        error = error.decode("utf-8", "replace")
    if "invalid escape sequence: \\Z" in error:
        return f"{error} (RE2 writes \\z for the end of the text)"
    if "invalid escape sequence: \\" in error and error[-1:].isdigit():
        return f"{error} (RE2 has no backreferences)"
    if "invalid perl operator: (?=" in error or "invalid perl operator: (?!" in error \
            or "invalid perl operator: (?<" in error:
        return f"{error} (RE2 has no lookahead or lookbehind)"
    return error


class Regex:
    """A compiled pattern: ``test`` (found anywhere), ``finditer`` (the spans of every match
    and its groups) and ``sub``."""

    __slots__ = ("pattern", "groups", "groupindex", "_full", "_test", "_templates")

    def __init__(self, pattern: str, multiline: bool = False) -> None:
        source = ("(?m)" + pattern) if multiline else pattern
        encoded = source.encode("utf-8", "surrogatepass")
        full = _re2.RE2(encoded, _CAPTURE)
        if not full.ok():
            raise RegexError(_why(pattern, full.error()))
        self.pattern = pattern
        self._full = full
        self._test = _re2.RE2(encoded, _TEST)  # no groups: RE2 answers from its DFA alone
        self._templates: dict[str, list[str | int]] = {}  # replacement -> its pieces
        self.groups: int = full.NumberOfCapturingGroups()
        self.groupindex: dict[str, int] = {
            (k.decode() if isinstance(k, bytes) else k): v for k, v in full.NamedCapturingGroups()}

    def test(self, text: str) -> bool:
        """Whether the pattern matches somewhere in ``text``."""
        data = text.encode("utf-8", "surrogatepass")
        return self._test.Match(_UNANCHORED, data, 0, len(data))[0] != _NO_SPAN

    def finditer(self, text: str) -> Iterator[tuple[str, list]]:
        """Every non-overlapping match, left to right, as ``(text, spans)``: ``spans[i]`` is
        the (start, end) of group i in ``text`` (characters), ``(-1, -1)`` for a group that
        did not take part."""
        data = text.encode("utf-8", "surrogatepass")
        ascii_only = len(data) == len(text)
        view = memoryview(data)
        end = len(data)
        pos = 0
        match = self._full.Match
        # byte offset -> character offset, walked forward once over the whole text
        last_b = last_c = 0
        while True:
            spans = match(_UNANCHORED, view, pos, end)
            whole = spans[0]
            start, stop = whole
            if start < 0:
                return
            if ascii_only:
                yield text, spans
            else:
                # every offset of this match is at or after the previous match's end
                out = []
                for b0, b1 in spans:
                    if b0 < 0:
                        out.append(_NO_SPAN)
                    else:
                        c0 = last_c + _re2.BytesToCharLen(data, last_b, b0)
                        out.append((c0, c0 + _re2.BytesToCharLen(data, b0, b1)))
                last_c = out[0][1]
                last_b = stop
                yield text, out
            if stop == start:  # an empty match: step over one character
                if stop >= end:
                    return
                pos = stop + (1 if ascii_only else _re2.CharLenToBytes(data, stop, 1))
            else:
                pos = stop

    def sub(self, repl: str, text: str) -> str:
        """``text`` with every match replaced by ``repl``, whose ``\\1``/``\\g<name>`` name
        groups (as Python's ``re.sub``)."""
        pieces = self._templates.get(repl)
        if pieces is None:
            pieces = _template(repl, self.groups, self.groupindex)
            if len(self._templates) < 64:
                self._templates[repl] = pieces
        out: list[str] = []
        last = 0
        for _, spans in self.finditer(text):
            start, stop = spans[0]
            out.append(text[last:start])
            for piece in pieces:
                if type(piece) is str:
                    out.append(piece)
                else:
                    g0, g1 = spans[piece]
                    if g0 >= 0:
                        out.append(text[g0:g1])
            last = stop
        if not out:
            return text
        out.append(text[last:])
        return "".join(out)


_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


def _template(repl: str, groups: int, groupindex: dict[str, int]) -> list[str | int]:
    """A replacement string as literal pieces and group numbers, with the rules of Python's
    ``re.sub``: ``\\1``..``\\99`` and ``\\g<n>``/``\\g<name>`` name groups, ``\\0``/``\\ooo``
    are octal, ``\\n``-style escapes are characters, other escapes of ASCII letters are
    errors, any other escaped character stays as written."""
    if "\\" not in repl:
        return [repl]
    out: list[str | int] = []
    lit: list[str] = []
    i, n = 0, len(repl)

    def group(ref: int) -> None:
        if ref > groups:
            raise RegexError(f"invalid group reference {ref}: the pattern has {groups} group(s)")
        out.append("".join(lit))
        lit.clear()
        out.append(ref)

    while i < n:
        c = repl[i]
        if c != "\\":
            lit.append(c)
            i += 1
            continue
        if i + 1 >= n:
            raise RegexError("bad escape (end of pattern)")
        d = repl[i + 1]
        if d == "g":
            close = repl.find(">", i + 2)
            if i + 2 >= n or repl[i + 2] != "<" or close < 0:
                raise RegexError("missing group name in \\g<...>")
            name = repl[i + 3:close]
            if name.isdigit() and name.isascii():
                group(int(name))
            elif name in groupindex:
                group(groupindex[name])
            else:
                raise RegexError(f"unknown group name {name!r}")
            i = close + 1
        elif d == "0":  # \0, \0o, \0oo: an octal character
            j = k = i + 2
            while k < n and k < j + 2 and repl[k] in "01234567":
                k += 1
            lit.append(chr(int("0" + repl[j:k], 8)))
            i = k
        elif "1" <= d <= "9":
            j = i + 2
            if j < n and "0" <= repl[j] <= "9":
                if d <= "7" and repl[j] <= "7" and j + 1 < n and "0" <= repl[j + 1] <= "7":
                    value = int(repl[i + 1:j + 2], 8)  # \ooo: an octal character
                    if value > 0o377:
                        raise RegexError(f"octal escape value \\{repl[i + 1:j + 2]} outside of range 0-0o377")
                    lit.append(chr(value))
                    i = j + 2
                    continue
                group(int(repl[i + 1:j + 1]))
                i = j + 1
            else:
                group(int(d))
                i = j
        elif d in _ESCAPES:
            lit.append(_ESCAPES[d])
            i += 2
        elif d.isascii() and d.isalpha():
            raise RegexError(f"bad escape \\{d} in the replacement")
        else:
            lit.append("\\" + d)
            i += 2
    out.append("".join(lit))
    return [p for p in out if p != ""]


_CACHE: dict[tuple[str, bool], Regex] = {}
_CACHE_SIZE = 512


def compile(pattern: str, multiline: bool = False) -> Regex:  # noqa: A001 - as re.compile
    """The compiled ``pattern`` (cached); ``RegexError`` when RE2 rejects it."""
    key = (pattern, multiline)
    rx = _CACHE.get(key)
    if rx is None:
        rx = Regex(pattern, multiline)
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.clear()
        _CACHE[key] = rx
    return rx


def problem(pattern: str) -> str | None:
    """Why RE2 rejects ``pattern`` (for the compiler's check), or None when it compiles."""
    try:
        compile(pattern)
    except RegexError as exc:
        return str(exc)
    return None
