"""Write grammar/expressions.lalr.json: the expression parser's tables (gxo.compiler.expr._tables).

Run after editing grammar/expressions.lark or upgrading Lark.  Lark numbers its LALR states in an
order that varies from run to run, so the file is checked by what it holds, not by its bytes: it
must name this grammar's digest, this Lark version and the parser options, match its payload
digest, and its parser must parse a small corpus as the grammar's own parser does.  ``--check``
exits 1 when it does not (a test runs it); without ``--check`` the file is rewritten only then.
"""

from __future__ import annotations

import sys
from pathlib import Path

from gxo.compiler.expr import _tables
from gxo.compiler.expr._transform import Build, keyword

OUT = Path(__file__).resolve().parent.parent / "grammar" / "expressions.lalr.json"
CORPUS = [
    ("action", ".a.b | upper"), ("action", "if and .x (not .y)"), ("action", "range $i, $v := .items"),
    ("action", 'printf "%s-%d" .name (len .list)'), ("action", "$x := index .m \"k\" 1"),
    ("condition", '.a == 1 and (.b != "x" or not .c) and .n * 2 + 1 >= 3 and .k in [1, 2]'),
    ("condition", '{"a": [1, 2.5, null, true]} == .m'),
]


def fits(text: str, grammar: str) -> bool:
    try:
        parser = _tables._from_text(text, grammar, {"transformer": Build(), "lexer_callbacks": {"NAME": keyword}})
    except Exception:  # noqa: BLE001 - a damaged file is stale
        return False
    if parser is None:
        return False
    reference = _tables.Lark(grammar, **_tables.OPTIONS, transformer=Build(), lexer_callbacks={"NAME": keyword})
    return all(repr(parser.parse(src, start=start)) == repr(reference.parse(src, start=start)) for start, src in CORPUS)


def main() -> int:
    grammar = (OUT.parent / "expressions.lark").read_text("utf-8")
    ok = OUT.exists() and fits(OUT.read_text("utf-8"), grammar)
    if "--check" in sys.argv:
        if not ok:
            print("grammar/expressions.lalr.json is stale: run python tools/gen_parser_tables.py", file=sys.stderr)
            return 1
        return 0
    if not ok:
        OUT.write_text(_tables.tables_json(grammar), "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
