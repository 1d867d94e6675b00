"""``security_context.resources`` against the real kernel (``gxo.runtime.sandbox.limits``).

A real child joins the limit cgroups the way the launcher does (it writes its own pid into each
``cgroup.procs``, then execs): a fork bomb stops at ``pids_max`` and is reported, a 200 MiB
allocation under a 64 MiB limit is OOM-killed and reported, the CPU values land in the control
files and throttle a busy loop, ``close`` leaves no directory and no process, and a ``gxo``
killed with SIGKILL leaves none either once its guardian has run.  Skipped (with the reason)
where this machine cannot give a controller; failed instead under ``GXO_TEST_SERVICES=require``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from acceptance.harness import wait_until
from services import _missing

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc (Linux)")

ROOT = Path(__file__).resolve().parent.parent

#: a shell that joins every cgroup given after the program and its code, then execs the program
JOIN_AND_EXEC = 'py=$1; code=$2; shift 2; for d; do echo $$ > "$d/cgroup.procs" || exit 97; done; exec "$py" -c "$code"'


def _need(resources: dict[str, int]) -> None:
    from gxo.runtime.sandbox.limits import refusals

    problems = refusals(resources)
    if problems:
        _missing("this machine cannot give the limits: " + "; ".join(problems))


def _make(resources: dict[str, int], label: str):
    from gxo.runtime.sandbox.limits import Limits

    _need(resources)
    return Limits.make(resources, label)


def _start(lim, code: str) -> subprocess.Popen:
    return subprocess.Popen(["/bin/sh", "-c", JOIN_AND_EXEC, "sh", sys.executable, textwrap.dedent(code), *lim.join],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@contextlib.contextmanager
def _limits(resources: dict[str, int], label: str):
    """Limits made for the test, and a ``start(code)`` of a Python child in them; the limits
    are closed and the children killed whatever the test did."""
    lim = _make(resources, label)
    children: list[subprocess.Popen] = []

    def start(code: str) -> subprocess.Popen:
        children.append(_start(lim, code))
        return children[-1]

    try:
        yield lim, start
    finally:
        lim.close()
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()


def _alive(pid: int) -> bool:
    """A process that runs (a zombie waits only for its parent to reap it)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return False
    return data[data.rfind(b")") + 2:][:1] != b"Z"


def _closed_clean(lim, pids: set[int]) -> None:
    joined = lim.join
    assert lim.close() == ""
    assert not [d for d in joined if os.path.exists(d)]
    assert wait_until(lambda: not any(_alive(p) for p in pids), timeout=5), [p for p in pids if _alive(p)]
    assert lim.close() == ""  # idempotent


async def _watch(lim, timeout: float) -> str:
    return await asyncio.wait_for(lim.watch(interval=0.05), timeout)


FORK_BOMB = """
    import os, time
    for _ in range(300):
        try:
            if os.fork() == 0:
                time.sleep(60)
                os._exit(0)
        except OSError:
            time.sleep(0.005)
    time.sleep(60)
"""


def test_a_fork_bomb_stops_at_pids_max_and_is_reported() -> None:
    with _limits({"pids_max": 20}, "bomb") as (lim, start):
        assert lim.hit() is None
        t0 = time.monotonic()
        child = start(FORK_BOMB)
        assert asyncio.run(_watch(lim, 10)) == "pids limit 20 reached"
        assert time.monotonic() - t0 < 5
        assert lim.hit() == "pids limit 20 reached"
        members = lim.pids()
        assert child.pid in members and 1 < len(members) <= 20, members
        assert "pids 20 (cgroup v" in lim.describe()
        assert lim.applied()["pids_max"] == 20
        _closed_clean(lim, members)
        assert child.wait(timeout=5) == -signal.SIGKILL
        assert lim.hit() == "pids limit 20 reached"  # kept past close


def test_memory_past_the_limit_is_oom_killed_and_reported() -> None:
    with _limits({"memory_bytes": 64 << 20}, "oom") as (lim, start):
        child = start("""
            import time
            data = b"x" * (200 << 20)
            print("survived", len(data), flush=True)
            time.sleep(60)
        """)
        assert asyncio.run(_watch(lim, 20)) == "memory limit 64 MiB exceeded (OOM kill)"
        assert child.wait(timeout=10) == -signal.SIGKILL
        assert lim.hit() == "memory limit 64 MiB exceeded (OOM kill)"
        assert lim.describe().startswith("memory 64 MiB (cgroup v")
        applied = lim.applied()
        assert applied["memory_bytes"] == 64 << 20 and applied["cgroups"]["memory"] in ("v1", "v2")
        _closed_clean(lim, {child.pid})


