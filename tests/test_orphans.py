"""No process a run started outlives it, even when ``gxo`` itself is killed with SIGKILL.

The playbook starts the three kinds of process that escape a process group: ``setsid -w``
(a child in a new session under a parent that waits), a daemon (a shell starts a ``setsid``
sleep and exits: the sleep is orphaned and adopted by ``gxo``), and a plain ``sleep``.  Each
carries a marker number in its command line; a process is a survivor while a live process
shows it.  With a cgroup per run everything dies within seconds of the SIGKILL; without one
(``GXO_RUN_CGROUP=off``) the guardian still kills the exec process groups and their leaders'
descendants.  The SIGTERM path stays clean, and a normal run leaves no cgroup behind.
"""

from __future__ import annotations

import glob
import os
import random
import signal
from pathlib import Path

import pytest

from acceptance.harness import build, close_proc, read_events_until, spawn, wait_until
from services import need_cgroup

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc (Linux)")

SETSID = "/usr/bin/setsid"


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder for the playbook and marker files; the runs' workspaces go beside it (a gxo
    killed with SIGKILL leaves its workspace, which the next run sweeps)."""
    monkeypatch.setenv("GXO_WORKSPACE_ROOT", str(tmp_path / "workspaces"))
    d = tmp_path / "work"
    d.mkdir()
    return d


def _playbook(work: Path, marker: int, *, daemon: bool) -> Path:
    """Workloads ``detached`` (setsid -w sleep), ``daemon`` (an orphaned setsid sleep) and
    ``plain`` (sleep); the sleeps run for ``marker`` + 1, + 2, + 3 seconds (never reached)."""
    flag = work / "daemon-started"
    daemon_wl = f"""
  - name: daemon
    lifecycle: {{policy: run_once}}
    process:
      module: exec
      params:
        command: /bin/sh
        args:
          - -c
          - "{SETSID} /bin/sh -c 'touch \\"$0\\"; exec /bin/sleep {marker + 2}' \\"$0\\" </dev/null >/dev/null 2>&1 &
             while [ ! -e \\"$0\\" ]; do sleep 0.02; done"
          - "{flag}"
""" if daemon else ""
    pb = work / "orphans.yaml"
    pb.write_text(f"""name: orphans
schemaVersion: "1.0.0"
workloads:
  - name: detached
    lifecycle: {{policy: run_once}}
    process: {{module: exec, params: {{command: {SETSID}, args: ["-w", "/bin/sleep", "{marker + 1}"]}}}}
{daemon_wl}
  - name: plain
    lifecycle: {{policy: run_once}}
    process: {{module: exec, params: {{command: /bin/sleep, args: ["{marker + 3}"]}}}}
