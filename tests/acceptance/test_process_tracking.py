"""Every process a workload started dies with it: a descendant that left the exec's process
group (``setsid``) and holds its output pipe is killed on SIGTERM (exit 143, no traceback), and
one left running by an exec that ended normally is stopped when the workload ends."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from acceptance.harness import PLAYBOOKS, build, gxo_exec, pid_alive, spawn, wait_until


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError):
        return None


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc (Linux)")
@pytest.mark.parametrize("after", ["wait", "sleep 0.2"], ids=["shell-waits", "shell-exits"])
def test_sigterm_kills_a_child_that_left_its_process_group(work: Path, ws_root: Path, after: str) -> None:
    pidfile = work / "pid"
    plan = build(PLAYBOOKS / "escaper.yaml", work)
    proc = spawn("gxo", "exec", plan, "--json", "--var", f"pidfile={pidfile}", "--var", f"after={after}")
    try:
        assert wait_until(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
        sleeper = int(pidfile.read_text())
        assert os.getsid(sleeper) == sleeper  # it left the exec's session and process group
        if after != "wait":  # the shell exited: the sleep is orphaned and adopted by gxo
            assert wait_until(lambda: _ppid(sleeper) == proc.pid), _ppid(sleeper)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert time.monotonic() - t0 < 10
    assert b"Traceback" not in out + err and b"Event loop is closed" not in err, err
    assert wait_until(lambda: not pid_alive(sleeper), timeout=2), "the setsid sleep outlived gxo"
    assert os.listdir(ws_root) == []


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc (Linux)")
def test_a_process_left_behind_by_a_finished_exec_is_stopped(work: Path) -> None:
    pidfile = work / "pid"
    plan = build(PLAYBOOKS / "escaper.yaml", work)
    t0 = time.monotonic()
    run = gxo_exec(plan, "--var", f"pidfile={pidfile}", "--var", "after=sleep 0.2",
                   "--var", "redirect=>/dev/null 2>&1")
    assert run.rc == 0 and run.statuses == {"escape": "Completed"}, run.explain()
    assert time.monotonic() - t0 < 10  # the exec did not wait for the sleep: it let go of the pipe
    sleeper = int(pidfile.read_text())
    assert wait_until(lambda: not pid_alive(sleeper), timeout=2), "the setsid sleep outlived its workload"
