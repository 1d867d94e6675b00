"""Module code of issue 4 against real files, processes and HTTP on loopback.

Contexts are built directly (gxo.runtime.module.Context) around a real Workspace.
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
import sys
import time
from pathlib import Path

import pytest
from gxo.runtime.module import (
    Context,
    ModuleError,
    SecurityError,
    ValidationError,
    load_module_class,
)
from gxo.runtime.workspace import Workspace
from gxo.stdlib import registry


class Log:
    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict]] = []

    def _add(self, level: str, msg: str, **attrs) -> None:
        self.records.append((level, msg, attrs))

    def debug(self, msg, **a): self._add("debug", msg, **a)  # noqa: E704
    def info(self, msg, **a): self._add("info", msg, **a)  # noqa: E704
    def warning(self, msg, **a): self._add("warning", msg, **a)  # noqa: E704
    def error(self, msg, **a): self._add("error", msg, **a)  # noqa: E704


@pytest.fixture
def ws(tmp_path):
    w = Workspace.create(str(tmp_path / "wsroot"))
    yield w
    w.remove()


@pytest.fixture
def make_ctx(ws, tmp_path):
    cleanups: list = []

    def make(dry_run: bool = False, plan_dir: str | None = None) -> Context:
        return Context(workload="w", run_id="run1", logger=Log(), workspace=ws,
                       state=dict, dry_run=dry_run, plan_dir=plan_dir or str(tmp_path),
                       on_run_end=cleanups.append)

    make.cleanups = cleanups  # type: ignore[attr-defined]
    return make


def run(module_name: str, ctx: Context, params: dict):
    cls = load_module_class(module_name)
    assert cls is not None, module_name
    mod = cls()
    if asyncio.iscoroutinefunction(mod.perform):
        return asyncio.run(mod.perform(ctx, params))
    return mod.perform(ctx, params)


def test_code_registered_and_marked_implemented():
    specs = registry()
    for name in ("exec", "filesystem:read", "filesystem:write", "filesystem:stat",
                 "filesystem:manage", "control:assert", "control:identity", "test:assert",
                 "test:mock_http_server", "http:request"):
        assert load_module_class(name).name == name
        assert specs[name].implemented
        # inline modules must be plain functions (run inside the scheduler step)
        if specs[name].inline:
            assert not asyncio.iscoroutinefunction(load_module_class(name).perform)


# --------------------------------------------------------------------------- exec


def test_exec_output_and_trailing_newlines(make_ctx, ws):
    script = "printf 'a\\nb\\n\\n'; echo err >&2; pwd"
    out = run("exec", make_ctx(), {"command": "sh", "args": ["-c", script]})
    assert out == {"stdout": f"a\nb\n\n{ws.path}", "stderr": "err",
                   "stdout_lines": ["a", "b", "", ws.path], "exit_code": 0}
    empty = run("exec", make_ctx(), {"command": "true"})
    assert empty == {"stdout": "", "stderr": "", "stdout_lines": [], "exit_code": 0}


def test_exec_argv_without_shell(make_ctx):
    out = run("exec", make_ctx(), {"command": "echo", "args": ["$HOME; rm -rf /", "*", 3]})
    assert out["stdout"] == "$HOME; rm -rf / * 3"


def test_exec_nonzero_exit_carries_summary(make_ctx):
    with pytest.raises(ModuleError) as info:
        run("exec", make_ctx(), {"command": "sh", "args": ["-c", "echo out; echo bad >&2; exit 3"]})
    assert "exited with code 3: bad" in str(info.value)
    assert info.value.summary == {"stdout": "out", "stderr": "bad", "stdout_lines": ["out"],
                                  "exit_code": 3}


def test_exec_not_found(make_ctx):
    for command in ("gxo-no-such-program", "/nonexistent/prog", "./missing.sh"):
        with pytest.raises(ModuleError, match="command not found") as info:
            run("exec", make_ctx(), {"command": command})
        assert info.value.summary["exit_code"] == -1


def test_exec_relative_command_runs_from_the_working_directory(make_ctx, ws, tmp_path):
    """``./prog`` and ``dir/prog`` resolve like a shell's: against the working directory (the
    workspace, or ``working_dir`` inside it), never against the plan's folder."""
    (tmp_path / "build").mkdir()
    for folder in (Path(ws.path), Path(ws.path) / "build"):
        folder.mkdir(exist_ok=True)
        script = folder / "hello.sh"
        script.write_text(f"#!/bin/sh\necho {folder.name} \"$1\"\n")
        script.chmod(0o755)
    out = run("exec", make_ctx(), {"command": "./hello.sh", "args": ["you"]})
    assert out["stdout"] == f"{Path(ws.path).name} you"
    out = run("exec", make_ctx(), {"command": "./hello.sh", "working_dir": "build"})
    assert out["stdout"] == "build "
    out = run("exec", make_ctx(), {"command": "build/hello.sh"})
    assert out["stdout"] == "build "


