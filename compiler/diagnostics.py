"""Diagnostics: source spans, the registry of codes, and the text/JSON/SARIF renderers.

Every problem the compiler finds is a ``Diagnostic`` with a stable kebab-case code from
``CODES``.  Phases append to a ``Diagnostics`` sink; all problems of a run are reported
together, sorted by position.  ``docs/diagnostics.md`` documents every code (a test keeps the
two in sync).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterable, Iterator

ERROR = "error"
WARNING = "warning"
NOTE = "note"


@dataclass(frozen=True, slots=True)
class Span:
    """A region of a source file: 1-based lines and columns, end exclusive; path as given."""

    path: str
    line: int
    col: int
    end_line: int
    end_col: int

    @staticmethod
    def point(path: str, line: int, col: int, width: int = 1) -> "Span":
        return Span(path, line, col, line, col + max(width, 1))


@dataclass(frozen=True, slots=True)
class CodeInfo:
    category: str
    severity: str
    summary: str
    fix: str  # how to fix it, for docs/diagnostics.md


#: The registry of codes, grouped by category (design.md section 10).
CODES: dict[str, CodeInfo] = {
    # YAML and schema
    "yaml-syntax": CodeInfo("yaml", ERROR, "the file is not valid YAML",
        'Fix the YAML at the position shown; quote values that start with `{{`, `*`, `&` or hold `: `.'),
    "yaml-limit": CodeInfo("yaml", ERROR, "the file exceeds a loader limit (size, depth, nodes, aliases, integer digits)",
        'Keep playbooks under 10 MB and 64 levels deep, integers under 4,300 digits (quote longer digit strings), '
        'and reuse anchors sparingly: aliases may not expand past 250,000 nodes.'),
    "bool-string": CodeInfo("yaml", WARNING, "a YAML 1.1 boolean word (yes/no/on/off) is a string here",
        'Write `true`/`false` for a boolean, or quote the word (`\"yes\"`) to say you mean the string. '
        'No warning where a module param takes a string and no boolean (`source_field: n`): there the word is that string.'),
    "duplicate-key": CodeInfo("yaml", ERROR, "a mapping has the same key twice",
        'Remove one of the two keys; YAML would silently keep only one.'),
    "unknown-key": CodeInfo("schema", ERROR, "a key that the playbook schema does not define",
        'Correct the spelling (the hint names the closest key) or move the key to the block it belongs to.'),
    "legacy-tasks-key": CodeInfo("schema", ERROR, "a v0.1 key (tasks, task_policy, type, params, restart_policy) that was renamed",
        'Rename the v0.1 key as the hint says (`tasks` -> `workloads`, `task_policy` -> `workload_policy`, `type` -> `process.module`).'),
    "schema-version": CodeInfo("schema", ERROR, "schemaVersion is missing, malformed or not major 1",
        'Write `schemaVersion: \"1.0.0\"`: a semantic version whose major is 1.'),
    "invalid-value": CodeInfo("schema", ERROR, "a value of the wrong type or outside its allowed values",
        'Give a value of the type and range the key documents (the hint quotes it).'),
    # names and references
    "duplicate-name": CodeInfo("names", ERROR, "two workloads (or pipeline steps) share a name",
        'Give every workload (and every pipeline step) its own name.'),
    "duplicate-register": CodeInfo("names", ERROR, "two workloads register the same key",
        'Give every `register` its own key, distinct from the vars.'),
    "reserved-name": CodeInfo("names", ERROR, "a name in the kernel's reserved _gxo namespace",
        'Pick a name outside `_gxo`: that namespace is written by the kernel.'),
    "template-syntax": CodeInfo("expressions", ERROR, "a template or condition does not parse (or nests deeper than 64 levels)",
        'Fix the expression at the caret: close every `{{`, `(`, string and `if`/`range`/`with` block. '
        'An expression nested more than 64 levels deep (or 16 ranges) is split into vars or earlier workloads.'),
    "expr-limit": CodeInfo("expressions", ERROR, "an expression past a limit of the language (a printf width or precision over 10,000)",
        'Keep printf widths and precisions at 10,000 or less (`%8s`, `%.2f`); docs/runtime.md#limits lists the '
        'limits that expressions meet at run time.'),
    "unknown-function": CodeInfo("expressions", ERROR, "a call to a function the language does not have",
        'Use a function the language has (the hint names the closest); see docs/expressions.md.'),
    "invalid-regex": CodeInfo("expressions", ERROR, "a literal regular expression that RE2 cannot compile",
        'Write the pattern in RE2 syntax (docs/expressions.md#regular-expressions): no backreferences (`\\1`) '
        'and no lookaround (`(?=`, `(?!`, `(?<=`, `(?<!`); `\\z` for the end of the text. In a replacement, '
        '`\\1` or `\\g<name>` names a group that the pattern has.'),
    "unknown-module": CodeInfo("names", ERROR, "process.module names no declared module",
        'Use a declared module name (the hint names the closest); see docs/modules/.'),
    "undefined-name": CodeInfo("names", ERROR, "a reference to a name that no register, var or loop defines",
        'Reference a register, a var, `_gxo` or the loop variable; check the spelling.'),
    "unknown-field": CodeInfo("types", ERROR, "a field that the referenced value's type does not have",
        "Use a field that the value has: registered values have the fields of the module's summary."),
    # types
    "type-mismatch": CodeInfo("types", ERROR, "a value whose type cannot be used where it stands",
        'Convert the value (`int`, `float`, `str`) or compare values of the same type.'),
    # lifecycle and streams
    "stream-input": CodeInfo("streams", ERROR, "stream_inputs that the module or the producer cannot take",
        'List only stream producers in `stream_inputs`, and as many as the module reads.'),
    "stream-deadlock": CodeInfo("streams", ERROR, "a consumer that waits on its own producer",
        "Do not make a consumer wait for the producer it streams from; read the producer's summary in another workload."),
    "lifecycle-unsupported": CodeInfo("lifecycle", ERROR, "a module or key used under a lifecycle it does not support",
        'Use the key or module under a lifecycle that supports it, or change the policy.'),
    # graph
    "dependency-cycle": CodeInfo("graph", ERROR, "workloads that depend on each other in a cycle",
        "Remove one of the references (or needs) on the cycle's path."),
    # security
    "path-escape": CodeInfo("security", WARNING, "a literal path param that leaves the workspace",
        'Use a path relative to the workspace, or list the directory in `workload_policy.allowed_paths` / '
        '`policy.allowed_paths` (or pass `gxo --allow-path`): other absolute paths and `..` that leave it are '
        'refused at run time.'),
    "secret-in-log": CodeInfo("security", WARNING, "a secret flowing into a param that is logged or summarised",
        'Pass secrets only through params that are not echoed in summaries or logs (e.g. `environment`).'),
    "seccomp-unconfined": CodeInfo("security", WARNING, "a child process run without a seccomp filter (seccomp: unconfined)",
        "Drop `seccomp: unconfined` to keep the baseline profile (it denies only mount, namespaces, "
        "ptrace, module loading and the like), or write a profile that allows what the program "
        "needs (`seccomp_profile_path`)."),
    "seccomp-profile": CodeInfo("security", ERROR, "a seccomp_profile_path that cannot be used (unreadable, not JSON, an unknown syscall or action)",
        "Fix the profile at the position shown: a Docker/libseccomp JSON profile with `defaultAction` "
        "and `syscalls` entries `{names, action, args}`, each name a syscall libseccomp knows."),
    "sql-injection-risk": CodeInfo("security", ERROR, "a template inside a database:query statement (SQL built from text)",
        "Write the value as a placeholder in `query` and pass it in `params` (bound by the driver, never "
        "spliced into the SQL). Only where the database takes no placeholder (DDL such as `CREATE ROLE ... "
        "PASSWORD`) set the literal `unsafe_sql: true` on the workload."),
    # what this release runs
    "not-implemented": CodeInfo("support", ERROR,
        "a module, lifecycle policy or security_context that this release's runtime cannot run",
        "Use a module and a policy that run in this release (docs/modules/index.md), move the work that "
        "needs a security_context into an exec child or a module a sandboxed worker can run "
        "(docs/security.md), or wait for the release that brings it: gxo never runs it another way."),
}


@dataclass(frozen=True, slots=True)
class Note:
    message: str
    span: Span | None = None


@dataclass(frozen=True, slots=True)
class Diagnostic:
    code: str
    severity: str
    message: str
    span: Span
    help: str | None = None
    notes: tuple[Note, ...] = ()

    def sort_key(self) -> tuple[str, int, int, str, str]:
        return (self.span.path, self.span.line, self.span.col, self.code, self.message)


@dataclass
class Diagnostics:
    """A sink that phases append to; ``has_errors`` decides whether later phases may run."""

    items: list[Diagnostic] = field(default_factory=list)

    def add(
        self,
        code: str,
        message: str,
        span: Span,
        *,
        help: str | None = None,
        notes: Iterable[Note] = (),
        severity: str | None = None,
    ) -> None:
        info = CODES[code]  # KeyError here is a bug: every code must be registered
        self.items.append(
            Diagnostic(code, severity or info.severity, message, span, help, tuple(notes))
        )

    def withdraw(self, code: str, span: Span) -> None:
        """Drop the ``code`` diagnostics at ``span`` (a later phase knows they do not apply)."""
        self.items = [d for d in self.items if not (d.code == code and d.span == span)]

    def extend(self, other: Iterable[Diagnostic]) -> None:
        self.items.extend(other)

    @property
    def has_errors(self) -> bool:
        return any(d.severity == ERROR for d in self.items)

    def sorted(self) -> list[Diagnostic]:
        seen: set[tuple] = set()
        out = []
        for d in sorted(self.items, key=Diagnostic.sort_key):
            key = (d.code, d.message, d.span)
            if key not in seen:
                seen.add(key)
                out.append(d)
        return out

    def __iter__(self) -> Iterator[Diagnostic]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


# ---------------------------------------------------------------------------------------------
# Rendering

_COLORS = {ERROR: "\033[1;31m", WARNING: "\033[1;33m", NOTE: "\033[1;36m"}
_BOLD = "\033[1m"
_BLUE = "\033[1;34m"
_RESET = "\033[0m"


def render_text(diags: list[Diagnostic], sources: dict[str, str], *, color: bool = False) -> str:
    """``path:line:col: severity[code]: message``, the source line, a caret span, help/notes.

    A source line longer than ``SNIPPET_WIDTH`` columns is shown cut around the caret."""
    out: list[str] = []
    lines: dict[str, list[str]] = {}  # each source split once, however many diagnostics it has

    def paint(text: str, style: str) -> str:
        return f"{style}{text}{_RESET}" if color else text

    for d in diags:
        sp = d.span
        head = f"{sp.path}:{sp.line}:{sp.col}: "
        out.append(
            paint(head, _BOLD)
            + paint(f"{d.severity}[{d.code}]", _COLORS.get(d.severity, ""))
            + paint(f": {d.message}", _BOLD)
        )
        if sp.path not in lines and sp.path in sources:
            lines[sp.path] = sources[sp.path].splitlines()
        out.extend(_snippet(sp, lines.get(sp.path), paint))
        if d.help:
            out.append(f"  {paint('help', _BOLD)}: {d.help}")
        for n in d.notes:
            if n.span is not None:
                out.append(f"  {paint('note', _BOLD)}: {n.span.path}:{n.span.line}:{n.span.col}: {n.message}")
            else:
                out.append(f"  {paint('note', _BOLD)}: {n.message}")
    return "\n".join(out) + ("\n" if out else "")


#: the columns of a source line a diagnostic shows; a longer line is cut around the caret,
#: with ``…`` where it was cut (a one-line file of megabytes is not printed per diagnostic)
SNIPPET_WIDTH = 120
#: columns kept before the caret when the line is cut
_SNIPPET_BEFORE = 40
_CUT = "…"


def _snippet(sp: Span, lines: list[str] | None, paint) -> list[str]:
    if lines is None or not 1 <= sp.line <= len(lines):
        return []
    src = lines[sp.line - 1]
    gutter = str(sp.line)
    pad = " " * len(gutter)
    start = sp.col - 1
    if sp.end_line == sp.line:
        width = max(sp.end_col - sp.col, 1)
    else:
        width = max(len(src) - start, 1)
    shown_start = 0
    if len(src) > SNIPPET_WIDTH:
        # a window of SNIPPET_WIDTH columns: some context before the caret, as much after
        shown_start = max(0, min(start - _SNIPPET_BEFORE, len(src) - SNIPPET_WIDTH))
        end = shown_start + SNIPPET_WIDTH
        head = _CUT if shown_start > 0 else ""
        tail = _CUT if end < len(src) else ""
        width = max(min(width, end - start), 1)
        src = head + src[shown_start:end] + tail
        start = start - shown_start + len(head)
    src = src.replace("\t", " ")
    caret = " " * start + "^" + "~" * (width - 1)
    return [
        f" {paint(gutter, _BLUE)} {paint('|', _BLUE)} {src}".rstrip(),
        f" {pad} {paint('|', _BLUE)} {paint(caret, _BOLD)}",
    ]


#: diagnostics of one code shown per file: the rest are counted in one note (a file of 240,000
#: ``yes`` words would otherwise print 80 MB of warnings, and 200 MB of SARIF)
MAX_PER_CODE = 100


def limit_per_code(diags: list[Diagnostic], limit: int = MAX_PER_CODE) -> list[Diagnostic]:
    """``diags`` (sorted) with at most ``limit`` diagnostics of one code per file; in place of
    the rest, one note at the first left out that says how many there were.  Counts and exit
    codes are taken from the full list."""
    seen: dict[tuple[str, str], int] = {}
    for d in diags:
        key = (d.span.path, d.code)
        seen[key] = seen.get(key, 0) + 1
    if all(n <= limit for n in seen.values()):
        return diags
    out: list[Diagnostic] = []
    shown: dict[tuple[str, str], int] = {}
    for d in diags:
        key = (d.span.path, d.code)
        n = shown.get(key, 0)
        shown[key] = n + 1
        if n < limit:
            out.append(d)
        elif n == limit:
            more = seen[key] - limit
            out.append(Diagnostic(
                d.code, NOTE, f"{more:,} more {d.code} diagnostic{'s' if more != 1 else ''} in this file, "
                f"from here on, are not shown (the first {limit} are)", d.span,
                help="fix the ones shown and check again"))
    return out


def summary_line(diags: list[Diagnostic], files: int) -> str:
    errors = sum(1 for d in diags if d.severity == ERROR)
    warnings = sum(1 for d in diags if d.severity == WARNING)
    noun = "file" if files == 1 else "files"
    if not diags:
        return f"ok: {files} {noun} checked, no problems"
    parts = []
    if errors:
        parts.append(f"{errors} error{'s' if errors != 1 else ''}")
    if warnings:
        parts.append(f"{warnings} warning{'s' if warnings != 1 else ''}")
    notes = len(diags) - errors - warnings
    if notes:
        parts.append(f"{notes} note{'s' if notes != 1 else ''}")
    return f"found {', '.join(parts)} in {files} {noun} checked"


def to_json(d: Diagnostic) -> dict:
    sp = d.span
    return {
        "path": sp.path,
        "line": sp.line,
        "column": sp.col,
        "end_line": sp.end_line,
        "end_column": sp.end_col,
        "severity": d.severity,
        "code": d.code,
        "message": d.message,
        "help": d.help,
        "notes": [
            {"message": n.message, **({"path": n.span.path, "line": n.span.line, "column": n.span.col} if n.span else {})}
            for n in d.notes
        ],
    }


def render_json(diags: list[Diagnostic]) -> str:
    """One JSON object per line (mypy's JSON formatter)."""
    return "".join(json.dumps(to_json(d), ensure_ascii=False, sort_keys=True) + "\n" for d in diags)


_SARIF_LEVEL = {ERROR: "error", WARNING: "warning", NOTE: "note"}


def render_sarif(diags: list[Diagnostic], version: str) -> str:
    """SARIF 2.1.0, as GitHub code scanning accepts it (one run, rules from the registry)."""
    used = sorted({d.code for d in diags})
    rules = [
        {
            "id": code,
            "name": "".join(p.capitalize() for p in code.split("-")),
            "shortDescription": {"text": CODES[code].summary},
            "helpUri": f"https://gxo.dev/docs/diagnostics#{code}",
            "defaultConfiguration": {"level": _SARIF_LEVEL[CODES[code].severity]},
            "properties": {"tags": [CODES[code].category]},
        }
        for code in used
    ]
    index = {code: i for i, code in enumerate(used)}
    results = []
    for d in diags:
        sp = d.span
        text = d.message + (f"\nhelp: {d.help}" if d.help else "")
        for n in d.notes:
            text += f"\nnote: {n.message}"
        results.append(
            {
                "ruleId": d.code,
                "ruleIndex": index[d.code],
                "level": _SARIF_LEVEL[d.severity],
                "message": {"text": text},
                "locations": [
                    {
                        "physicalLocation": {
                            "artifactLocation": {"uri": sp.path, "uriBaseId": "%SRCROOT%"},
                            "region": {
                                "startLine": sp.line,
                                "startColumn": sp.col,
                                "endLine": sp.end_line,
                                "endColumn": max(sp.end_col, sp.col + 1) if sp.end_line == sp.line else sp.end_col,
                            },
                        }
                    }
                ],
                "partialFingerprints": {
                    "primaryLocationLineHash": f"{d.code}:{sp.path}:{sp.line}:{sp.col}"
                },
            }
        )
    doc = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "gxoc",
                        "informationUri": "https://gxo.dev",
                        "semanticVersion": version,
                        "version": version,
                        "rules": rules,
                    }
                },
                "columnKind": "unicodeCodePoints",
                "results": results,
            }
        ],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """``did you mean 'x'?`` from the closest candidate, or None."""
    import difflib

    cands = sorted(set(candidates))
    best = difflib.get_close_matches(name, cands, n=1, cutoff=0.6)
    if not best:
        lowered = {c.lower(): c for c in cands}
        if name.lower() in lowered:
            best = [lowered[name.lower()]]
    return f"did you mean '{best[0]}'?" if best else None
