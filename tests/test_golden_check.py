"""Golden cases of ``gxoc check``: tests/golden/check/<case>/{playbook.yaml,expected.txt}.

Each case runs from its own folder; expected.txt is the exact stdout followed by ``# exit N``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from golden_util import GOLDEN, case_flags, compare_or_update, run_gxoc

CASES = sorted(p for p in (GOLDEN / "check").iterdir() if (p / "playbook.yaml").exists())


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_check_golden(case: Path, update_golden: bool) -> None:
    args = ["check", *case_flags(case / "playbook.yaml"), "playbook.yaml"]
    code, out, err = run_gxoc(args, case)
    assert "Traceback" not in out + err
    compare_or_update(case / "expected.txt", f"{out}# exit {code}\n", update_golden)


def test_every_code_has_a_golden_case() -> None:
    from gxo.compiler.diagnostics import CODES

    seen = set()
    for case in CASES:
        text = (case / "expected.txt").read_text("utf-8") if (case / "expected.txt").exists() else ""
        seen.update(code for code in CODES if f"[{code}]" in text or f'"code": "{code}"' in text)
    missing = sorted(set(CODES) - seen)
    assert not missing, f"codes without a golden case: {missing}"


def test_enough_cases() -> None:
    assert len(CASES) >= 60
