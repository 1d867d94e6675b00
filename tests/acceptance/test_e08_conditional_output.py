"""E8: a workload gated on a previous workload's output. The usage is stubbed through
``/bin/sh -c``: 95 % runs the cleanup script, 40 % skips it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from acceptance.harness import EXAMPLES, PLAYBOOKS, build, gxo_exec


@pytest.fixture
def plan(work: Path) -> tuple[Path, Path]:
    shutil.copy(PLAYBOOKS / "e08_conditional_stub.yaml", work / "e08.yaml")
    (work / "scripts").mkdir()
    marker = work / "cleaned"
    script = work / "scripts" / "cleanup.sh"
    script.write_text(f'#!/bin/sh\necho cleaned >> "{marker}"\n')
    script.chmod(0o755)
    return build(work / "e08.yaml", work), marker


def test_high_usage_runs_the_cleanup(plan: tuple[Path, Path]) -> None:
    gxp, marker = plan
    run = gxo_exec(gxp, "--var", "usage=95")
    assert run.rc == 0, run.explain()
    assert run.summary("check_disk_space")["stdout"] == "95"
    assert run.statuses == {"check_disk_space": "Completed", "run_cleanup_script": "Completed"}
    assert marker.read_text() == "cleaned\n"


def test_low_usage_skips_the_cleanup(plan: tuple[Path, Path]) -> None:
    gxp, marker = plan
    run = gxo_exec(gxp, "--var", "usage=40")
    assert run.rc == 0, run.explain()
    assert run.summary("check_disk_space")["stdout"] == "40"
    assert run.statuses == {"check_disk_space": "Completed", "run_cleanup_script": "Skipped"}
    assert not run.of("ModuleExecutionStart", "run_cleanup_script")
    assert not marker.exists()


def test_the_example_itself_runs_against_the_real_disk(work: Path) -> None:
    """The unmodified example: its `df` pipeline gives a number; the cleanup runs iff > 90."""
    shutil.copy(EXAMPLES / "e08_conditional_on_output.yaml", work / "e08.yaml")
    (work / "scripts").mkdir()
    (work / "scripts" / "cleanup.sh").write_text("#!/bin/sh\necho cleaned\n")
    (work / "scripts" / "cleanup.sh").chmod(0o755)
    run = gxo_exec(build(work / "e08.yaml", work))
    assert run.rc == 0, run.explain()
    usage = int(run.summary("check_disk_space")["stdout"])
    assert 0 <= usage <= 100
    assert run.status("run_cleanup_script") == ("Completed" if usage > 90 else "Skipped")
