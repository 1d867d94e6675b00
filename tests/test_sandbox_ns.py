"""The exec sandbox's namespaces, user switch, read-only paths and root filesystem, against
the real kernel.

Each test runs ``gxo run`` as a user does and looks at what the child saw.  They need Linux,
the launcher built at install and the right to make namespaces (root here and in CI, or
unprivileged user namespaces); elsewhere they are skipped with the reason (and fail under
``GXO_TEST_SERVICES=require``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from golden_util import run_gxoc
from services import _missing, need_service

BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True)
def _needs_namespaces() -> None:
    from gxo.runtime.sandbox import launcher_path

    if not sys.platform.startswith("linux"):
        _missing("namespaces are Linux only")
    if launcher_path() is None:
        _missing("the sandbox launcher gxo-sandbox-exec is not built (install with a C compiler)")
    probe = subprocess.run([launcher_path(), "--unshare", "user,mount,pid,net", "--probe", "--", "/bin/true",
                            "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        _missing(f"this machine cannot make namespaces: {probe.stderr.strip()}")


def _gxo(args: list[str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "gxo"), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _playbook(tmp_path: Path, workloads: list[dict]) -> Path:
    doc = {"name": "sandbox", "schemaVersion": "1.0.0", "workloads": workloads}
    path = tmp_path / "p.yaml"
    path.write_text(json.dumps(doc, indent=1), "utf-8")  # JSON is YAML
    return path


def _wl(name: str, script: str, security_context: dict | None, **extra) -> dict:
    wl = {"name": name, "lifecycle": {"policy": "run_once"}, "register": name,
          "process": {"module": "exec", "params": {"command": "sh", "args": ["-c", script]}}, **extra}
    if security_context is not None:
        wl["security_context"] = security_context
    return wl


def _run(tmp_path: Path, script: str, security_context: dict | None, extra_args: list[str] = ()):
    """``gxo run --json`` of one sh script: (exit code, summary, events, stderr)."""
    pb = _playbook(tmp_path, [_wl("child", script, security_context)])
    proc = _gxo(["run", "--json", *extra_args, pb.name], tmp_path)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    summary = next((e.get("summary") for e in events if e["type"] == "ModuleExecutionEnd"), None)
    return proc.returncode, summary, events, proc.stderr


def _sandbox_text(events: list[dict]) -> str:
    return next(e["sandbox"] for e in events if e["type"] == "Log" and e.get("message") == "started")


def test_net_namespace_leaves_only_loopback(tmp_path: Path) -> None:
    """namespaces.net: the child sees only ``lo`` (up), and the host's PostgreSQL, reachable
    from gxo, is not reachable from it."""
    host, port = need_service("PostgreSQL", "GXO_TEST_POSTGRES", "127.0.0.1:5432")
    connect = (f"python3 -c 'import socket; socket.create_connection((\"{host}\", {port}), 2); print(\"connected\")'"
               " 2>&1 | tail -n 1")
    script = "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; cat /sys/class/net/lo/operstate; " + connect
    code, summary, events, err = _run(tmp_path, connect, None)
    assert code == 0 and summary["stdout"].strip() == "connected", err  # reachable without the namespace
    code, summary, events, err = _run(tmp_path, script, {"namespaces": {"net": True}})
    assert code == 0, err
    lines = summary["stdout"].split()
    assert lines[0] == "lo" and lines[1] in ("unknown", "up")  # lo has no carrier state: "unknown"
    assert "connected" not in summary["stdout"]
    assert "Connection refused" in summary["stdout"] or "unreachable" in summary["stdout"]
    assert "namespaces net" in _sandbox_text(events) or "net" in _sandbox_text(events)


def test_pid_namespace_child_is_pid_2_and_cannot_signal_the_host(tmp_path: Path) -> None:
    victim = subprocess.Popen(["sleep", "60"])
    try:
        script = f"echo $$; ls /proc | grep -c '^[0-9]'; kill -0 {victim.pid} 2>&1; kill -TERM {victim.pid} 2>&1; true"
        code, summary, events, err = _run(tmp_path, script, {"namespaces": {"pid": True}})
        assert code == 0, err
        out = summary["stdout"].splitlines()
        assert out[0] == "2"  # under the sandbox's init (pid 1)
        assert int(out[1]) <= 4  # init, sh, and what the pipeline started: no host process
        assert "No such process" in summary["stdout"]
        assert victim.poll() is None  # still running
    finally:
        victim.kill()
        victim.wait()


def test_pid_namespace_passes_on_exit_codes_and_signals(tmp_path: Path) -> None:
    code, summary, _, err = _run(tmp_path, "exit 7", {"namespaces": {"pid": True}})
    assert code == 1 and summary["exit_code"] == 7, err
    code, summary, events, err = _run(tmp_path, "kill -SEGV $$", {"namespaces": {"pid": True}})
    assert code == 1 and summary["exit_code"] == 128 + signal.SIGSEGV, err
    failed = [e for e in events if e["type"] == "WorkloadEnd" and e.get("final_status") == "Failed"]
    assert "killed by SIGSEGV" in failed[0]["error"]


def test_user_nobody(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("switching to another user needs root")
    code, summary, events, err = _run(tmp_path, "id -u; id -g; echo data > mine.txt && echo wrote",
                                      {"user": "nobody"})
    assert code == 0, err
    out = summary["stdout"].split()
    assert out[0] == "65534" and out[2] == "wrote"
    assert "user nobody" in _sandbox_text(events)


def test_user_with_its_own_user_namespace(tmp_path: Path) -> None:
    """user + namespaces.user: the namespace maps exactly that user to itself."""
    if os.geteuid() != 0:
        pytest.skip("switching to another user needs root")
    code, summary, _, err = _run(tmp_path, "id -u; cat /proc/self/uid_map; echo x > f && echo wrote",
                                 {"user": "nobody", "namespaces": {"user": True, "net": True}})
    assert code == 0, err
    out = summary["stdout"].splitlines()
    assert out[0] == "65534"
    assert out[1].split() == ["65534", "65534", "1"]
    assert out[2] == "wrote"


def test_user_unknown_is_refused_before_the_run(tmp_path: Path) -> None:
    code, _, _, err = _run(tmp_path, "true", {"user": "no-such-user-gxo"})
    assert code == 3
    assert "user 'no-such-user-gxo' does not exist on this machine" in err
    assert "Traceback" not in err


def test_read_only_paths(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "a.txt").write_text("original\n")
    script = (f"cat {shared}/a.txt; echo changed > {shared}/a.txt 2>&1 || echo refused; "
              f"touch {shared}/new 2>&1 || echo refused; echo ok > out.txt && echo workspace-writable")
    code, summary, events, err = _run(tmp_path, script, {"read_only_paths": [str(shared)]})
    assert code == 0, err
    assert summary["stdout"].splitlines()[0] == "original"
    assert summary["stdout"].count("refused") == 2
    assert "Read-only file system" in summary["stderr"]
    assert "workspace-writable" in summary["stdout"]
    assert (shared / "a.txt").read_text() == "original\n" and not (shared / "new").exists()
    assert f"read-only {shared}" in _sandbox_text(events)


def test_read_only_path_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    code, _, _, err = _run(tmp_path, "true", {"read_only_paths": ["/no/such/dir"]})
    assert code == 3
    assert "/no/such/dir" in err and "No such file or directory" in err


def test_private_tmp_holds_only_the_workspace(tmp_path: Path) -> None:
    marker = Path("/tmp") / f"gxo-marker-{os.getpid()}"
    marker.write_text("host")
    try:
        code, summary, _, err = _run(tmp_path, f"test -e {marker} && echo visible || echo hidden; "
                                     "echo x > /tmp/scratch && echo tmp-writable; pwd",
                                     {"namespaces": {"mount": True}})
        assert code == 0, err
        out = summary["stdout"].split()
        assert out[:2] == ["hidden", "tmp-writable"]
        assert not Path("/tmp/scratch").exists()
    finally:
        marker.unlink()


def _jail(root: Path) -> None:
    """A small root filesystem: sh, cat and ls with their libraries, and the usual folders."""
    for d in ("proc", "dev", "tmp", "etc"):
        (root / d).mkdir(parents=True)
    for d in ("bin", "sbin", "lib", "lib64"):  # merged /usr: /bin -> usr/bin
        if os.path.islink(f"/{d}"):
            (root / d).symlink_to(os.readlink(f"/{d}"))
            (root / os.path.realpath(f"/{d}").lstrip("/")).mkdir(parents=True, exist_ok=True)
    for prog in ("sh", "cat", "ls"):
        path = shutil.which(prog)
        assert path
        targets = [path] + [w for w in subprocess.run(["ldd", path], capture_output=True, text=True).stdout.split()
                            if w.startswith("/")]
        for t in targets:
            dest = root / os.path.realpath(t).lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(os.path.realpath(t), dest)
            link = root / t.lstrip("/")
            if not os.path.lexists(link):
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(os.path.realpath(t))
    (root / "etc" / "marker").write_text("jail\n")


def test_root_filesystem(tmp_path: Path) -> None:
    if not shutil.which("ldd"):
        _missing("ldd (libc-bin) is needed to build the test's root filesystem")
    root = tmp_path / "jail"
    _jail(root)
    script = "cat /etc/marker; ls /; test -e /etc/passwd && echo host-visible || echo host-hidden; echo $(ls /dev); pwd"
    pb = _playbook(tmp_path, [{**_wl("child", script, {"root_filesystem": str(root), "namespaces": {"pid": True}}),
                               "process": {"module": "exec", "params": {"command": "/bin/sh", "args": ["-c", script]}}}])
    proc = _gxo(["run", "--json", pb.name], tmp_path)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    out = next(e["summary"] for e in events if e["type"] == "ModuleExecutionEnd")["stdout"]
    assert out.splitlines()[0] == "jail"
    assert "host-hidden" in out
    assert "null" in out and "urandom" in out


def test_check_wants_absolute_sandbox_paths(tmp_path: Path) -> None:
    pb = _playbook(tmp_path, [_wl("child", "true", {"read_only_paths": ["etc"], "root_filesystem": "../jail"})])
    code, out, err = run_gxoc(["check", pb.name], tmp_path)
    assert code == 1
    assert out.count("error[invalid-value]") == 2 and "must be an absolute path" in out


def _leftovers(tag: str) -> list[str]:
    found = subprocess.run(["pgrep", "-f", f"^sleep {tag}"], capture_output=True, text=True).stdout.split()
    return [p for p in found if int(p) != os.getpid()]


def test_nothing_is_left_when_gxo_is_stopped(tmp_path: Path) -> None:
    """SIGTERM of gxo while a sandboxed child (pid, net, mount namespaces) runs: the child and
    its namespaces are gone (no process of it is left), and gxo exits 143."""
    tag = f"300.{os.getpid()}1"  # sleep 300.<pid>1: a command line no other test has
    pb = _playbook(tmp_path, [_wl("child", f"sleep {tag} & sleep {tag}",
                                  {"namespaces": {"pid": True, "net": True, "mount": True}})])
    proc = subprocess.Popen([str(BIN / "gxo"), "run", pb.name], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not _leftovers(tag) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _leftovers(tag), "the sandboxed child did not start"
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == 143
    deadline = time.monotonic() + 5
    while _leftovers(tag) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _leftovers(tag)


def test_nothing_is_left_when_gxo_is_killed(tmp_path: Path) -> None:
    tag = f"300.{os.getpid()}2"
    pb = _playbook(tmp_path, [_wl("child", f"exec sleep {tag}", {"namespaces": {"pid": True}})])
    proc = subprocess.Popen([str(BIN / "gxo"), "run", pb.name], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not _leftovers(tag) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _leftovers(tag)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while _leftovers(tag) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _leftovers(tag)


def _limit_dirs() -> set[str]:
    """The limit cgroups of any gxo on this machine (``gxo-<pid>-<workload>-<hex>``)."""
    from gxo.runtime import cgroups

    found = set()
    for h in cgroups.hierarchies(v1=("pids", "memory", "cpu")):
        try:
            found |= {os.path.join(h.own, d) for d in os.listdir(h.own) if d.startswith("gxo-") and d.count("-") >= 3}
        except OSError:
            pass
    return found


def _limits_or_skip(resources: dict) -> None:
    from gxo.runtime.sandbox.limits import refusals

    problems = refusals(resources)
    if problems:
        _missing("; ".join(problems))


def test_pids_max_contains_a_fork_bomb(tmp_path: Path) -> None:
    """A fork bomb under pids_max 20 is stopped as soon as it reaches the limit (its shell
    would otherwise sleep 60 s), and the workload fails with the pids reason."""
    _limits_or_skip({"pids_max": 20})
    before = _limit_dirs()
    code, summary, events, err = _run(tmp_path, "b() { b | b & }; b; sleep 60", {"resources": {"pids_max": 20}})
    assert code == 1, err
    end = next(e for e in events if e["type"] == "WorkloadEnd")
    assert end["final_status"] == "Failed"
    assert end["error"] == "command sh stopped: pids limit 20 reached"
    assert end["duration_ms"] < 5000
    assert "pids 20 (cgroup v" in _sandbox_text(events)
    assert _limit_dirs() <= before


def test_memory_limit_ends_in_an_oom_kill(tmp_path: Path) -> None:
    _limits_or_skip({"memory_bytes": 64 << 20})
    before = _limit_dirs()
    script = "python3 -c 'x = bytearray(200 * 1024 * 1024); print(\"allocated\")'"
    code, summary, events, err = _run(tmp_path, script, {"resources": {"memory_bytes": 64 << 20}})
    assert code == 1, err
    end = next(e for e in events if e["type"] == "WorkloadEnd")
    assert end["error"] == "command sh stopped: memory limit 64 MiB exceeded (OOM kill)"
    assert "allocated" not in summary["stdout"]
    assert _limit_dirs() <= before


def test_limits_within_bounds_let_the_child_finish(tmp_path: Path) -> None:
    _limits_or_skip({"pids_max": 50, "memory_bytes": 256 << 20, "cpu_quota_us": 50000, "cpu_weight": 50})
    code, summary, events, err = _run(tmp_path, "echo fine", {
        "resources": {"pids_max": 50, "memory_bytes": 256 << 20, "cpu_quota_us": 50000, "cpu_weight": 50},
        "namespaces": {"pid": True, "net": True}})
    assert code == 0, err
    assert summary["stdout"] == "fine"
    text = _sandbox_text(events)
    assert "namespaces mount,pid,net" in text and "memory 256 MiB" in text and "cpu 50000/100000 us" in text


def test_limit_cgroups_go_when_the_child_is_killed(tmp_path: Path) -> None:
    """SIGKILL of the sandboxed child itself: the workload fails (137) and its cgroups go."""
    _limits_or_skip({"pids_max": 50, "memory_bytes": 128 << 20})
    before = _limit_dirs()
    code, summary, events, err = _run(tmp_path, "sleep 30 & kill -KILL $$",
                                      {"resources": {"pids_max": 50, "memory_bytes": 128 << 20},
                                       "namespaces": {"pid": True}})
    assert code == 1 and summary["exit_code"] == 137, err
    assert _limit_dirs() <= before


def test_limit_cgroups_go_when_gxo_is_stopped(tmp_path: Path) -> None:
    _limits_or_skip({"pids_max": 50})
    before = _limit_dirs()
    tag = f"300.{os.getpid()}3"
    pb = _playbook(tmp_path, [_wl("child", f"sleep {tag}", {"resources": {"pids_max": 50}})])
    proc = subprocess.Popen([str(BIN / "gxo"), "run", pb.name], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not _leftovers(tag) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _leftovers(tag) and _limit_dirs() - before  # running, in its own cgroup
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    assert not _leftovers(tag)
    assert _limit_dirs() <= before


def test_a_hand_made_plan_with_a_wrong_sandbox_value_is_refused() -> None:
    """A plan written by hand (or by another tool) whose sandbox values gxoc would have refused
    is refused before the run: a limit, a namespace or a path is never left out quietly."""
    from types import SimpleNamespace

    from gxo.runtime.sandbox import refusals, sandbox_of
    from gxo.runtime.support import _sandbox_fields

    def fields(sc: dict) -> list[str]:
        return _sandbox_fields(SimpleNamespace(name="w", seccomp_profile=None), sc)

    assert fields({"namespaces": {"net": "yes"}}) == [
        "workload 'w': security_context.namespaces {'net': 'yes'} is not a map of user, mount, pid, ipc, uts, "
        "net to booleans"]
    assert fields({"read_only_paths": ["etc"]}) == [
        "workload 'w': security_context: 'etc' is not an absolute path (read_only_paths, root_filesystem)"]
    assert fields({"read_only_paths": "/etc"}) == [  # one path, not a list: never read as none
        "workload 'w': security_context.read_only_paths '/etc' is not a list of absolute paths"]
    assert fields({"user": 65534}) == ["workload 'w': security_context.user 65534 is not a user name or uid"]
    assert fields({"namespaces": {"net": True}, "read_only_paths": ["/etc"], "user": "nobody"}) == []
    problems = refusals([("w", sandbox_of({"resources": {"pids_max": "20"}}))])
    assert problems == ["workload 'w': security_context.resources.pids_max must be a positive integer, got '20'"]
