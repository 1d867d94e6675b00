"""Modules that run Python code, under a security_context: their perform runs in a sandboxed
worker process (gxo.runtime.sandbox.worker) against the real kernel.

Each test runs ``gxo run --json`` as a user does and looks at what the worker saw (its
``/proc/self/status``, read by ``filesystem:read`` with ``--allow-path /proc``), what came back
(summaries, errors), and what was left behind.  Needs Linux with seccomp and the launcher built
at install; elsewhere skipped with the reason (failed under ``GXO_TEST_SERVICES=require``).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from acceptance.harness import HttpMock, close_proc, gxo_run, pid_alive, read_events_until, run_tool, spawn, wait_until
from services import _missing


@pytest.fixture(autouse=True)
def _needs_seccomp(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from gxo.runtime.sandbox import _status_field, launcher_path

    if not sys.platform.startswith("linux") or _status_field("Seccomp") is None:
        _missing("this kernel has no seccomp")
    if launcher_path() is None:
        _missing("the sandbox launcher gxo-sandbox-exec is not built (install with a C compiler)")
    monkeypatch.setenv("GXO_WORKSPACE_ROOT", str(tmp_path_factory.mktemp("ws") / "workspaces"))


def _playbook(tmp_path: Path, *workloads: dict[str, Any], vars: dict[str, Any] | None = None) -> Path:
    wls = [{"lifecycle": {"policy": "run_once"}, **w} for w in workloads]
    doc = {"name": "worker", "schemaVersion": "1.0.0", **({"vars": vars} if vars else {}), "workloads": wls}
    path = tmp_path / "p.yaml"
    path.write_text(json.dumps(doc, indent=1), "utf-8")  # JSON is YAML
    return path


def _wl(name: str, module: str, params: dict[str, Any], sc: dict[str, Any] | None = {"seccomp": "default"},
        **more: Any) -> dict[str, Any]:
    w: dict[str, Any] = {"name": name, "register": name, "process": {"module": module, "params": params}, **more}
    if sc is not None:
        w["security_context"] = sc
    return w


def _summary(run: Any, name: str) -> Any:
    ends = run.of("ModuleExecutionEnd", name)
    return ends[-1]["summary"] if ends else None


def _worker_logs(run: Any, name: str) -> list[dict[str, Any]]:
    return [e for e in run.of("Log", name) if e.get("message") == "sandboxed worker started"]


def _status(text: str) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


# --------------------------------------------------------------------------- it runs there


def test_a_module_runs_in_the_worker_and_its_summary_comes_back(tmp_path: Path) -> None:
    pb = _playbook(tmp_path,
                   _wl("write", "filesystem:write", {"path": "out.txt", "content": "hello"}),
                   _wl("read", "filesystem:read", {"path": "out.txt"}, None, needs=["write"]))
    run = gxo_run(pb, "-v", cwd=tmp_path)
    assert run.rc == 0, run.explain()
    assert _summary(run, "write")["bytes_written"] == 5
    assert _summary(run, "read")["content"] == "hello"  # written by the worker in the run's workspace
    [started] = _worker_logs(run, "write")
    assert started["module"] == "filesystem:write" and started["sandbox"] == "seccomp default, no_new_privs on (worker process)"
    assert _worker_logs(run, "read") == []  # no security_context: in gxo's own process, as before


@pytest.mark.parametrize("profile", ["default", "default-minimal"])
def test_the_worker_has_no_new_privs_and_the_seccomp_filter(tmp_path: Path, profile: str) -> None:
    pb = _playbook(tmp_path, _wl("status", "filesystem:read", {"path": "/proc/self/status"}, {"seccomp": profile}),
                   _wl("host", "filesystem:read", {"path": "/proc/self/status"}, None))
    run = gxo_run(pb, "--allow-path", "/proc", cwd=tmp_path)
    assert run.rc == 0, run.explain()
    inside = _status(_summary(run, "status")["content"])
    assert inside["Seccomp"] == "2" and inside["NoNewPrivs"] == "1"
    host = _status(_summary(run, "host")["content"])
    assert inside["Pid"] != host["Pid"]  # another process: gxo itself is not filtered
    assert inside["PPid"] == host["Pid"]


def test_http_request_runs_in_the_worker(tmp_path: Path) -> None:
    with HttpMock([200], body='{"ok": true, "n": 7}') as mock:
        pb = _playbook(tmp_path, _wl("get", "http:request", {"url": mock.url + "/thing"}))
        run = gxo_run(pb, "-v", cwd=tmp_path)
    assert run.rc == 0, run.explain()
    summary = _summary(run, "get")
    assert summary["status_code"] == 200 and summary["json_body"] == {"ok": True, "n": 7}
    assert [c[2] for c in mock.calls] == ["/thing"]
    assert _worker_logs(run, "get")


# --------------------------------------------------------------------------- failures


def test_a_failing_module_gives_its_error_and_summary(tmp_path: Path) -> None:
    with HttpMock([503]) as mock:
        pb = _playbook(tmp_path, _wl("get", "http:request", {"url": mock.url}))
        run = gxo_run(pb, cwd=tmp_path)
    assert run.rc != 0
    assert run.statuses["get"] == "Failed"
    error = run.end("get")["error"]
    assert "503" in error and "Traceback" not in run.stderr
    [end] = run.of("ModuleExecutionEnd", "get")
    assert end["failed"] is True and end["summary"]["status_code"] == 503


def test_a_validation_and_a_security_error_come_back_as_such(tmp_path: Path) -> None:
    pb = _playbook(tmp_path,
                   _wl("escape", "filesystem:write", {"path": "../../../../etc/gxo-worker-test", "content": "x"},
                       ignore_errors=True),
                   _wl("bad", "filesystem:write", {"path": "a.txt", "content": "x", "mode": "{{ .mode }}"},
                       ignore_errors=True),
                   vars={"mode": "0644"})
    run = gxo_run(pb, "--var", "mode=rwx", cwd=tmp_path)  # a value only the module sees as bad
    assert run.statuses == {"escape": "Failed", "bad": "Failed"}, run.explain()
    # the workspace is resolved in the worker as in gxo: contained, with the same message
    assert "is outside the workspace" in run.end("escape")["error"]
    assert "mode" in run.end("bad")["error"]
    assert not os.path.exists("/etc/gxo-worker-test")


class _Slow:
    """A loopback HTTP server whose answers take ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                time.sleep(delay)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_worker_killed_by_a_signal_is_a_clear_error(tmp_path: Path) -> None:
    slow = _Slow(30)
    proc = None
    try:
        pb = _playbook(tmp_path, _wl("get", "http:request", {"url": slow.url, "timeout": "60s"}))
        proc = spawn("gxo", "run", "--json", "-v", pb, cwd=tmp_path)
        seen = read_events_until(proc, lambda e: e.get("message") == "sandboxed worker started")
        pid = seen[-1]["pid"]
        os.kill(pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
        events = [json.loads(line) for line in out.splitlines() if line.strip()]
        [end] = [e for e in events if e["type"] == "WorkloadEnd"]
        assert end["final_status"] == "Failed"
        assert end["error"] == "the sandboxed worker of module http:request was killed by SIGKILL"
        assert b"Traceback" not in err
    finally:
        slow.close()
        if proc is not None:
            close_proc(proc)


def test_a_timeout_kills_the_worker(tmp_path: Path) -> None:
    slow = _Slow(30)
    try:
        pb = _playbook(tmp_path, _wl("get", "http:request", {"url": slow.url, "timeout": "60s"}, timeout="1s"))
        t0 = time.monotonic()
        run = gxo_run(pb, "-v", cwd=tmp_path)
        took = time.monotonic() - t0
    finally:
        slow.close()
    assert run.statuses["get"] == "Failed" and "timed out" in run.end("get")["error"], run.explain()
    assert took < 15
    [started] = _worker_logs(run, "get")
    assert wait_until(lambda: not pid_alive(started["pid"]), timeout=5)


def test_secrets_stay_redacted_in_errors(tmp_path: Path) -> None:
    secret = "s3cr3t-w0rker-value"
    pb = _playbook(tmp_path, _wl("read", "filesystem:read", {"path": "missing/${WORKER_TOKEN}.txt"}))
    run = gxo_run(pb, "-v", cwd=tmp_path, env={"WORKER_TOKEN": secret})
    assert run.statuses["read"] == "Failed", run.explain()
    assert secret.encode() not in run.raw
    assert "[REDACTED]" in run.end("read")["error"]


# --------------------------------------------------------------------------- which modules


REFUSED = [
    ("template:render", {"template": "x"}, "runs inside the scheduler step"),
    ("connection:write", {"connection_id": "c", "data": "x"}, "uses a connection kept by the run"),
    ("ssh:connect", {"host": "h", "user": "u", "password": "p"}, "the connection it opens is kept by the run"),
    ("test:mock_http_server", {"handlers": [{"request": {"path": "/"}, "response": {"status_code": 200}}]}, "keeps serving after perform"),
    ("http:request", {"url": "http://x", "success_when": "{{ .status_code == 200 }}"},
     "'success_when' is evaluated by gxo while the module runs"),
    ("data:generate_from_list", {"items": [1]}, "reads or writes a stream"),
]


@pytest.mark.parametrize("module, params, why", REFUSED, ids=[r[0] for r in REFUSED])
def test_check_refuses_a_security_context_only_where_a_worker_cannot_run(tmp_path: Path, module: str,
                                                                         params: dict, why: str) -> None:
    pb = _playbook(tmp_path, _wl("boxed", module, params), _wl("ok", "filesystem:write", {"path": "a", "content": "b"}))
    res = run_tool("gxoc", "check", pb, cwd=tmp_path)
    assert res.rc == 1, res.explain()
    errors = [line for line in res.stdout.splitlines() + res.stderr.splitlines() if "error[" in line]
    assert len(errors) == 1, errors
    assert f"security_context on module '{module}' is not implemented" in errors[0] and why in errors[0]


def test_the_modules_a_worker_runs() -> None:
    """The rule over every built-in module, with the params a playbook must give."""
    from gxo.runtime.support import worker_refusal
    from gxo.stdlib._spec import registry

    allowed = {name for name, spec in registry().items()
               if spec.implemented and worker_refusal(spec, spec.params_schema.get("required") or ()) is None}
    assert allowed == {"exec", "dns:query", "filesystem:manage", "filesystem:read", "filesystem:stat",
                       "filesystem:write", "http:request", "ssh:command", "ssh:download", "ssh:script",
                       "ssh:upload"}


def test_a_dry_run_starts_no_worker_and_v_shows_the_sandbox(tmp_path: Path) -> None:
    pb = _playbook(tmp_path, _wl("write", "filesystem:write", {"path": "out.txt", "content": "hello"}))
    dry = gxo_run(pb, "--dry-run", "-v", cwd=tmp_path)
    assert dry.rc == 0, dry.explain()
    assert _summary(dry, "write")["dry_run"] is True and _worker_logs(dry, "write") == []
    run = gxo_run(pb, "-v", json_events=False, cwd=tmp_path)
    assert run.rc == 0, run.explain()
    assert "sandbox: seccomp default, no_new_privs on (worker process)" in run.stdout + run.stderr


@pytest.mark.parametrize("data, why", [
    ((1 << 30).to_bytes(4, "big"), "over the 64 MiB limit"),
    (b"\x00\x00\x00\x05{\"a\"", "cut short"),
    (b"\x00\x00\x00\x03abc", "not JSON"),
    (b"\x00\x00\x00\x02[]", "not a one-key object"),
    (len(b"[" * 100000).to_bytes(4, "big") + b"[" * 100000, "not JSON"),
])
def test_the_parent_takes_only_bounded_json_frames(data: bytes, why: str) -> None:
    import asyncio

    from gxo.runtime.sandbox.worker import _Broken, _read_frame

    async def read() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        await _read_frame(reader)

    with pytest.raises(_Broken, match=why):
        asyncio.run(read())


def test_a_syscall_killed_by_the_profile_is_named(tmp_path: Path) -> None:
    (tmp_path / "profile.json").write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["fchmod"], "action": "SCMP_ACT_KILL_PROCESS"}]}), "utf-8")
    pb = _playbook(tmp_path, _wl("write", "filesystem:write", {"path": "a.txt", "content": "x"},
                                 {"seccomp_profile_path": "profile.json"}))
    run = gxo_run(pb, cwd=tmp_path)
    assert run.statuses["write"] == "Failed", run.explain()
    error = run.end("write")["error"]
    assert error.startswith("the sandboxed worker of module filesystem:write was killed by SIGSYS (")
    assert "denied by seccomp profile profile.json (sha256 " in error


