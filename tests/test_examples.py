"""The example playbooks: each one passes ``gxoc check``, and every checklist example has one.

``examples/`` holds one playbook per example of the reference checklist (section 6, E1-E28;
E20 and E21 are future features), plus ``hello.yaml``, the README's tour.  Each is checked
in-process, as ``make demo`` checks them, and must report no error and no warning other than
the ones listed in ``EXPECTED_WARNINGS``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gxo.compiler.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
PLAYBOOKS = sorted(EXAMPLES.glob("*.yaml"))

#: The checklist's examples that get a playbook (E20 saga and E21 circuit breaker are FUTURE).
CHECKLIST_EXAMPLES = [n for n in range(1, 29) if n not in (20, 21)]

#: Warnings an example shows on purpose, by file name.  None does today: a new entry needs a
#: comment in the playbook saying why the warning is intended.
EXPECTED_WARNINGS: dict[str, set[str]] = {}

_WARNING = re.compile(r"warning\[([a-z0-9-]+)\]")


def _check(args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    monkeypatch.chdir(ROOT)
    code = main(["check", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize("number", CHECKLIST_EXAMPLES)
def test_every_checklist_example_has_a_playbook(number: int) -> None:
    found = sorted(EXAMPLES.glob(f"e{number:02d}_*.yaml"))
    assert len(found) == 1, f"E{number}: expected one examples/e{number:02d}_*.yaml, found {found}"
    head = found[0].read_text("utf-8").split("\n", 5)
    assert any(f"E{number}" in line for line in head), f"{found[0].name}: header must name E{number}"


def test_future_examples_are_left_out() -> None:
    assert not list(EXAMPLES.glob("e20_*")) and not list(EXAMPLES.glob("e21_*"))


@pytest.mark.parametrize("path", PLAYBOOKS, ids=[p.name for p in PLAYBOOKS])
def test_example_checks_clean(path: Path, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = _check([f"examples/{path.name}"], capsys, monkeypatch)
    assert "Traceback" not in out
    assert "error[" not in out, out
    assert code == 0, out
    unexpected = set(_WARNING.findall(out)) - EXPECTED_WARNINGS.get(path.name, set())
    assert not unexpected, f"unexpected warnings {sorted(unexpected)}:\n{out}"


def test_examples_directory_checks_clean(capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``make demo`` runs: the whole folder at once."""
    code, out = _check(["examples/"], capsys, monkeypatch)
    assert "Traceback" not in out and "error[" not in out, out
    assert code == 0, out