def test_exec_relative_command_is_not_looked_up_beside_the_plan(make_ctx, tmp_path):
    plan_dir = tmp_path / "plans"
    plan_dir.mkdir()
    script = plan_dir / "deploy.sh"
    script.write_text("#!/bin/sh\necho deployed\n")
    script.chmod(0o755)
    with pytest.raises(ModuleError, match=r"command not found: \./deploy\.sh \(looked up in the working "
                       r"directory .*; name a script beside the plan as \{\{ \._gxo\.plan_dir \}\}/deploy\.sh\)"):
        run("exec", make_ctx(plan_dir=str(plan_dir)), {"command": "./deploy.sh"})
    out = run("exec", make_ctx(plan_dir=str(plan_dir)), {"command": str(script)})  # what the template renders
    assert out["stdout"] == "deployed"


def test_exec_environment_replaces_everything(make_ctx, monkeypatch):
    monkeypatch.setenv("GXO_LEAK_CHECK", "leaked")
    out = run("exec", make_ctx(), {"command": "/usr/bin/env",
                                   "environment": ["A=1", "B=x=y", "EMPTY="]})
    assert sorted(out["stdout_lines"]) == ["A=1", "B=x=y", "EMPTY="]
    inherited = run("exec", make_ctx(), {"command": "env"})
    assert "GXO_LEAK_CHECK=leaked" in inherited["stdout_lines"]
    with pytest.raises(ValidationError, match="KEY=VALUE"):
        run("exec", make_ctx(), {"command": "env", "environment": ["no-equals"]})


def test_exec_working_dir_contained(make_ctx, ws):
    os.mkdir(os.path.join(ws.path, "sub"))
    out = run("exec", make_ctx(), {"command": "pwd", "working_dir": "sub"})
    assert out["stdout"] == os.path.join(ws.path, "sub")
    with pytest.raises(SecurityError):
        run("exec", make_ctx(), {"command": "pwd", "working_dir": "../"})
    with pytest.raises(SecurityError):
        run("exec", make_ctx(), {"command": "pwd", "working_dir": "/etc"})


def test_exec_dry_run(make_ctx, ws):
    out = run("exec", make_ctx(dry_run=True), {"command": "touch", "args": ["made"]})
    assert out == {"dry_run": True, "command": "touch", "args": ["made"], "stdout": "",
                   "stderr": "", "stdout_lines": [], "exit_code": 0}
    assert not os.path.exists(os.path.join(ws.path, "made"))


def test_exec_validation(make_ctx):
    with pytest.raises(ValidationError, match="missing required parameter 'command'"):
        run("exec", make_ctx(), {})
    with pytest.raises(ValidationError, match="'args'.*list"):
        run("exec", make_ctx(), {"command": "true", "args": "not-a-list"})
    with pytest.raises(ValidationError, match=r"'args'\[0\]"):
        run("exec", make_ctx(), {"command": "true", "args": [{"a": 1}]})


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaps yet counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _cancel_after_pids(ctx: Context, ws: Workspace, script: str) -> list[int]:
    async def main() -> list[int]:
        task = asyncio.ensure_future(load_module_class("exec")().perform(
            ctx, {"command": "sh", "args": ["-c", script]}))
        pid_file = os.path.join(ws.path, "pids")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            if os.path.exists(pid_file) and len(_read(pid_file).split()) == 2:
                break
        pids = [int(x) for x in _read(pid_file).split()]
        assert all(_alive(p) for p in pids)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return pids

    return asyncio.run(main())


