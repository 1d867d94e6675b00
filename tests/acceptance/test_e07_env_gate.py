"""E7: an environment-gated deploy. With the default ``env: staging`` the deploy is Skipped,
its script never runs and the run succeeds; ``--var env=production`` runs it (once)."""

from __future__ import annotations

import shutil
from pathlib import Path

from acceptance.harness import EXAMPLES, build, gxo_exec

E7 = EXAMPLES / "e07_env_gated_deploy.yaml"


def _project(work: Path) -> tuple[Path, Path]:
    """The example beside a stub ./scripts/deploy_prod.sh that records each call."""
    shutil.copy(E7, work / "deploy.yaml")
    (work / "scripts").mkdir()
    marker = work / "deployed.log"
    script = work / "scripts" / "deploy_prod.sh"
    script.write_text(f'#!/bin/sh\necho "deployed from $(pwd)" >> "{marker}"\necho rolled out\n')
    script.chmod(0o755)
    return build(work / "deploy.yaml", work), marker


def test_staging_skips_the_deploy_and_succeeds(work: Path) -> None:
    plan, marker = _project(work)
    run = gxo_exec(plan)
    assert run.rc == 0, run.explain()
    assert run.statuses == {"deploy_to_production": "Skipped"}
    assert run.end("deploy_to_production")["error"] == "when evaluated false"
    assert not run.of("ModuleExecutionStart")  # the module never ran
    assert not marker.exists()
    assert run.playbook_end["status"] == "Completed" and run.playbook_end["skipped"] == 1
    plain = gxo_exec(plan, json_events=False)
    assert plain.rc == 0 and "COMPLETED" in plain.stdout and "skipped=1" in plain.stdout
    assert not marker.exists()


def test_production_runs_the_deploy_once(work: Path) -> None:
    plan, marker = _project(work)
    run = gxo_exec(plan, "--var", "env=production")
    assert run.rc == 0, run.explain()
    assert run.statuses == {"deploy_to_production": "Completed"}
    assert run.summary("deploy_to_production")["stdout"] == "rolled out"
    lines = marker.read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("deployed from ")
    # the script ran in the run's workspace, which is gone now
    assert not Path(lines[0].removeprefix("deployed from ")).exists()