def test_cpu_values_are_written_and_throttle_a_busy_loop() -> None:
    with _limits({"cpu_quota_us": 20000, "cpu_period_us": 100000, "cpu_weight": 50}, "cpu") as (lim, start):
        (d,) = lim.join
        version = lim.applied()["cgroups"]["cpu"]
        if version == "v2":
            assert Path(d, "cpu.max").read_text().split() == ["20000", "100000"]
            assert Path(d, "cpu.weight").read_text().strip() == "50"
        else:
            assert Path(d, "cpu.cfs_quota_us").read_text().strip() == "20000"
            assert Path(d, "cpu.cfs_period_us").read_text().strip() == "100000"
            assert Path(d, "cpu.shares").read_text().strip() == "512"  # 50 * 1024 / 100
        assert lim.describe() == (f"cpu 20000/100000 us (cgroup {version} cpu), cpu weight 50 (cgroup {version} cpu"
                                  + (", cpu.shares 512)" if version == "v1" else ")"))
        child = start("""
            import time
            end = time.monotonic() + 0.6
            while time.monotonic() < end:
                pass
        """)
        assert child.wait(timeout=20) == 0
        stat = dict(line.split() for line in Path(d, "cpu.stat").read_text().splitlines())
        assert int(stat["nr_throttled"]) > 0, stat  # 20 % of one CPU: a 0.6 s busy loop waits
        assert lim.hit() is None
        _closed_clean(lim, {child.pid})


def test_all_limits_in_one_go_and_close_kills_what_is_left() -> None:
    resources = {"memory_bytes": 64 << 20, "pids_max": 20, "cpu_quota_us": 50000, "cpu_weight": 100}
    with _limits(resources, "all of them/1") as (lim, start):
        assert all(os.path.basename(d).startswith(f"gxo-{os.getpid()}-all_of_them_1-") for d in lim.join)
        applied = lim.applied()
        assert {k: applied[k] for k in resources} == resources and applied["cpu_period_us"] == 100000
        assert set(applied["cgroups"]) == {"memory", "pids", "cpu"}
        child = start("""
            import subprocess, time
            subprocess.Popen(["sleep", "611"], start_new_session=True)
            time.sleep(612)
        """)
        assert wait_until(lambda: len(lim.pids()) == 2)
        members = lim.pids()
        lim.kill()
        assert lim.pids() == set()
        _closed_clean(lim, members)