def test_exec_cancel_kills_whole_process_group(make_ctx, ws):
    pids = _cancel_after_pids(make_ctx(), ws,
                              "sleep 100 & echo $! > pids.tmp; echo $$ >> pids.tmp; "
                              "mv pids.tmp pids; sleep 100")
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids), pids


def test_exec_cancel_sigkills_what_ignores_sigterm(make_ctx, ws, monkeypatch):
    from gxo.stdlib import core

    monkeypatch.setattr(core, "EXEC_KILL_GRACE_S", 0.3)
    started = time.monotonic()
    pids = _cancel_after_pids(make_ctx(), ws,
                              "trap '' TERM; sleep 100 & echo $! > pids.tmp; "
                              "echo $$ >> pids.tmp; mv pids.tmp pids; sleep 100")
    assert time.monotonic() - started < 15
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids), pids


def test_exec_cancelled_while_the_child_starts_stops_its_group_at_once(make_ctx, ws):
    """A cancellation at any point of the start (a signal to gxo right after the fork) ends the
    module at once and takes the whole group down, grandchildren holding the pipes included."""
    script = "sleep 60 & echo $! >> pids; echo $$ >> pids; wait"
    pid_file = os.path.join(ws.path, "pids")

    async def cancel_after(turns: int) -> float:
        task = asyncio.ensure_future(load_module_class("exec")().perform(
            make_ctx(), {"command": "sh", "args": ["-c", script]}))
        for _ in range(turns):
            await asyncio.sleep(0)
        task.cancel()
        t0 = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 20)
        return time.monotonic() - t0

    for turns in range(0, 12):
        if os.path.exists(pid_file):
            os.remove(pid_file)
        took = asyncio.run(cancel_after(turns))
        assert took < 10, f"cancelled after {turns} turns, the module took {took:.1f}s to stop"
        time.sleep(0.05)
        pids = [int(x) for x in _read(pid_file).split()] if os.path.exists(pid_file) else []
        deadline = time.monotonic() + 5
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(p) for p in pids), (turns, pids)


def test_exec_killed_by_signal_reports_128_plus(make_ctx):
    with pytest.raises(ModuleError, match="killed by SIGKILL") as info:
        run("exec", make_ctx(), {"command": "sh", "args": ["-c", "kill -9 $$"]})
    assert info.value.summary["exit_code"] == 137


# --------------------------------------------------------------------------- filesystem


def test_write_read_round_trip(make_ctx, ws):
    ctx = make_ctx()
    out = run("filesystem:write", ctx, {"path": "a/b/c.txt", "content": "héllo\n"})
    path = os.path.join(ws.path, "a", "b", "c.txt")
    assert out == {"path": path, "bytes_written": 7}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert run("filesystem:read", ctx, {"path": "a/b/c.txt"}) == {"content": "héllo\n"}
    run("filesystem:write", ctx, {"path": "a/b/c.txt", "content": "more", "append": True})
    assert run("filesystem:read", ctx, {"path": path})["content"] == "héllo\nmore"
    run("filesystem:write", ctx, {"path": "a/b/c.txt", "content": ""})
    assert run("filesystem:read", ctx, {"path": path})["content"] == ""


@pytest.mark.parametrize("mode,bits", [("0600", 0o600), ("755", 0o755), (0o640, 0o640),
                                       ("0o700", 0o700)])
