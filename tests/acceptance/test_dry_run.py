"""``--dry-run``: the DAG runs, every module reports what it would do with ``dry_run: true``,
and nothing happens — no process spawned, no file or directory created, no HTTP call. The
``gxo`` process runs under a Python audit hook that records every spawn, write and connect
(the same run without ``--dry-run`` shows the hook sees them)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from acceptance.harness import PLAYBOOKS, HttpMock, build, gxo_exec

AUDITED_GXO = r"""
import json, os, sys
out = open(os.environ["AUDIT_OUT"], "w")
log = []
WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
PATH_EVENTS = {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.chmod", "os.chown", "os.truncate",
               "shutil.rmtree", "os.symlink", "os.link", "os.utime"}

def hook(event, args):
    if event == "subprocess.Popen":  # the program, and its argv (an exec child's sandbox launcher runs it)
        log.append([event, str(args[0]), [str(a) for a in args[1]]])
    elif event in ("os.posix_spawn", "os.fork", "os.exec", "os.spawn", "os.system"):
        log.append([event, str(args[0])])
    elif event == "open":
        path, mode, flags = args
        if isinstance(path, (str, bytes)) and ((mode and any(c in mode for c in "wax+")) or (flags or 0) & WRITE):
            log.append([event, os.fsdecode(path)])
    elif event in PATH_EVENTS:
        log.append([event, os.fsdecode(args[0]) if isinstance(args[0], (str, bytes)) else str(args[0])])
    elif event == "socket.connect":
        log.append([event, str(args[1])])

def dump():
    out.write(json.dumps(log))
    out.close()

import atexit
atexit.register(dump)
sys.addaudithook(hook)
from gxo.runtime.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _audited(args: list[str], audit: Path) -> tuple[int, list[dict], list[list[str]]]:
    env = {**os.environ, "AUDIT_OUT": str(audit), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-c", AUDITED_GXO, *args], env=env, capture_output=True, timeout=60,
                          check=False)
    assert b"Traceback" not in proc.stdout + proc.stderr, proc.stderr
    events = [json.loads(line) for line in proc.stdout.decode().splitlines() if line.startswith("{")]
    return proc.returncode, events, json.loads(audit.read_text())


def _side_effects(log: list[list[str]], ws_root: Path) -> list[list[str]]:
    """What the run did beyond managing its own workspace (create, lock, remove)."""
    root = re.escape(os.path.realpath(ws_root))
    own = re.compile(rf"^{root}(/[0-9a-f]{{32}}(\.lock)?|/\.tmp-lock-[^/]+)?$")
    return [e for e in log if not (len(e) == 2 and own.match(e[1]))]


@pytest.fixture
def setup(work: Path) -> tuple[Path, Path]:
    return build(PLAYBOOKS / "dry_run.yaml", work), work / "marker"


def test_dry_run_has_no_side_effects(setup: tuple[Path, Path], work: Path, ws_root: Path) -> None:
    plan, marker = setup
    with HttpMock([200]) as mock:
        rc, events, log = _audited(["exec", str(plan), "--json", "--dry-run", "--var", f"marker={marker}",
                                    "--var", f"url={mock.url}"], work / "audit.json")
    assert rc == 0
    ends = {e["workload"]: e["final_status"] for e in events if e["type"] == "WorkloadEnd"}
    assert set(ends.values()) == {"Completed"} and len(ends) == 7, ends
    summaries = {e["workload"]: e["summary"] for e in events if e["type"] == "ModuleExecutionEnd"}
    assert all(s.get("dry_run") is True for s in summaries.values()), summaries
    assert summaries["touch_marker"]["command"] == "touch" and summaries["touch_marker"]["args"] == [str(marker)]
    assert summaries["after"]["stdout"] == ""  # echo did not run either
    assert not marker.exists() and mock.calls == []
    assert _side_effects(log, ws_root) == []
    assert not any(e[0] == "subprocess.Popen" for e in log)


def test_the_same_run_without_dry_run_is_seen_by_the_hook(setup: tuple[Path, Path], work: Path,
                                                           ws_root: Path) -> None:
    plan, marker = setup
    with HttpMock([200]) as mock:
        rc, events, log = _audited(["exec", str(plan), "--json", "--var", f"marker={marker}",
                                    "--var", f"url={mock.url}"], work / "audit.json")
    assert rc == 0
    assert marker.exists() and len(mock.calls) == 1
    effects = _side_effects(log, ws_root)
    spawned = [e[2] for e in effects if e[0] == "subprocess.Popen"]
    assert len(spawned) == 2 and any(s[-2].endswith("/touch") for s in spawned), spawned
    written = {Path(e[1]).name for e in effects if e[0] in ("open", "os.mkdir")}
    assert {"report.txt", "cache", "app.conf"} <= written, effects
    assert any(e[0] == "socket.connect" for e in effects)
    summaries = {e["workload"]: e["summary"] for e in events if e["type"] == "ModuleExecutionEnd"}
    assert not any(s.get("dry_run") for s in summaries.values())


def test_dry_run_plain_output(setup: tuple[Path, Path], work: Path) -> None:
    plan, marker = setup
    run = gxo_exec(plan, "--dry-run", "--var", f"marker={marker}", json_events=False)
    assert run.rc == 0, run.explain()
    assert "ok=7" in run.stdout and not marker.exists()
