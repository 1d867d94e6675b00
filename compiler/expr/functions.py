"""Signatures of the expression language's functions (the table the parser and checker share).

Every function takes its arguments Go-style (``f a b``); in a pipe the piped value is the
*last* argument, so ``.s | replace "a" "b"`` is ``replace "a" "b" .s``.  The parser refuses a
name that is not in :data:`FUNCTIONS` (``unknown-function``, with a did-you-mean from
:func:`suggest`); the type checker checks arity and argument types from the same table.

``docs/expressions.md`` lists every function; a test keeps the two in sync.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from gxo.compiler.types import ANY, BOOL, FLOAT, INT, STR, DictT, ListT, Type, union

__all__ = ["FuncSig", "FUNCTIONS", "UNPROVIDED", "suggest", "markdown_table"]


@dataclass(frozen=True, slots=True)
class FuncSig:
    """One function: its positional parameter types, result type and documentation.

    ``variadic`` is the type of any further arguments (``None``: no more are accepted);
    ``min_args`` is the fewest arguments accepted (``None``: ``len(params)``)."""

    name: str
    params: tuple[Type, ...]
    returns: Type
    variadic: Type | None = None
    min_args: int | None = None
    doc: str = ""
    example: str = ""

    @property
    def min_arity(self) -> int:
        """The fewest arguments a call may pass."""
        return len(self.params) if self.min_args is None else self.min_args

    @property
    def max_arity(self) -> int | None:
        """The most arguments a call may pass (``None``: any number)."""
        return None if self.variadic is not None else len(self.params)

    def signature(self) -> str:
        """A one-line usage such as ``replace OLD:str NEW:str S:str -> str``."""
        parts = [self.name]
        for i, t in enumerate(self.params):
            optional = i >= self.min_arity
            parts.append(f"[{t}]" if optional else str(t))
        if self.variadic is not None:
            parts.append(f"{self.variadic}...")
        return " ".join(parts) + f" -> {self.returns}"


_LIST = ListT(ANY)
_MAP = DictT(ANY)
_STR_OR_LIST = union([STR, _LIST])
_KEY = union([STR, INT])


def _sigs(*sigs: FuncSig) -> dict[str, FuncSig]:
    return {s.name: s for s in sigs}


FUNCTIONS: dict[str, FuncSig] = _sigs(
    # --- lookups --------------------------------------------------------------------------
    FuncSig("env", (STR,), STR,
            doc="The environment variable NAME of the gxo process, or \"\" when it is unset.",
            example='{{ env "HOME" }}'),
    FuncSig("secret", (STR,), STR,
            doc="The secret NAME from the secrets provider (tainted: redacted wherever GXO "
                "writes it); an error when absent. Same as `${NAME}` in text.",
            example='{{ secret "DB_PASSWORD" }}'),
    FuncSig("get", (STR, _MAP), ANY,
            doc="The value of KEY in map M, or null when M has no such key (never an error).",
            example='{{ .headers | get "Content-Type" }}'),
    FuncSig("index", (ANY, _KEY), ANY, variadic=_KEY,
            doc="Go's index: `index X K1 K2` is X[K1][K2] (list positions or map keys); "
                "the collection comes first. A missing key or position is an error.",
            example="{{ index .rows 0 }}"),
    FuncSig("keys", (_MAP,), ListT(STR),
            doc="The keys of map M in insertion order.",
            example="{{ .labels | keys }}"),
    FuncSig("first", (_LIST,), ANY,
            doc="The first element of list L, or null when L is empty.",
            example='{{ .line | split " " | first }}'),
    FuncSig("last", (_LIST,), ANY,
            doc="The last element of list L, or null when L is empty.",
            example="{{ .rows | last }}"),
    FuncSig("slice", (INT, _STR_OR_LIST), _STR_OR_LIST,
            doc="The part of list (or string) L from position N on; a negative N counts from "
                "the end.",
            example='{{ .line | split " " | slice 1 }}'),
    FuncSig("len", (ANY,), INT,
            doc="The length of a string (characters), list or map.",
            example="{{ len .rows }}"),
    # --- comparison and logic ----------------------------------------------------------------
    FuncSig("eq", (ANY, ANY), BOOL,
            doc="Deep equality of A and B (same as `A == B`).",
            example='{{ eq .env "production" }}'),
    FuncSig("ne", (ANY, ANY), BOOL, doc="Not equal (same as `A != B`).",
            example='{{ ne .status "ok" }}'),
    FuncSig("lt", (ANY, ANY), BOOL, doc="A < B (numbers or strings).",
            example="{{ lt .attempts 3 }}"),
    FuncSig("le", (ANY, ANY), BOOL, doc="A <= B.", example="{{ le .attempts 3 }}"),
    FuncSig("gt", (ANY, ANY), BOOL, doc="A > B.", example="{{ gt (int .disk.stdout) 90 }}"),
    FuncSig("ge", (ANY, ANY), BOOL, doc="A >= B.", example="{{ ge .attempts 10 }}"),
    FuncSig("and", (ANY, ANY), ANY, variadic=ANY,
            doc="Go's and: the first empty argument, or the last one (same as infix `and`).",
            example="{{ and (eq .a 1) .b }}"),
    FuncSig("or", (ANY, ANY), ANY, variadic=ANY,
            doc="Go's or: the first non-empty argument, or the last one (same as infix `or`).",
            example='{{ or .name "anonymous" }}'),
    FuncSig("not", (ANY,), BOOL, doc="True when X is empty (false, 0, \"\", null, [], {}).",
            example="{{ not .enabled }}"),
    FuncSig("default", (ANY, ANY), ANY,
            doc="VALUE when it is non-empty, else DEFAULT: `default DEFAULT VALUE`.",
            example='{{ .port | default 8080 }}'),
    FuncSig("coalesce", (ANY,), ANY, variadic=ANY,
            doc="The piped (last) argument when it is non-empty, else the first non-empty of "
                "the others in order, else null: `VALUE | coalesce \"fallback\"` gives VALUE "
                "unless it is empty.",
            example='{{ .nickname | coalesce .name "anonymous" }}'),
    # --- conversion ----------------------------------------------------------------------
    FuncSig("int", (ANY,), INT,
            doc="X as an integer: numbers are truncated, strings parsed (surrounding "
                "whitespace allowed), booleans are 0/1; anything else is an error.",
            example="{{ int .disk_usage.stdout }}"),
    FuncSig("float", (ANY,), FLOAT, doc="X as a float (numbers, numeric strings).",
            example="{{ float .ratio }}"),
    FuncSig("str", (ANY,), STR, doc="The text form of X (strings as they are, JSON for "
                                     "lists and maps).",
            example="{{ str .count }}"),
    FuncSig("bool", (ANY,), BOOL,
            doc="X as a boolean: \"true\"/\"false\" (any case), \"1\"/\"0\", numbers; else "
                "its truthiness.",
            example='{{ bool .flag }}'),
    FuncSig("toJson", (ANY,), STR, doc="X as compact JSON text.",
            example="{{ .result | toJson }}"),
    FuncSig("fromJson", (STR,), ANY, doc="The value of the JSON text S; an error when S is "
                                         "not valid JSON.",
            example="{{ (.body | fromJson).id }}"),
    # --- strings ---------------------------------------------------------------------------
    FuncSig("trim", (STR,), STR, doc="S without surrounding whitespace.",
            example="{{ .stdout | trim }}"),
    FuncSig("trimPrefix", (STR, STR), STR, doc="S without the leading PREFIX (if present).",
            example='{{ .ref | trimPrefix "refs/heads/" }}'),
    FuncSig("trimSuffix", (STR, STR), STR, doc="S without the trailing SUFFIX (if present).",
            example='{{ .file | trimSuffix ".txt" }}'),
    FuncSig("upper", (STR,), STR, doc="S in upper case.", example="{{ .name | upper }}"),
    FuncSig("lower", (STR,), STR, doc="S in lower case.", example="{{ .name | lower }}"),
    FuncSig("title", (STR,), STR, doc="S with the first letter of each word in upper case.",
            example="{{ .name | title }}"),
    FuncSig("replace", (STR, STR, STR), STR, doc="S with every OLD replaced by NEW: "
                                                 "`replace OLD NEW S`.",
            example='{{ .path | replace "/" "_" }}'),
    FuncSig("split", (STR, STR), ListT(STR), doc="The parts of S between each SEP: "
                                                 "`split SEP S`.",
            example='{{ .csv_line | split "," }}'),
    FuncSig("join", (STR, _LIST), STR, doc="The text forms of the elements of L joined by SEP: "
                                           "`join SEP L`.",
            example='{{ .tags | join ", " }}'),
    FuncSig("contains", (STR, STR), BOOL, doc="Whether S contains SUB: `contains SUB S` (for "
                                              "list membership use `in`).",
            example='{{ .stdout | contains "ready" }}'),
    FuncSig("hasPrefix", (STR, STR), BOOL, doc="Whether S starts with PREFIX.",
            example='{{ .url | hasPrefix "https://" }}'),
    FuncSig("hasSuffix", (STR, STR), BOOL, doc="Whether S ends with SUFFIX.",
            example='{{ .file | hasSuffix ".json" }}'),
    FuncSig("quote", (ANY,), STR, doc="The text form of X as a double-quoted string with "
                                      "JSON escapes.",
            example="{{ .name | quote }}"),
    FuncSig("regex_match", (STR, STR), BOOL,
            doc="Whether the regular expression RE matches somewhere in S: `regex_match RE S` "
                "(RE2 syntax, see Regular expressions).",
            example='{{ .version | regex_match "^v[0-9]+" }}'),
    FuncSig("regex_replace", (STR, STR, STR), STR,
            doc="S with every match of RE replaced by REPL (`\\1`, `\\g<name>` refer to a "
                "group): `regex_replace RE REPL S` (RE2 syntax, see Regular expressions).",
            example='{{ .host | regex_replace "[.]example[.]com$" "" }}'),
    # --- formatting --------------------------------------------------------------------------
    FuncSig("print", (), STR, variadic=ANY, min_args=0,
            doc="The text forms of the arguments, with a space between two operands when "
                "neither is a string (Go's fmt.Sprint).",
            example='{{ print "id-" .id }}'),
    FuncSig("println", (), STR, variadic=ANY, min_args=0,
            doc="The text forms of the arguments separated by spaces, plus a newline.",
            example="{{ println .a .b }}"),
    FuncSig("printf", (STR,), STR, variadic=ANY,
            doc="FORMAT with each verb replaced by the next argument: `%s` text form, `%d` "
                "integer, `%f` float (`%.2f` precision), `%v` text form, `%q` quoted, `%%` a "
                "percent sign.",
            example='{{ printf "%s:%d" .host .port }}'),
    FuncSig("urlquery", (ANY,), STR, variadic=ANY,
            doc="The text forms of the arguments, joined, escaped for a URL query.",
            example="https://example.com/?q={{ .term | urlquery }}"),
    # --- encoding and hashing -------------------------------------------------------------
    FuncSig("b64enc", (STR,), STR, doc="S (UTF-8) in base64.",
            example="{{ .token | b64enc }}"),
    FuncSig("b64dec", (STR,), STR, doc="The base64 text S decoded (as UTF-8); an error when "
                                       "S is not base64.",
            example="{{ .encoded | b64dec }}"),
    FuncSig("sha256", (STR,), STR, doc="The SHA-256 digest of S (UTF-8) in hexadecimal.",
            example="{{ .content | sha256 }}"),
    # --- constructors --------------------------------------------------------------------------
    FuncSig("dict", (), DictT(ANY), variadic=ANY, min_args=0,
            doc="A map from alternating key/value arguments (keys are strings).",
            example='{{ dict "name" .name "id" .id | toJson }}'),
    FuncSig("list", (), _LIST, variadic=ANY, min_args=0, doc="A list of the arguments.",
            example="{{ list .a .b .c }}"),
    # --- generators -------------------------------------------------------------------------
    FuncSig("now", (), STR, doc="The current time, RFC 3339 in UTC with a `Z` suffix.",
            example="{{ now }}"),
    FuncSig("uuid", (), STR, doc="A new random UUID (version 4).", example="{{ uuid }}"),
)

UNPROVIDED: dict[str, str] = {
    "call": "GXO does not provide 'call': templates cannot call function values; "
            "use one of the built-in functions",
    "html": "GXO does not provide 'html': templates produce plain text, not HTML; "
            "escape explicitly with 'toJson', 'quote' or 'urlquery'",
    "js": "GXO does not provide 'js': to embed a value in JavaScript or JSON use 'toJson'",
}


def _fold(name: str) -> str:
    return name.lower().replace("_", "")


_FOLDED = {_fold(n): n for n in FUNCTIONS}


def suggest(name: str) -> str | None:
    """The known function name closest to ``name`` (a did-you-mean), or ``None``.

    A difference of case or underscores only (``tojson``, ``to_json``) always matches."""
    folded = _FOLDED.get(_fold(name))
    if folded is not None:
        return folded
    close = difflib.get_close_matches(name, list(FUNCTIONS), n=1, cutoff=0.6)
    return close[0] if close else None


def markdown_table() -> str:
    """The function reference table of ``docs/expressions.md`` (a test keeps the doc in sync)."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| function | signature | description | example |", "| --- | --- | --- | --- |"]
    for name in sorted(FUNCTIONS, key=str.lower):
        sig = FUNCTIONS[name]
        lines.append(f"| `{name}` | `{cell(sig.signature())}` | {cell(sig.doc)} | "
                     f"`{cell(sig.example)}` |")
    return "\n".join(lines) + "\n"