# --------------------------------------------------------------------------- the other keys


def _can_unshare() -> None:
    import subprocess

    from gxo.runtime.sandbox import launcher_path

    probe = subprocess.run([str(launcher_path()), "--unshare", "user,mount,net", "--probe", "--", "/bin/true",
                            "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        _missing(f"this machine cannot make namespaces: {probe.stderr.strip()}")


def test_a_worker_in_a_network_namespace_cannot_reach_the_host(tmp_path: Path) -> None:
    _can_unshare()
    with HttpMock([200]) as mock:
        pb = _playbook(tmp_path, _wl("get", "http:request", {"url": mock.url, "timeout": "5s"},
                                     {"seccomp": "default", "namespaces": {"net": True}}),
                       _wl("status", "filesystem:read", {"path": "/proc/self/status"},
                           {"namespaces": {"net": True, "pid": True}}, ignore_errors=True))
        run = gxo_run(pb, "-v", "--allow-path", "/proc", cwd=tmp_path)
    assert run.statuses["get"] == "Failed", run.explain()
    assert mock.calls == []  # the request never left the worker's own network
    [started] = _worker_logs(run, "get")
    assert "namespaces" in started["sandbox"] and "net" in started["sandbox"]
    status = _status(_summary(run, "status")["content"])
    assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2"
    assert status["NSpid"].split()[-1] in ("1", "2")  # its own pid namespace


def test_a_worker_over_its_memory_limit_fails_with_the_reason(tmp_path: Path) -> None:
    from services import need_cgroup

    need_cgroup()
    big = tmp_path / "big"
    big.mkdir()
    with open(big / "blob", "wb") as fh:  # 200 MiB of data the module reads into memory
        fh.truncate(200 << 20)
    pb = _playbook(tmp_path, _wl("read", "filesystem:read", {"path": str(big / "blob")},
                                 {"resources": {"memory_bytes": 64 << 20}}))
    run = gxo_run(pb, "--allow-path", str(big), cwd=tmp_path)
    assert run.statuses["read"] == "Failed", run.explain()
    error = run.end("read")["error"]
    assert error.startswith("the sandboxed worker of module filesystem:read"), error
    assert "memory limit 64 MiB" in error, error


def test_a_worker_as_another_user_runs_or_is_refused_before_the_run(tmp_path: Path) -> None:
    """``user: nobody``: the worker runs as 65534 when that user can reach gxo's Python; where
    it cannot (pyenv under a 0700 /root), the plan is refused before anything runs."""
    from gxo.runtime.sandbox.worker import unreachable_for

    if os.geteuid() != 0:
        _missing("switching users needs gxo to run as root")
    _can_unshare()
    pb = _playbook(tmp_path, _wl("status", "filesystem:read", {"path": "/proc/self/status"}, {"user": "nobody"}))
    run = gxo_run(pb, "--allow-path", "/proc", cwd=tmp_path)
    why = unreachable_for("nobody")
    if why is None:
        assert run.rc == 0, run.explain()
        assert _status(_summary(run, "status")["content"])["Uid"].split()[0] == "65534"
    else:
        assert run.rc == 3 and run.of("ModuleExecutionStart") == [], run.explain()
        assert f"gxo: plan refused: workload 'status': {why}" in run.stderr
