"""The exec sandbox against the real kernel: no_new_privs and seccomp profiles.

Each test runs ``gxo run`` (or ``gxoc build`` + ``gxo exec``) as a user does, and looks at what
the child process saw (``/proc/self/status``) or what it was refused.  Needs Linux with seccomp
and the launcher built at install; elsewhere the tests are skipped with the reason (and fail
under ``GXO_TEST_SERVICES=require``).  Programs come from Debian's packages (util-linux for
``unshare`` and ``mount``, strace).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from golden_util import run_gxoc
from services import _missing, need_program

BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True)
def _needs_seccomp() -> None:
    from gxo.runtime.sandbox import _status_field, launcher_path

    if not sys.platform.startswith("linux") or _status_field("Seccomp") is None:
        _missing("this kernel has no seccomp")
    if launcher_path() is None:
        _missing("the sandbox launcher gxo-sandbox-exec is not built (install with a C compiler)")


def _gxo(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "gxo"), *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


def _playbook(tmp_path: Path, command: str, args: list[str], security_context: dict | None = None,
              name: str = "p.yaml") -> Path:
    wl = {"name": "child", "lifecycle": {"policy": "run_once"}, "register": "out",
          "process": {"module": "exec", "params": {"command": command, "args": args}}}
    if security_context is not None:
        wl["security_context"] = security_context
    doc = {"name": "sandbox", "schemaVersion": "1.0.0", "workloads": [wl]}
    path = tmp_path / name
    path.write_text(json.dumps(doc, indent=1), "utf-8")  # JSON is YAML
    return path


def _run(tmp_path: Path, command: str, args: list[str], security_context: dict | None = None):
    """``gxo run --json``: (exit code, the child's WorkloadEnd/ModuleExecutionEnd summary,
    the events, stderr)."""
    pb = _playbook(tmp_path, command, args, security_context)
    proc = _gxo(["run", "--json", pb.name], tmp_path)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    summary = next((e.get("summary") for e in events if e["type"] == "ModuleExecutionEnd"), None)
    return proc.returncode, summary, events, proc.stderr


def _status(summary: dict) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in summary["stdout"].splitlines() if ":\t" in line)


@pytest.mark.parametrize("security_context", [None, {"seccomp": "default"}, {"seccomp": "default-minimal"},
                                              {"seccomp_profile_path": "default"}, {"no_new_privileges": True}])
def test_exec_child_is_filtered_with_no_new_privs(tmp_path: Path, security_context: dict | None) -> None:
    code, summary, events, err = _run(tmp_path, "cat", ["/proc/self/status"], security_context)
    assert code == 0, err
    status = _status(summary)
    assert status["Seccomp"] == "2"
    assert status["NoNewPrivs"] == "1"
    started = [e for e in events if e["type"] == "Log" and e.get("message") == "started"]
    expected = "default-minimal" if security_context == {"seccomp": "default-minimal"} else "default"
    assert started[0]["sandbox"] == f"seccomp {expected}, no_new_privs on"


def test_unconfined_has_no_filter_and_no_new_privs_can_be_off(tmp_path: Path) -> None:
    code, summary, _, err = _run(tmp_path, "cat", ["/proc/self/status"],
                                 {"seccomp": "unconfined", "no_new_privileges": False})
    assert code == 0, err
    status = _status(summary)
    assert status["Seccomp"] == "0"
    assert status["NoNewPrivs"] == "0"


def test_filter_without_no_new_privs(tmp_path: Path) -> None:
    """As root (CAP_SYS_ADMIN) a filter may be loaded without no_new_privs."""
    if os.geteuid() != 0:
        pytest.skip("needs CAP_SYS_ADMIN")
    code, summary, _, err = _run(tmp_path, "cat", ["/proc/self/status"], {"no_new_privileges": False})
    assert code == 0, err
    assert _status(summary)["Seccomp"] == "2"
    assert _status(summary)["NoNewPrivs"] == "0"


@pytest.mark.parametrize("security_context", [None, {"seccomp": "default"}, {"seccomp": "default-minimal"}])
def test_user_namespace_denied(tmp_path: Path, security_context: dict | None) -> None:
    need_program("unshare", "util-linux")
    code, summary, _, _ = _run(tmp_path, "unshare", ["-r", "true"], security_context)
    assert code == 1
    assert "Operation not permitted" in summary["stderr"]


def test_user_namespace_allowed_unconfined(tmp_path: Path) -> None:
    need_program("unshare", "util-linux")
    # the same program runs when nothing filters it (unless this machine forbids user namespaces)
    if subprocess.run(["unshare", "-r", "true"], capture_output=True).returncode != 0:
        pytest.skip("this machine does not allow unprivileged user namespaces at all")
    code, summary, _, err = _run(tmp_path, "unshare", ["-r", "true"], {"seccomp": "unconfined"})
    assert code == 0, err
    assert summary["exit_code"] == 0


def test_mount_denied(tmp_path: Path) -> None:
    need_program("mount", "mount")
    target = tmp_path / "mnt"
    target.mkdir()
    code, summary, _, _ = _run(tmp_path, "mount", ["-t", "tmpfs", "none", str(target)])
    assert code == 1
    assert summary["exit_code"] != 0
    assert not os.path.ismount(target)


def test_ptrace_denied(tmp_path: Path) -> None:
    need_program("strace", "strace")
    code, summary, _, _ = _run(tmp_path, "strace", ["-p", "1"])
    assert code == 1
    assert "Operation not permitted" in summary["stderr"]


def test_unconfined_is_a_check_warning(tmp_path: Path) -> None:
    pb = _playbook(tmp_path, "true", [], {"seccomp": "unconfined"})
    code, out, _ = run_gxoc(["check", pb.name], tmp_path)
    assert code == 0
    assert "warning[seccomp-unconfined]" in out


def test_a_stream_module_cannot_be_sandboxed(tmp_path: Path) -> None:
    """Every key is applied; a module whose records pass through gxo's own process cannot take
    a security_context, and check says why."""
    pb = _playbook(tmp_path, "true", [], {"seccomp": "default", "resources": {"cpu_weight": 50},
                                          "namespaces": {"pid": True}})
    code, out, _ = run_gxoc(["check", pb.name], tmp_path)
    assert code == 0, out
    doc = json.loads(pb.read_text("utf-8"))
    doc["workloads"][0]["process"] = {"module": "data:generate_from_list", "params": {"items": [1]}}
    pb.write_text(json.dumps(doc), "utf-8")
    code, out, _ = run_gxoc(["check", pb.name], tmp_path)
    assert code == 1
    assert ("error[not-implemented]: security_context on module 'data:generate_from_list' is not implemented: "
            "it cannot run in a sandboxed worker process: it reads or writes a stream") in out


PROFILE = """\
{
  "defaultAction": "SCMP_ACT_ALLOW",
  "syscalls": [
    {"names": ["unshare", "mount"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
    {"names": ["getcwd"], "action": "SCMP_ACT_KILL_PROCESS"}
  ]
}
"""


def test_profile_unknown_syscall_is_a_check_error(tmp_path: Path) -> None:
    (tmp_path / "profile.json").write_text(PROFILE.replace('"mount"', '"mount", "no_such_call"'), "utf-8")
    pb = _playbook(tmp_path, "true", [], {"seccomp_profile_path": "profile.json"})
    code, out, _ = run_gxoc(["check", pb.name], tmp_path)
    assert code == 1
    assert "profile.json:4:36: error[seccomp-profile]: unknown syscall 'no_such_call'" in out


def test_profile_bad_json_is_a_check_error(tmp_path: Path) -> None:
    (tmp_path / "profile.json").write_text('{"defaultAction": "SCMP_ACT_ALLOW",\n "syscalls": [}\n', "utf-8")
    pb = _playbook(tmp_path, "true", [], {"seccomp_profile_path": "profile.json"})
    code, out, _ = run_gxoc(["check", pb.name], tmp_path)
    assert code == 1
    assert "profile.json:2:15: error[seccomp-profile]: the seccomp profile is not valid JSON" in out


def test_profile_is_pinned_in_the_plan(tmp_path: Path) -> None:
    """The plan embeds the checked profile and its digest: a profile file changed after the
    build changes nothing (the run applies what gxoc checked)."""
    need_program("unshare", "util-linux")
    import hashlib

    (tmp_path / "profile.json").write_text(PROFILE, "utf-8")
    pb = _playbook(tmp_path, "unshare", ["-r", "true"], {"seccomp_profile_path": "profile.json"})
    code, out, err = run_gxoc(["build", "--no-native", pb.name, "-o", "p.gxp"], tmp_path)
    assert code == 0, out + err
    manifest = json.loads(zipfile.ZipFile(tmp_path / "p.gxp").read("manifest.json"))
    pinned = manifest["workloads"][0]["seccomp_profile"]
    assert pinned["path"] == "profile.json"
    assert pinned["sha256"] == hashlib.sha256(PROFILE.encode()).hexdigest()
    assert pinned["profile"]["rules"][0]["names"] == ["unshare", "mount"]
    (tmp_path / "profile.json").write_text('{"defaultAction": "SCMP_ACT_ALLOW"}', "utf-8")
    proc = _gxo(["exec", "--json", "p.gxp"], tmp_path)
    assert proc.returncode == 1
    assert "unshare failed: Operation not permitted" in proc.stdout
    assert f"profile profile.json (sha256 {pinned['sha256'][:12]})" in proc.stdout


def test_kill_action_names_sigsys(tmp_path: Path) -> None:
    (tmp_path / "profile.json").write_text(PROFILE, "utf-8")
    code, summary, events, _ = _run(tmp_path, "pwd", ["-P"], {"seccomp_profile_path": "profile.json"})
    assert code == 1
    end = next(e for e in events if e["type"] == "WorkloadEnd")
    # the kernel's audit record names the syscall when gxo may read it (/dev/kmsg: CAP_SYSLOG)
    readable = os.access("/dev/kmsg", os.R_OK)
    what = "syscall getcwd denied" if readable else "a syscall denied"
    assert f"killed by SIGSYS ({what} by seccomp profile profile.json (sha256 " in end["error"]
    assert summary["exit_code"] == 128 + 31


def test_missing_launcher_refuses_before_the_run(tmp_path: Path) -> None:
    pb = _playbook(tmp_path, "touch", ["ran"])
    proc = _gxo(["run", pb.name], tmp_path, GXO_SANDBOX_LAUNCHER=str(tmp_path / "absent"))
    assert proc.returncode == 3
    assert "the sandbox launcher gxo-sandbox-exec is not installed" in proc.stderr
    assert not list(tmp_path.rglob("ran"))


def test_e25_seccomp_demo(tmp_path: Path) -> None:
    """E25 (c): the sandboxed unshare fails (ignored), the unconfined one runs."""
    need_program("unshare", "util-linux")
    if subprocess.run(["unshare", "--user", "true"], capture_output=True).returncode != 0:
        pytest.skip("this machine does not allow unprivileged user namespaces at all")
    example = Path(__file__).resolve().parents[1] / "examples" / "e25_mvk_demos.yaml"
    proc = _gxo(["run", "--json", str(example)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    ends = {e["workload"]: e for e in map(json.loads, proc.stdout.splitlines()) if e["type"] == "WorkloadEnd"}
    assert ends["unshare_sandboxed"]["final_status"] == "Failed" and ends["unshare_sandboxed"]["ignored"]
    assert ends["unshare_unconfined"]["final_status"] == "Completed"


RECORD_MODULES = """\
import atexit, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write("\\n".join(sorted(sys.modules))))
from gxo.runtime.cli import main
sys.argv[0] = "gxo"
sys.exit(main())
"""


def _modules_of_exec(tmp_path: Path, pb: Path, tag: str) -> set[str]:
    """The modules a ``gxo exec`` of ``pb`` (built here) loaded by its end."""
    code, out, err = run_gxoc(["build", "--no-native", pb.name, "-o", f"{tag}.gxp"], tmp_path)
    assert code == 0, out + err
    listing = tmp_path / f"modules-{tag}.txt"
    proc = subprocess.run([sys.executable, "-c", RECORD_MODULES, str(listing), "exec", f"{tag}.gxp"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return set(listing.read_text().split("\n"))


def test_sandbox_code_stays_off_the_cold_path(tmp_path: Path) -> None:
    """``gxo exec`` of a plan without exec loads none of the sandbox; of an exec plan whose
    filter is cached, no pyseccomp (its import runs ldconfig)."""
    doc = {"name": "noexec", "schemaVersion": "1.0.0", "workloads": [
        {"name": "a", "lifecycle": {"policy": "run_once"},
         "process": {"module": "control:assert", "params": {"condition": "true"}}}]}
    (tmp_path / "noexec.yaml").write_text(json.dumps(doc), "utf-8")
    mods = _modules_of_exec(tmp_path, tmp_path / "noexec.yaml", "noexec")
    assert "gxo.runtime.sandbox" not in mods and "pyseccomp" not in mods
    pb = _playbook(tmp_path, "true", [], {"seccomp": "default-minimal"})
    _modules_of_exec(tmp_path, pb, "first")  # compiles and caches the filter
    mods = _modules_of_exec(tmp_path, pb, "second")
    assert "gxo.runtime.sandbox" in mods
    assert "pyseccomp" not in mods


def test_hand_made_plan_without_the_embedded_profile_is_refused(tmp_path: Path) -> None:
    """A plan naming a profile file that gxoc did not embed (or an unknown built-in) is refused
    before the run, never run with another profile."""
    from gxo.runtime.plan import decode_plan
    from gxo.runtime.support import unsupported

    (tmp_path / "profile.json").write_text(PROFILE, "utf-8")
    pb = _playbook(tmp_path, "true", [], {"seccomp_profile_path": "profile.json"})
    code, out, err = run_gxoc(["build", "--no-native", pb.name, "-o", "p.gxp"], tmp_path)
    assert code == 0, out + err
    manifest = json.loads(zipfile.ZipFile(tmp_path / "p.gxp").read("manifest.json"))
    assert unsupported(decode_plan(json.dumps(manifest).encode())) == []
    manifest["workloads"][0]["seccomp_profile"] = None
    assert unsupported(decode_plan(json.dumps(manifest).encode())) == [
        "workload 'child': security_context.seccomp_profile_path 'profile.json' has no profile embedded in "
        "the plan (build it with gxoc build)"]
    manifest["workloads"][0]["security_context"] = {"seccomp": "strict"}
    assert unsupported(decode_plan(json.dumps(manifest).encode())) == [
        "workload 'child': security_context.seccomp 'strict' is not a built-in profile"]


def test_v_shows_a_sandbox_other_than_the_baseline(tmp_path: Path) -> None:
    from gxo.runtime.output import BASELINE_SANDBOX_TEXT
    from gxo.runtime.sandbox import BASELINE_SANDBOX

    assert BASELINE_SANDBOX.describe() == BASELINE_SANDBOX_TEXT
    pb = _playbook(tmp_path, "true", [], {"seccomp": "default-minimal"})
    proc = _gxo(["run", "-v", pb.name], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "         sandbox: seccomp default-minimal, no_new_privs on" in proc.stdout.splitlines()
    plain = _playbook(tmp_path, "true", [], name="plain.yaml")
    assert "         sandbox:" not in _gxo(["run", "-v", plain.name], tmp_path).stdout
    assert "         sandbox: seccomp default, no_new_privs on" in \
        _gxo(["run", "-vv", plain.name], tmp_path).stdout.splitlines()