def test_write_mode(make_ctx, ws, mode, bits):
    old = os.umask(0o077)
    try:
        run("filesystem:write", make_ctx(), {"path": "m", "content": "x", "mode": mode})
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(os.path.join(ws.path, "m")).st_mode) == bits
    assert run("filesystem:stat", make_ctx(), {"path": "m"})["mode"] == f"{bits:04o}"


def test_filesystem_validation_and_errors(make_ctx, ws):
    ctx = make_ctx()
    with pytest.raises(ValidationError, match="octal mode"):
        run("filesystem:write", ctx, {"path": "m", "content": "x", "mode": "rwx"})
    with pytest.raises(ValidationError, match="'content' must be a string"):
        run("filesystem:write", ctx, {"path": "m", "content": 5})
    with pytest.raises(ValidationError, match="missing required parameter 'path'"):
        run("filesystem:read", ctx, {})
    with pytest.raises(ModuleError, match="(?i)no such file"):
        run("filesystem:read", ctx, {"path": "missing"})
    with pytest.raises(ModuleError, match="is a directory"):
        run("filesystem:read", ctx, {"path": "."})
    with open(os.path.join(ws.path, "bin"), "wb") as f:
        f.write(b"\xff\xfe")
    with pytest.raises(ModuleError, match="not UTF-8"):
        run("filesystem:read", ctx, {"path": "bin"})
    with pytest.raises(ModuleError, match="(?i)no such file"):
        run("filesystem:stat", ctx, {"path": "missing"})


@pytest.mark.parametrize("module,extra", [("filesystem:read", {}),
                                          ("filesystem:write", {"content": "x"}),
                                          ("filesystem:stat", {}),
                                          ("filesystem:manage", {"state": "absent"})])
def test_filesystem_paths_contained(make_ctx, ws, tmp_path, module, extra):
    os.symlink(str(tmp_path), os.path.join(ws.path, "out"))
    for bad in ("../x", "/etc/passwd", "out/x"):
        with pytest.raises(SecurityError):
            run(module, make_ctx(), {"path": bad, **extra})


def test_stat(make_ctx, ws):
    run("filesystem:write", make_ctx(), {"path": "f", "content": "12345", "mode": "0640"})
    s = run("filesystem:stat", make_ctx(), {"path": "f"})
    assert s["path"] == os.path.join(ws.path, "f")
    assert s["size"] == 5 and s["mode"] == "0640" and s["is_dir"] is False
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", s["modified_time"])
    d = run("filesystem:stat", make_ctx(), {"path": "."})
    assert d["is_dir"] is True and d["mode"] == "0700"


def test_filesystem_dry_run_has_no_effect(make_ctx, ws):
    ctx = make_ctx(dry_run=True)
    assert run("filesystem:write", ctx, {"path": "d/f", "content": "x"}) == {
        "path": os.path.join(ws.path, "d", "f"), "bytes_written": 0, "dry_run": True}
    assert run("filesystem:read", ctx, {"path": "d/f"}) == {"content": "", "dry_run": True}
    assert run("filesystem:stat", ctx, {"path": "d/f"})["dry_run"] is True
    m = run("filesystem:manage", ctx, {"path": "d/g", "state": "present", "content": "x"})
    assert m == {"path": os.path.join(ws.path, "d", "g"), "state": "present", "changed": True,
                 "dry_run": True}
    assert os.listdir(ws.path) == []


def test_manage_present_idempotent_and_reverts_edits(make_ctx, ws):
    params = {"path": "etc/ntp.conf", "state": "present", "mode": "0644",
              "content": "server 0.pool.ntp.org iburst\nserver 1.pool.ntp.org iburst\n"}
    path = os.path.join(ws.path, "etc", "ntp.conf")
    first = run("filesystem:manage", make_ctx(), params)
    assert first == {"path": path, "state": "present", "changed": True}
    assert run("filesystem:manage", make_ctx(), params)["changed"] is False
    with open(path, "a") as f:
        f.write("server evil.example iburst\n")
    assert run("filesystem:manage", make_ctx(), params)["changed"] is True
    assert _read(path) == params["content"]
    os.chmod(path, 0o600)
    assert run("filesystem:manage", make_ctx(), params)["changed"] is True
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    os.unlink(path)
    assert run("filesystem:manage", make_ctx(), params)["changed"] is True
    assert run("filesystem:manage", make_ctx(), params)["changed"] is False
    # no content: touch-like, an existing file's content is left alone
    assert run("filesystem:manage", make_ctx(), {"path": path, "state": "present"})[
        "changed"] is False
    assert _read(path) == params["content"]