""")
    return pb


def _marked(marker: int) -> dict[int, tuple[str, int]]:
    """Live processes whose command line holds one of the run's sleep durations: pid ->
    (command line, parent pid)."""
    wanted = {str(marker + i) for i in (1, 2, 3)}
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and wanted & set(argv):
            out[int(name)] = (" ".join(argv).strip(), int(fields[1]))
    return out


def _run_cgroups(pid: int) -> list[str]:
    return glob.glob(f"/sys/fs/cgroup/gxo-{pid}-*") + glob.glob(f"/sys/fs/cgroup/*/gxo-{pid}-*")


def _start(command: str, work: Path, playbook: Path, env: dict[str, str | None], children: int):
    """``gxo exec|run --json`` of ``playbook``, once it has started ``children`` exec children
    (each start is a ``started`` log event: gxo has told the guardian, without a cgroup)."""
    if command == "exec":
        proc = spawn("gxo", "exec", build(playbook, work), "--no-state", "--json", env=env)
    else:
        proc = spawn("gxo", "run", playbook, "--json", env=env)
    seen: list[str] = []

    def started(event: dict) -> bool:
        if event["type"] == "Log" and event.get("message") == "started":
            seen.append(event["workload"])
        return len(seen) == children

    read_events_until(proc, started, timeout=30)
    return proc


def _kill_survivors(marker: int) -> None:
    for pid in _marked(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.skipif(not os.access(SETSID, os.X_OK), reason=f"needs {SETSID} (util-linux)")
@pytest.mark.parametrize("command", ["exec", "run"])
def test_sigkill_of_gxo_leaves_no_process(work: Path, command: str) -> None:
    need_cgroup()
    marker = random.randrange(700_000, 900_000)
    proc = _start(command, work, _playbook(work, marker, daemon=True), {"GXO_RUN_CGROUP": None}, 3)
    try:
        # setsid -w and its sleep, the daemon's sleep, the plain sleep
        assert wait_until(lambda: len(_marked(marker)) == 4 and (work / "daemon-started").exists(),
                          timeout=30), _marked(marker)
        daemon = [pid for pid, (argv, _) in _marked(marker).items() if argv.endswith(str(marker + 2))]
        # the daemon's shell exited: the sleep was adopted by gxo (its process group is gone)
        assert wait_until(lambda: _marked(marker).get(daemon[0], ("", 0))[1] == proc.pid), _marked(marker)
        assert len(_run_cgroups(proc.pid)) == 1
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert wait_until(lambda: not _marked(marker), timeout=5), f"survivors: {_marked(marker)}"
        assert wait_until(lambda: not _run_cgroups(proc.pid), timeout=5), _run_cgroups(proc.pid)
    finally:
        close_proc(proc)
        _kill_survivors(marker)


@pytest.mark.skipif(not os.access(SETSID, os.X_OK), reason=f"needs {SETSID} (util-linux)")
def test_without_a_cgroup_sigkill_still_ends_the_exec_groups_and_their_descendants(work: Path) -> None:
    marker = random.randrange(700_000, 900_000)
    proc = _start("exec", work, _playbook(work, marker, daemon=False), {"GXO_RUN_CGROUP": "off"}, 2)
    try:
        assert wait_until(lambda: len(_marked(marker)) == 3, timeout=30), _marked(marker)
        assert _run_cgroups(proc.pid) == []
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert wait_until(lambda: not _marked(marker), timeout=5), f"survivors: {_marked(marker)}"
    finally:
        close_proc(proc)
        _kill_survivors(marker)


@pytest.mark.skipif(not os.access(SETSID, os.X_OK), reason=f"needs {SETSID} (util-linux)")
def test_sigterm_of_gxo_stops_everything_and_removes_the_cgroup(work: Path) -> None:
    marker = random.randrange(700_000, 900_000)
    proc = _start("run", work, _playbook(work, marker, daemon=True), {"GXO_RUN_CGROUP": None}, 3)
    try:
        assert wait_until(lambda: len(_marked(marker)) == 4 and (work / "daemon-started").exists(),
                          timeout=30), _marked(marker)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 143, err
        assert b"Traceback" not in out + err and b"Event loop is closed" not in err, err
        assert wait_until(lambda: not _marked(marker), timeout=5), f"survivors: {_marked(marker)}"
        assert wait_until(lambda: not _run_cgroups(proc.pid), timeout=5), _run_cgroups(proc.pid)
    finally:
        close_proc(proc)
        _kill_survivors(marker)


def test_a_normal_run_leaves_no_cgroup_and_says_where_it_ran(work: Path) -> None:
    where = need_cgroup()
    pb = work / "one.yaml"
    pb.write_text('name: one\nschemaVersion: "1.0.0"\nworkloads:\n  - name: one\n    lifecycle: {policy: run_once}\n'
                  '    process: {module: exec, params: {command: /bin/true}}\n')
    proc = spawn("gxo", "run", pb, "-v", env={"GXO_RUN_CGROUP": None})
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        close_proc(proc)
    assert proc.returncode == 0, err
    assert "processes: run cgroup /sys/fs/cgroup/" in out.decode() and f"({where})" in out.decode(), out
    assert wait_until(lambda: not _run_cgroups(proc.pid), timeout=5), _run_cgroups(proc.pid)


@pytest.mark.parametrize("setting", ["off", "tmp"])
def test_verbose_says_when_no_cgroup_is_used(work: Path, setting: str) -> None:
    value = "off" if setting == "off" else str(work)
    pb = work / "one.yaml"
    pb.write_text('name: one\nschemaVersion: "1.0.0"\nworkloads:\n  - name: one\n    lifecycle: {policy: run_once}\n'
                  '    process: {module: exec, params: {command: /bin/true}}\n')
    proc = spawn("gxo", "run", pb, "-v", env={"GXO_RUN_CGROUP": value})
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        close_proc(proc)
    assert proc.returncode == 0, err
    why = "GXO_RUN_CGROUP=off" if setting == "off" else f"GXO_RUN_CGROUP={work} is not a cgroup directory"
    assert f"processes: no run cgroup ({why})" in out.decode(), out
    assert "an orphaned daemon" in out.decode()
    assert _run_cgroups(proc.pid) == []


# -- gxo.runtime.cgroups -------------------------------------------------------------------------


def _writable_hierarchies():
    from gxo.runtime import cgroups

    out = []
    for h in cgroups.hierarchies():
        try:
            cgroups.Cgroup.create(h.own, f"gxo-probe-{os.getpid()}", h.version).remove()
        except cgroups.CgroupError:
            continue
        out.append(h)
    return out


def _leads_session(pid: int) -> bool:
    try:
        return os.getsid(pid) == pid
    except ProcessLookupError:
        return False


def test_a_cgroup_holds_what_its_members_start_and_kill_ends_it_all() -> None:
    """In every hierarchy this machine lets us use: a shell moved into a cgroup starts a
    ``setsid`` sleep and a plain one; both are members, ``kill`` ends all three, ``remove``
    removes the cgroup and the one under it."""
    import subprocess

    from gxo.runtime import cgroups

    need_cgroup()
    for h in _writable_hierarchies():
        run = cgroups.Cgroup.create(h.own, f"gxo-unit-{os.getpid()}", h.version)
        shell = None
        try:
            inner = run.child("inner")
            shell = subprocess.Popen(["/bin/sh", "-c", "read x; setsid sleep 601 & sleep 602"],
                                     stdin=subprocess.PIPE, start_new_session=True)
            inner.add(shell.pid)
            assert shell.stdin is not None
            shell.stdin.write(b"go\n")
            shell.stdin.close()
            # the shell, its sleep, and a sleep that left the shell's session
            assert wait_until(lambda: len(run.pids()) == 3 and any(
                _leads_session(p) for p in run.pids() - {shell.pid})), \
                (h.describe(), run.pids())
            assert run.kill() is True
            assert run.pids() == set()
            shell.wait(timeout=10)
            run.remove()
            assert not os.path.exists(run.path)
        finally:
            if shell is not None and shell.poll() is None:
                shell.kill()
                shell.wait()
            if os.path.exists(run.path):
                run.kill()
                run.remove()


def test_kill_spares_the_process_it_is_told_to() -> None:
    import subprocess

    from gxo.runtime import cgroups

    need_cgroup()
    h = _writable_hierarchies()[0]
    cg = cgroups.Cgroup.create(h.own, f"gxo-unit-{os.getpid()}", h.version)
    a = subprocess.Popen(["/bin/sleep", "603"])
    b = subprocess.Popen(["/bin/sleep", "604"])
    try:
        cg.add(a.pid)
        cg.add(b.pid)
        assert cg.kill(spare=a.pid) is True
        assert b.wait(timeout=10) == -signal.SIGKILL
        assert a.poll() is None and cg.pids() == {a.pid}
    finally:
        for p in (a, b):
            p.kill()
            p.wait()
        assert wait_until(lambda: not cg.pids())
        cg.remove()


def test_a_cgroup_that_cannot_be_made_says_where_and_why(tmp_path: Path) -> None:
    from gxo.runtime import cgroups

    with pytest.raises(cgroups.CgroupError, match=r"cannot create .*/missing/run: No such file or directory"):
        cgroups.Cgroup.create(str(tmp_path / "missing"), "run", 2)


def test_a_bind_mounted_hierarchy_maps_cgroup_paths_under_its_root() -> None:
    from gxo.runtime.cgroups import _inside

    assert _inside("/sys/fs/cgroup", "/", "/user.slice/a.scope") == "/sys/fs/cgroup/user.slice/a.scope"
    assert _inside("/sys/fs/cgroup", "/", "/") == "/sys/fs/cgroup"
    assert _inside("/sys/fs/cgroup/pids", "/docker/c1", "/docker/c1/sub") == "/sys/fs/cgroup/pids/sub"
    assert _inside("/sys/fs/cgroup/pids", "/docker/c1", "/docker/c10") is None
