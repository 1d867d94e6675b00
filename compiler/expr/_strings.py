"""Decode the string literals of the expression language (Go escapes, single quotes, raw)."""

from __future__ import annotations

import re

__all__ = ["decode_string"]

_SIMPLE = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
           "\\": "\\", "'": "'", '"': '"'}
_ESCAPE = re.compile(r"\\(?:([abfnrtv\\'\"])|x([0-9A-Fa-f]{2})|u([0-9A-Fa-f]{4})"
                     r"|U([0-9A-Fa-f]{8})|([0-7]{3})|(.?))", re.S)


def decode_string(token: str) -> tuple[str, tuple[int, int, str] | None]:
    """The value of a string token and the first problem as ``(offset, length, message)``.

    Double- and single-quoted strings take Go's escapes (``\\n``, ``\\t``, ``\\xHH``,
    ``\\uHHHH``, ``\\UHHHHHHHH``, ``\\ooo``, ...; ``\\xHH`` and ``\\ooo`` give the code point, not
    a byte); backtick strings are raw.  On a bad escape the value is still returned, with the
    escape left as written."""
    quote = token[0]
    body = token[1:-1]
    if quote == "`" or "\\" not in body:
        return body, None
    problem: tuple[int, int, str] | None = None

    def one(m: re.Match[str]) -> str:
        nonlocal problem
        simple, hx, u4, u8, octal, other = m.groups()
        if simple is not None:
            return _SIMPLE[simple]
        code = int(hx or u4 or u8 or "0", 16) if octal is None else int(octal, 8)
        if other is not None:
            if problem is None:
                shown = other if other.isprintable() and other else repr(other)[1:-1]
                problem = (m.start() + 1, len(m.group()), f"invalid escape '\\{shown}' in "
                                                          "a string literal")
            return m.group()
        if octal is not None and code > 255:
            if problem is None:
                problem = (m.start() + 1, len(m.group()), "octal escape value > 255")
            return m.group()
        if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
            if problem is None:
                problem = (m.start() + 1, len(m.group()),
                           f"escape '{m.group()}' is not a valid Unicode code point")
            return m.group()
        return chr(code)

    return _ESCAPE.sub(one, body), problem
