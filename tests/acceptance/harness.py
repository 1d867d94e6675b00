"""Helpers of the acceptance tests: run the real ``gxoc``/``gxo`` in subprocesses and read
what they write (the ``--json`` event stream, the recap, exit codes).

Nothing of GXO is mocked: playbooks are compiled by ``gxoc build`` (or ``gxo run``), run by
``gxo exec`` in their own process, against real files, processes and loopback HTTP.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

HERE = Path(__file__).resolve().parent
PLAYBOOKS = HERE / "playbooks"
ROOT = HERE.parents[1]
EXAMPLES = ROOT / "examples"
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    assert found, f"{name} is not installed next to {sys.executable} nor on PATH"
    return found


@dataclass
class Run:
    """One finished ``gxo`` process."""

    args: list[str]
    rc: int
    stdout: str
    stderr: str
    events: list[dict[str, Any]] = field(default_factory=list)
    raw: bytes = b""  # every byte written to stdout and stderr

    def of(self, type_: str, workload: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == type_ and (workload is None or e.get("workload") == workload)]

    @property
    def statuses(self) -> dict[str, str]:
        """Final status of every workload that ended; one never started has none."""
        return {e["workload"]: e["final_status"] for e in self.of("WorkloadEnd")}

    def status(self, name: str) -> str:
        """``Pending`` when the workload never ended (nor started)."""
        return self.statuses.get(name, "Pending")

    def end(self, name: str) -> dict[str, Any]:
        ends = self.of("WorkloadEnd", name)
        assert len(ends) == 1, (name, ends)
        return ends[0]

    def summaries(self, name: str) -> list[Any]:
        """Summaries of every successful module execution of ``name``, in loop order."""
        ends = [e for e in self.of("ModuleExecutionEnd", name) if not e.get("failed")]
        return [e["summary"] for e in sorted(ends, key=lambda e: e.get("loop_iteration") or 0)]

    def summary(self, name: str) -> Any:
        out = self.summaries(name)
        assert len(out) == 1, (name, out)
        return out[0]

    def started(self, name: str) -> bool:
        return any(e["new_status"] == "Running" for e in self.of("WorkloadStatusChanged", name))

    @property
    def playbook_end(self) -> dict[str, Any]:
        ends = self.of("PlaybookEnd")
        assert len(ends) == 1, ends
        return ends[0]

    def explain(self) -> str:
        return f"$ {' '.join(self.args)}\n# exit {self.rc}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def run_tool(name: str, *args: Any, cwd: Path | str | None = None, env: dict[str, str | None] | None = None,
             timeout: float = 60) -> Run:
    argv = [tool(name), *map(str, args)]
    proc = subprocess.run(argv, cwd=cwd, env=_env(env), capture_output=True, timeout=timeout, check=False)
    return _finish(argv, proc.returncode, proc.stdout, proc.stderr)


def _env(extra: dict[str, str | None] | None) -> dict[str, str]:
    """The test's environment with ``extra`` laid over it (a None value unsets the name)."""
    env = dict(os.environ)
    env.pop("GXO_DEBUG", None)
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _finish(argv: list[str], rc: int, out: bytes, err: bytes) -> Run:
    stdout, stderr = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    run = Run(argv, rc, stdout, stderr, raw=out + err)
    assert "Traceback" not in stdout + stderr, run.explain()
    if Path(argv[0]).name == "gxo" and "--json" in argv:
        for line in stdout.splitlines():
            if line.strip():
                run.events.append(json.loads(line))
    return run


def build(playbook: Path | str, out_dir: Path, *flags: str, name: str | None = None) -> Path:
    """``gxoc build --no-native`` (the native build is tested elsewhere and costs a second)."""
    out = out_dir / (name or Path(playbook).stem.replace(".", "_") + ".gxp")
    res = run_tool("gxoc", "build", "--no-native", *flags, playbook, "-o", out)
    assert res.rc == 0, res.explain()
    return out


