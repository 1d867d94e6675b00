"""The gxoc and gxo command lines: exit codes, formats, colour, discovery, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from golden_util import run_gxoc

GOOD = """name: ok
schemaVersion: "1.0.0"
workloads:
  - name: a
    lifecycle: {policy: run_once}
    process: {module: control:identity, params: {x: 1}}
    register: ra
  - name: b
    lifecycle: {policy: run_once}
    process:
      module: control:assert
      params: {condition: "{{ .ra.x }} == 1"}
"""
BAD = GOOD.replace(".ra.x", ".ra.y")
WARN = GOOD.replace("x: 1}", "x: 1, on: yes}")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "pbs" / "sub").mkdir(parents=True)
    (tmp_path / "pbs" / "good.yaml").write_text(GOOD)
    (tmp_path / "pbs" / "sub" / "bad.yml").write_text(BAD)
    (tmp_path / "pbs" / ".hidden").mkdir()
    (tmp_path / "pbs" / ".hidden" / "x.yaml").write_text("junk: [")
    (tmp_path / "warn.yaml").write_text(WARN)
    return tmp_path


def test_exit_codes(tree: Path) -> None:
    assert run_gxoc(["check", "pbs/good.yaml"], tree)[0] == 0
    code, out, _ = run_gxoc(["check", "pbs"], tree)
    assert code == 1
    assert "pbs/sub/bad.yml:12:" in out and ".hidden" not in out
    assert out.rstrip().endswith("found 1 error in 2 files checked")
    assert run_gxoc(["check", "warn.yaml"], tree)[0] == 0
    assert run_gxoc(["check", "--warnings-as-errors", "warn.yaml"], tree)[0] == 1
    assert run_gxoc(["check", "nope.yaml"], tree)[0] == 2
    assert run_gxoc(["check"], tree)[0] == 2
    assert run_gxoc(["check", "--format", "xml", "pbs"], tree)[0] == 2
    assert run_gxoc(["frobnicate"], tree)[0] == 2


def test_json_format(tree: Path) -> None:
    code, out, _ = run_gxoc(["check", "--format", "json", "pbs"], tree)
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 1 and len(rows) == 1
    row = rows[0]
    assert row["code"] == "unknown-field" and row["path"] == "pbs/sub/bad.yml"
    assert (row["line"], row["column"]) == (12, 35)
    assert "help" in row


def test_sarif_format(tree: Path) -> None:
    code, out, _ = run_gxoc(["check", "--format", "sarif", "pbs", "warn.yaml"], tree)
    doc = json.loads(out)
    assert code == 1 and doc["version"] == "2.1.0"
    run = doc["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    assert {r["id"] for r in rules} == {"unknown-field", "bool-string"}
    for res in run["results"]:
        assert rules[res["ruleIndex"]]["id"] == res["ruleId"]
        region = res["locations"][0]["physicalLocation"]["region"]
        assert region["startLine"] >= 1 and region["startColumn"] >= 1
        assert res["level"] in ("error", "warning", "note")


def test_colour_only_when_asked_or_on_a_tty(tree: Path) -> None:
    _, plain, _ = run_gxoc(["check", "pbs"], tree)
    assert "\033[" not in plain
    _, coloured, _ = run_gxoc(["check", "--color", "always", "pbs"], tree)
    assert "\033[1;31merror[unknown-field]" in coloured


def _run(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name(args[0])
    return subprocess.run([str(exe), *args[1:]], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=60)


def test_console_scripts(tree: Path) -> None:
    p = _run(["gxoc", "--version"], tree)
    assert p.returncode == 0 and p.stdout.startswith("gxoc ")
    p = _run(["gxo", "--version"], tree)
    assert p.returncode == 0 and p.stdout.startswith("gxo ")
    p = _run(["gxoc", "check", "pbs"], tree)
    assert p.returncode == 1 and "Traceback" not in p.stderr


def test_runtime_imports_no_compiler_dependencies() -> None:
    code = (
        "import sys, gxo.runtime, gxo.runtime.cli, gxo.stdlib; gxo.stdlib.registry();"
        "bad = [m for m in ('lark','yaml','jsonschema','networkx','jinja2','Cython','gxo.compiler')"
        " if m in sys.modules]; print(','.join(bad))"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == ""
