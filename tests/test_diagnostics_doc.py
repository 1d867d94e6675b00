"""docs/diagnostics.md is generated from the code registry and the golden cases: keep it fresh."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "diagnostics.md"
TOOL = ROOT / "tools" / "gen_diagnostics_doc.py"


def test_diagnostics_doc_is_fresh() -> None:
    proc = subprocess.run([sys.executable, str(TOOL), "--check"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr or proc.stdout


def test_every_code_has_a_section() -> None:
    from gxo.compiler.diagnostics import CODES

    text = DOC.read_text("utf-8")
    sections = set(re.findall(r"^## (\S+)$", text, flags=re.MULTILINE))
    missing = [code for code in CODES if code not in sections]
    assert not missing, f"codes without a '## <code>' section in docs/diagnostics.md: {missing}"