def gxo_exec(plan: Path, *args: Any, json_events: bool = True, **kw: Any) -> Run:
    return run_tool("gxo", "exec", plan, *(["--json"] if json_events else []), *args, **kw)


def gxo_run(playbook: Path | str, *args: Any, json_events: bool = True, **kw: Any) -> Run:
    return run_tool("gxo", "run", playbook, *(["--json"] if json_events else []), *args, **kw)


def spawn(name: str, *args: Any, cwd: Path | str | None = None, env: dict[str, str | None] | None = None) -> subprocess.Popen:
    return subprocess.Popen([tool(name), *map(str, args)], cwd=cwd, env=_env(env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def read_events_until(proc: subprocess.Popen, pred: Callable[[dict[str, Any]], bool], timeout: float = 20) -> list[dict]:
    """Read ``--json`` lines from a running ``gxo`` until one satisfies ``pred``."""
    seen: list[dict[str, Any]] = []
    box: list[Any] = []

    def reader() -> None:
        assert proc.stdout is not None
        for line in iter(proc.stdout.readline, b""):
            seen.append(json.loads(line))
            if pred(seen[-1]):
                box.append(seen[-1])
                return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(timeout)
    assert box, f"no matching event within {timeout}s; saw {seen}"
    return seen


def close_proc(proc: subprocess.Popen) -> None:
    """Kill ``proc`` if it still runs and close its pipes (the end of every spawned test run)."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        socket.create_connection((host, port), timeout=0.2).close()
        return True
    except OSError:
        return False


@contextmanager
def gxo_serving(plan: Path, port: int, *args: Any, env: dict[str, str | None] | None = None) -> Iterator[subprocess.Popen]:
    """``gxo exec plan *args`` until the block ends, once it listens on ``port``; then SIGTERM,
    which must end it with exit 0 (its stderr in the failure)."""
    proc = spawn("gxo", "exec", plan, *args, env=env)
    try:
        assert wait_until(lambda: port_open(port) or proc.poll() is not None, timeout=20), f"nothing on port {port}"
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        yield proc
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(20)
        assert rc == 0, proc.stderr.read().decode() if proc.stderr else ""
    finally:
        close_proc(proc)


def open_fds() -> dict[str, str]:
    """This process's open file descriptors and what they point to, for a no-leak check around
    an in-process run.  Left out: the listing's own descriptor, and the sandbox's compiled
    seccomp filter (a sealed memfd made once per profile and kept for the process's life)."""
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:
            continue
        if not target.startswith("/memfd:gxo-seccomp"):
            out[fd] = target
    return out


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purpose
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is in process group ``pgid``."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def wait_until(pred: Callable[[], bool], timeout: float = 10, step: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


class HttpMock:
    """A real HTTP server on a random loopback port, run by the test (not by GXO): ``script``
    gives the status of each call in turn (the last one repeats); every call is recorded with
    its arrival time."""

    def __init__(self, script: list[int], body: str = '{"ok": true}') -> None:
        self.script = list(script)
        self.body = body.encode()
        self.calls: list[tuple[float, str, str, bytes]] = []  # (monotonic time, method, path, body)
        mock = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length) if length else b""
                mock.calls.append((time.monotonic(), self.command, self.path, data))
                n = len(mock.calls) - 1
                status = mock.script[min(n, len(mock.script) - 1)]
                payload = mock.body if status < 400 else b'{"error": "unavailable"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


PLAYBOOK_HEAD = 'name: s\nschemaVersion: "1.0.0"\nworkloads:\n'


def write_playbook(work: Path, body: str, name: str = "pb.yaml") -> Path:
    """A playbook file of ``body`` (the workloads list) under a minimal header."""
    path = work / name
    path.write_text(PLAYBOOK_HEAD + body)
    return path


def summary_of(run: Run, workload: str) -> Any:
    """The summary a workload's module returned (its last ModuleExecutionEnd event)."""
    ends = run.of("ModuleExecutionEnd", workload)
    assert ends, f"no summary for {workload}: {run.stdout}{run.stderr}"
    return ends[-1]["summary"]