def test_manage_directory_and_absent(make_ctx, ws):
    ctx = make_ctx()
    assert run("filesystem:manage", ctx, {"path": "d/e", "state": "directory", "mode": 0o750})[
        "changed"] is True
    assert stat.S_IMODE(os.stat(os.path.join(ws.path, "d", "e")).st_mode) == 0o750
    assert run("filesystem:manage", ctx, {"path": "d/e", "state": "directory"})["changed"] is False
    run("filesystem:write", ctx, {"path": "d/e/f", "content": "x"})
    with pytest.raises(ModuleError, match="not a directory|a file is in the way"):
        run("filesystem:manage", ctx, {"path": "d/e/f", "state": "directory"})
    with pytest.raises(ModuleError, match="it is a directory"):
        run("filesystem:manage", ctx, {"path": "d/e", "state": "present"})
    with pytest.raises(ModuleError, match="not empty.*recursive"):
        run("filesystem:manage", ctx, {"path": "d", "state": "absent"})
    assert run("filesystem:manage", ctx, {"path": "d", "state": "absent", "recursive": True})[
        "changed"] is True
    assert not os.path.exists(os.path.join(ws.path, "d"))
    assert run("filesystem:manage", ctx, {"path": "d", "state": "absent"})["changed"] is False
    with pytest.raises(ValidationError, match="workspace itself"):
        run("filesystem:manage", ctx, {"path": ".", "state": "absent", "recursive": True})
    with pytest.raises(ValidationError, match="content.*present"):
        run("filesystem:manage", ctx, {"path": "x", "state": "directory", "content": "x"})
    with pytest.raises(ValidationError, match="'state' must be one of"):
        run("filesystem:manage", ctx, {"path": "x", "state": "gone"})


def test_manage_absent_removes_the_link_not_its_target(make_ctx, ws):
    run("filesystem:write", make_ctx(), {"path": "real/keep", "content": "x"})
    os.symlink("real", os.path.join(ws.path, "alias"))
    out = run("filesystem:manage", make_ctx(), {"path": "alias", "state": "absent"})
    assert out["changed"] is True and out["path"] == os.path.join(ws.path, "alias")
    assert not os.path.lexists(os.path.join(ws.path, "alias"))
    assert os.path.exists(os.path.join(ws.path, "real", "keep"))


def test_manage_owner_and_group(make_ctx, ws):
    ctx = make_ctx()
    me = os.geteuid()
    # already compliant: no change and no privilege needed
    out = run("filesystem:manage", ctx, {"path": "o", "state": "present", "owner": me,
                                         "group": str(os.getegid())})
    assert out["changed"] is True  # created
    assert run("filesystem:manage", ctx, {"path": "o", "state": "present", "owner": me})[
        "changed"] is False
    with pytest.raises(ValidationError, match="no such user"):
        run("filesystem:manage", ctx, {"path": "o", "state": "present",
                                       "owner": "gxo-no-such-user"})
    if me == 0:
        assert run("filesystem:manage", ctx, {"path": "o", "state": "present", "owner": 65534,
                                              "group": 65534})["changed"] is True
        st = os.stat(os.path.join(ws.path, "o"))
        assert (st.st_uid, st.st_gid) == (65534, 65534)
        assert run("filesystem:manage", ctx, {"path": "o", "state": "present",
                                              "owner": 65534})["changed"] is False
    else:
        with pytest.raises(ModuleError, match="not permitted"):
            run("filesystem:manage", ctx, {"path": "o", "state": "present", "owner": 0})


