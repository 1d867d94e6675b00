"""The example playbooks: those that run in this release pass ``gxoc check``; the others fail
it with exactly their ``not-implemented`` diagnostics, and every checklist example has one.

``examples/`` holds one playbook per example of the reference checklist (section 6, E1-E28;
E20 and E21 are future features), plus ``hello.yaml``, the README's tour.  Each is checked
in-process.  A runnable one (``make demo`` checks them) must report no error and no warning
other than the ones listed in ``EXPECTED_WARNINGS``.  One that waits for a feature (``WAITING``,
the Makefile's ``WAITING_EXAMPLES``) must report only ``not-implemented`` errors, exactly as
``tests/golden/examples/<name>.txt`` has them: when a feature lands, its golden changes and
this test names the example to move.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from golden_util import GOLDEN, compare_or_update, run_gxoc

from gxo.compiler.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
PLAYBOOKS = sorted(EXAMPLES.glob("*.yaml"))

#: The checklist's examples that get a playbook (E20 saga and E21 circuit breaker are FUTURE).
CHECKLIST_EXAMPLES = [n for n in range(1, 29) if n not in (20, 21)]

#: Warnings an example shows on purpose, by file name; each entry has a comment in the playbook
#: saying why the warning is intended.
EXPECTED_WARNINGS: dict[str, set[str]] = {
    "e25_mvk_demos.yaml": {"seccomp-unconfined"},  # the demo's unconfined half
}

#: Examples that wait for a feature this release does not run, by file stem, with the features
#: (docs/examples.md lists them too).  ``gxoc check`` refuses them with ``not-implemented``.
WAITING: dict[str, str] = {
    "e16_manual_approval": "control:wait_for_signal",
    "e22_stdlib_snippets": "control:wait_for_signal",
}
RUNNABLE = [p for p in PLAYBOOKS if p.name.split(".")[0] not in WAITING]
WAITING_PATHS = [p for p in PLAYBOOKS if p.name.split(".")[0] in WAITING]

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


@pytest.mark.parametrize("path", RUNNABLE, ids=[p.name for p in RUNNABLE])
def test_example_checks_clean(path: Path, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = _check([f"examples/{path.name}"], capsys, monkeypatch)
    assert "Traceback" not in out
    assert "error[" not in out, out
    assert code == 0, out
    unexpected = set(_WARNING.findall(out)) - EXPECTED_WARNINGS.get(path.name, set())
    assert not unexpected, f"unexpected warnings {sorted(unexpected)}:\n{out}"


def test_runnable_examples_check_clean_at_once(capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``make demo`` runs: every runnable example in one command."""
    code, out = _check([f"examples/{p.name}" for p in RUNNABLE], capsys, monkeypatch)
    assert "Traceback" not in out and "error[" not in out, out
    assert code == 0, out


@pytest.mark.parametrize("path", WAITING_PATHS, ids=[p.name for p in WAITING_PATHS])
def test_waiting_example_fails_only_with_not_implemented(path: Path, update_golden: bool) -> None:
    code, out, err = run_gxoc(["check", f"examples/{path.name}"], ROOT)
    assert "Traceback" not in out + err
    codes = set(re.findall(r"(?:error|warning)\[([a-z0-9-]+)\]", out))
    assert codes == {"not-implemented"}, f"{path.name}: expected only not-implemented, got {sorted(codes)}:\n{out}"
    assert code == 1
    compare_or_update(GOLDEN / "examples" / (path.name.split(".")[0] + ".txt"), out + f"# exit {code}\n",
                      update_golden)


def test_waiting_list_matches_the_makefile_and_the_docs() -> None:
    makefile = (ROOT / "Makefile").read_text("utf-8")
    m = re.search(r"^WAITING_EXAMPLES\s*:=((?:.*\\\n)*.*)$", makefile, re.M)
    assert m, "Makefile: WAITING_EXAMPLES is missing"
    assert set(m.group(1).replace("\\", " ").split()) == set(WAITING)
    doc = (ROOT / "docs" / "examples.md").read_text("utf-8")
    for stem in WAITING:
        assert f"`{stem}" in doc, f"docs/examples.md does not list {stem}"
