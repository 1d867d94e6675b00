"""The expression parser's stored LALR tables (gxo.compiler.expr._tables): the shipped file fits
the grammar, and a damaged or foreign table file is ignored, never trusted or fatal."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from gxo.compiler.expr import _tables
from gxo.compiler.expr._transform import Build, keyword

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = [("condition", '.a == 1 and (.b != "x" or not .c)'), ("action", "range $i, $v := .items | upper")]


def load() -> tuple[object, str]:
    return _tables.load_parser(Build(), {"NAME": keyword})


def parses(parser: object) -> list[str]:
    return [repr(parser.parse(src, start=start)) for start, src in SAMPLES]  # type: ignore[attr-defined]


@pytest.fixture
def reference() -> list[str]:
    return parses(_tables.Lark(_tables.grammar_text(), **_tables.OPTIONS, transformer=Build(),
                               lexer_callbacks={"NAME": keyword}))


def test_shipped_tables_fit_the_grammar() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_parser_tables.py"), "--check"],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr


def test_parser_comes_from_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: list[str]) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    parser, origin = load()
    assert origin == "package" and parses(parser) == reference
    assert not (tmp_path / "gxo").exists()


@pytest.mark.parametrize("damage", ["garbage", "foreign-lark", "other-grammar", "payload", "truncated", "unreadable"])
def test_damaged_or_foreign_tables_are_ignored(damage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               reference: list[str]) -> None:
    text = (ROOT / "grammar" / _tables.PACKAGED).read_text("utf-8")
    head, _, payload = text.partition("\n")
    meta = json.loads(head)
    if damage == "garbage":
        bad = "\x00not json at all\n{"
    elif damage == "foreign-lark":
        bad = json.dumps({**meta, "lark": "0.0.1"}) + "\n" + payload
    elif damage == "other-grammar":
        bad = json.dumps({**meta, "grammar_sha256": "0" * 64}) + "\n" + payload
    elif damage == "payload":  # a changed table whose digest was not updated
        bad = head + "\n" + payload.replace('"action"', '"actioN"', 1)
    elif damage == "truncated":
        bad = text[: len(text) // 2]
    else:
        bad = None

    def read_packaged() -> str:
        if bad is None:
            raise PermissionError("unreadable")
        return bad

    monkeypatch.setattr(_tables, "_read_packaged", read_packaged)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cache = Path(_tables.cache_path(_tables.grammar_text()))
    cache.parent.mkdir(parents=True)
    cache.write_text(bad or "", "utf-8")  # the user cache damaged the same way
    parser, origin = load()
    assert origin == "grammar" and parses(parser) == reference
    # the grammar's parser replaced the damaged copy: the next start loads it
    parser, origin = load()
    assert origin == "cache" and parses(parser) == reference


def test_unwritable_cache_is_not_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: list[str]) -> None:
    monkeypatch.setattr(_tables, "_read_packaged", lambda: "")
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))  # not a folder
    parser, origin = load()
    assert origin == "grammar" and parses(parser) == reference


def test_tables_hold_no_pickle() -> None:
    text = (ROOT / "grammar" / _tables.PACKAGED).read_text("utf-8")
    head, _, payload = text.partition("\n")
    assert json.loads(head)["format"] == _tables.FORMAT
    json.loads(payload)  # plain JSON, nothing to unpickle