# --------------------------------------------------------------------------- control, test


@pytest.mark.parametrize("value", [True, 1, "x", "false", [0], {"a": 1}, 0.5])
def test_control_assert_truthy(make_ctx, value):
    assert run("control:assert", make_ctx(), {"condition": value}) == {
        "condition_met": True, "evaluated_value": value}


@pytest.mark.parametrize("value", [False, 0, 0.0, "", None, [], {}])
def test_control_assert_falsy(make_ctx, value):
    with pytest.raises(ValidationError, match="assertion failed"):
        run("control:assert", make_ctx(), {"condition": value})
    with pytest.raises(ValidationError, match="^disk too full$"):
        run("control:assert", make_ctx(), {"condition": value, "fail_message": "disk too full"})


def test_control_assert_needs_condition(make_ctx):
    with pytest.raises(ValidationError, match="'condition'"):
        run("control:assert", make_ctx(), {})


def test_control_identity(make_ctx):
    params = {"a": 1, "b": [1, {"c": None}]}
    out = run("control:identity", make_ctx(), params)
    assert out == params and out is not params
    assert run("control:identity", make_ctx(), {}) == {}


def test_test_assert_passing(make_ctx):
    assertions = [
        {"actual": {"a": [1, 2]}, "equal_to": {"a": [1, 2.0]}},
        {"actual": 1, "not_equal_to": True},
        {"actual": "hello world", "contains": "lo w"},
        {"actual": [1, {"x": 2}], "contains": {"x": 2}},
        {"actual": {"key": 1}, "contains": "key"},
        {"actual": "yes", "is_true": True},
        {"actual": 0, "is_true": False},
        {"actual": None, "is_nil": True},
        {"actual": "", "is_nil": False},
        {"actual": "v1.2.3", "matches_regex": r"^v\d+\.\d+"},
        {"actual": 404, "matches_regex": "^4"},
    ]
    assert run("test:assert", make_ctx(), {"assertions": assertions}) == {
        "assertions_passed": len(assertions)}


@pytest.mark.parametrize("assertion,message", [
    ({"actual": "a", "equal_to": "b"}, 'expected "a" to equal "b"'),
    ({"actual": 1, "equal_to": True}, "expected 1 to equal true"),
    ({"actual": [1], "not_equal_to": [1]}, "not to equal"),
    ({"actual": "abc", "contains": "z"}, "to contain"),
    ({"actual": [1, 2], "contains": 3}, "to contain 3"),
    ({"actual": 0, "is_true": True}, "to be truthy"),
    ({"actual": 1, "is_nil": True}, "to be null"),
    ({"actual": "abc", "matches_regex": "^b"}, "to match /^b/"),
])
def test_test_assert_failures(make_ctx, assertion, message):
    params = {"assertions": [{"actual": 1, "equal_to": 1}, assertion]}
    with pytest.raises(ValidationError, match=r"^assertion failed: assertions\[1\]: ") as info:
        run("test:assert", make_ctx(), params)
    assert message in str(info.value)


@pytest.mark.parametrize("assertion,message", [
    ({"actual": 1}, "exactly one operator"),
    ({"actual": 1, "equal_to": 1, "is_nil": False}, "exactly one operator"),
    ({"equal_to": 1}, "missing 'actual'"),
    ({"actual": 1, "bogus": 1}, "unknown key 'bogus'"),
    ({"actual": "x", "matches_regex": "("}, "invalid regular expression"),
])
def test_test_assert_bad_assertions(make_ctx, assertion, message):
    with pytest.raises(ValidationError, match=re.escape(message)):
        run("test:assert", make_ctx(), {"assertions": [assertion]})
    with pytest.raises(ValidationError, match="non-empty list"):
        run("test:assert", make_ctx(), {"assertions": []})


if sys.platform != "linux":  # pragma: no cover - /proc is used by the process-group tests
    pytestmark = pytest.mark.skip("Linux only")