OWNER = """
import json, os, subprocess, sys, time
from gxo.runtime import proctrack
from gxo.runtime.sandbox.limits import Limits

proctrack.enable_guard()
proctrack.prepare()
proctrack._guard.future.result(timeout=30)
lim = Limits.make(json.loads(sys.argv[1]), "owned")
join = 'for d; do echo $$ > "$d/cgroup.procs"; done; exec sleep 613'
child = subprocess.Popen(["/bin/sh", "-c", join, "sh", *lim.join], start_new_session=True)
deadline = time.monotonic() + 10
while child.pid not in lim.pids() and time.monotonic() < deadline:
    time.sleep(0.01)
print(json.dumps({"join": lim.join, "child": child.pid, "members": sorted(lim.pids())}), flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("run_cgroup", ["auto", "off"])
def test_sigkill_of_the_owner_leaves_nothing_once_the_guardian_ran(run_cgroup: str) -> None:
    """A ``gxo`` (here a process set up as it is) killed with SIGKILL while its child is in
    limit cgroups: the guardian kills the child and removes the directories.  With
    ``GXO_RUN_CGROUP=off`` only the limit cgroups hold the child."""
    resources = {"memory_bytes": 64 << 20, "pids_max": 50, "cpu_weight": 100}
    _need(resources)
    env = {**os.environ, "GXO_RUN_CGROUP": run_cgroup}
    owner = subprocess.Popen([sys.executable, "-c", OWNER, json.dumps(resources)], env=env,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        seen = json.loads(owner.stdout.readline())
        assert seen["child"] in seen["members"], seen
        assert all(os.path.isdir(d) for d in seen["join"])
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(timeout=10)
        assert wait_until(lambda: not any(os.path.exists(d) for d in seen["join"]), timeout=20), seen["join"]
        assert wait_until(lambda: not _alive(seen["child"]), timeout=5)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        if owner.stdout is not None:
            owner.stdout.close()


def test_what_cannot_be_given_is_named_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    """No hierarchy at all (as on a machine without cgroups): ``refusals`` names the keys and
    the controller, ``make`` refuses with the fix and makes nothing."""
    from gxo.runtime import cgroups
    from gxo.runtime.sandbox import limits

    monkeypatch.setattr(cgroups, "hierarchies", lambda pid="self", v1=(): [])
    monkeypatch.setattr(limits, "_v2_parent", lambda found: None)
    resources = {"memory_bytes": 64 << 20, "cpu_quota_us": 50000, "cpu_period_us": 100000}
    assert limits.refusals(resources) == [
        "resources.memory_bytes needs the memory controller: no cgroup v2 is mounted, and no cgroup v1 memory "
        "hierarchy is mounted",
        "resources.cpu_quota_us and cpu_period_us needs the cpu controller: no cgroup v2 is mounted, and no cgroup "
        "v1 cpu hierarchy is mounted"]
    with pytest.raises(limits.LimitError, match=r"cannot apply security_context.resources here: .* Fix: "):
        limits.Limits.make(resources, "x")
    assert limits.refusals({}) == []
    assert limits.refusals({"pids_max": 0}) == ["security_context.resources.pids_max must be a positive integer, got 0"]


def test_sizes_and_shares() -> None:
    from gxo.runtime.sandbox.limits import shares_of, size_text

    assert [size_text(n) for n in (64 << 20, 1 << 30, 1536, 1000, (3 << 20) + 1)] == \
        ["64 MiB", "1 GiB", "1536 bytes", "1000 bytes", f"{(3 << 20) + 1} bytes"]
    assert shares_of(100) == 1024 and shares_of(1) == 10 and shares_of(10000) == 102400 and shares_of(50) == 512


def test_resources_ranges_are_check_errors_at_the_key(tmp_path: Path) -> None:
    pb = tmp_path / "limits.yaml"
    pb.write_text(textwrap.dedent("""\
        name: limits
        schemaVersion: "1.0.0"
        workloads:
          - name: a
            lifecycle: {policy: run_once}
            process:
              module: exec
              params: {command: /bin/true}
            security_context:
              resources:
                memory_bytes: 4096
                pids_max: 0
                cpu_period_us: 5000000
        """))
    out = subprocess.run([sys.executable, "-m", "gxo.compiler.cli", "check", str(pb)], capture_output=True, text=True)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert f"{pb}:11:23: error[invalid-value]: workloads[0].security_context.resources.memory_bytes must be at " \
           "least 1048576, got 4096" in text, text
    assert f"{pb}:12:19: error[invalid-value]: workloads[0].security_context.resources.pids_max must be at least 1, " \
           "got 0" in text, text
    assert "resources.cpu_period_us must be at most 1000000, got 5000000" in text, text


def test_v2_is_taken_where_the_parent_delegates_the_controller(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The choice between cgroup v2 and v1, on a stand-in v2 parent (this machine's v2 may
    delegate no controller): the run's cgroup (no process in it) enables a controller it is
    given; another parent must already delegate it; what v2 cannot give falls to v1."""
    from gxo.runtime import cgroups
    from gxo.runtime.sandbox import limits

    monkeypatch.setattr(cgroups, "hierarchies", lambda pid="self", v1=(): [])
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("pids\n")
    monkeypatch.setattr(limits, "_v2_parent", lambda found: (str(tmp_path), True))
    places, problems = limits._plan({"memory", "pids", "cpu"}, cpu_quota=True, cpu_weight=False)
    assert problems == []
    assert {c: (p.version, p.parent, p.enable) for c, p in places.items()} == {
        "memory": (2, str(tmp_path), True), "pids": (2, str(tmp_path), False), "cpu": (2, str(tmp_path), True)}

    monkeypatch.setattr(limits, "_v2_parent", lambda found: (str(tmp_path), False))  # gxo's own cgroup
    places, problems = limits._plan({"memory", "pids"}, cpu_quota=False, cpu_weight=False)
    assert set(places) == {"pids"}
    assert problems == [("memory", f"cgroup v2 {tmp_path} does not have it in cgroup.subtree_control, and no "
                                   "cgroup v1 memory hierarchy is mounted")]

    lim = limits.Limits({"memory_bytes": 1 << 20, "cpu_period_us": 50000, "cpu_weight": 300, "pids_max": 5})
    assert lim._files(limits._Place("memory", 2, "v2", "")) == [("memory.max", "1048576"), ("memory.swap.max", "0"),
                                                                 ("memory.oom.group", "1")]
    assert lim._files(limits._Place("cpu", 2, "v2", "")) == [("cpu.max", "max 50000"), ("cpu.weight", "300")]
    assert lim._files(limits._Place("cpu", 1, "", "")) == [("cpu.cfs_period_us", "50000"), ("cpu.shares", "3072")]
    assert lim._files(limits._Place("pids", 2, "v2", "")) == [("pids.max", "5")]


def test_stale_limit_cgroups_of_a_gone_gxo_are_swept(tmp_path: Path) -> None:
    """An empty ``gxo-<pid>-...`` limit cgroup whose gxo is gone and that is older than a minute
    (a gxo killed before its guardian could run) is removed when the next limits are made there;
    a young one is left (its pid may be another pid namespace's gxo still setting up)."""
    lim = _make({"pids_max": 5}, "first")
    (d,) = lim.join
    parent = os.path.dirname(d)
    lim.close()
    dead = next(p for p in range(4_000_000, 4_100_000) if not os.path.exists(f"/proc/{p}"))
    old, young = (os.path.join(parent, f"gxo-{dead}-{what}-abcdef") for what in ("old", "young"))
    os.mkdir(old)
    os.mkdir(young)
    try:
        os.utime(old, (time.time() - 3600, time.time() - 3600))
        lim = _make({"pids_max": 5}, "second")
        assert not os.path.exists(old) and os.path.exists(young)
        assert lim.close() == ""
    finally:
        for p in (old, young):
            if os.path.exists(p):
                os.rmdir(p)
