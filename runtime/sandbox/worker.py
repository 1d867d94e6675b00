"""A module's ``perform`` run in a sandboxed worker process, for a workload with a security_context.

An ``exec`` child gets the workload's sandbox from the launcher (:func:`gxo.runtime.sandbox.launch`).
A module that runs Python code instead of a program gets the same sandbox by running in a
worker: ``python -I -m gxo.runtime.sandbox.worker`` started through that launcher (so it has
no_new_privs, the seccomp filter and whatever else ``launch`` applies), which runs the module's
``perform`` with a minimal context and hands its summary back.  Which modules may run there is
decided by :func:`gxo.runtime.support.worker_refusal` (checked by ``gxoc check`` and ``gxo``).

The protocol, one frame = 4-byte big-endian length + a UTF-8 JSON object (never pickle: the
parent trusts nothing the worker sends beyond its JSON):

- parent -> worker, on the worker's stdin: one request ``{"module", "params", "workload",
  "run_id", "workspace", "roots", "dry_run", "plan_dir", "loop_index", "stop_timeout",
  "secrets"}``, then end of file;
- worker -> parent, on its stdout (the worker points fds 0 and 1 at /dev/null once it has its
  request, so what the module prints cannot be taken for a frame): any number of
  ``{"log": [level, message, attrs]}``, then one ``{"result": summary}`` or
  ``{"error": {"kind", "message", "summary"}}``.

The parent re-emits each log record through ``ctx.logger`` as it arrives and bounds every
frame (``MAX_FRAME``).  A worker that ends without its answer (killed by a signal, a limit, a
denied syscall) is a one-line error naming why; cancellation and timeouts kill its process group.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from gxo.runtime.events import LevelLogger

#: the largest frame either side accepts (a summary is a JSON value: 64 MiB is far beyond one)
MAX_FRAME = 64 << 20
#: the stderr kept from a worker that failed, for its error's last line
_STDERR_TAIL = 8192
#: how long a worker that has answered (or closed its channel) may take to exit before it is killed
WORKER_EXIT_GRACE_S = 5.0
#: the module the worker process runs
WORKER_MODULE = "gxo.runtime.sandbox.worker"
#: the error kinds a worker reports, as the exception the parent raises
_KINDS = ("ModuleError", "ValidationError", "SecurityError", "error")
_LEVELS = {"DEBUG": "debug", "INFO": "info", "WARN": "warning", "ERROR": "error"}
#: log attributes the parent's logger takes as its own arguments
_RESERVED_ATTRS = frozenset({"msg", "workload", "level", "message"})


def worker_argv() -> list[str]:
    """The interpreter and arguments of a worker: this venv's Python, isolated (``-I``: no
    user site, no ``PYTHON*`` variables, no working directory on ``sys.path``; the installed
    ``gxo`` stays importable from site-packages)."""
    return [sys.executable, "-I", "-m", WORKER_MODULE]


def _python_dirs() -> tuple[str, ...]:
    """What the worker's interpreter reads: the venv, the Python it was made from, and the
    folder holding the gxo package (its source tree in an editable install).  Bound into a
    private /tmp when they lie under it (``launch``'s ``binds``)."""
    import gxo.runtime

    pkg = os.path.dirname(os.path.dirname(os.path.abspath(gxo.runtime.__file__)))
    return tuple(dict.fromkeys((sys.prefix, sys.base_prefix, pkg)))


def unreachable_for(user: str) -> str | None:
    """Why ``user`` (security_context.user) could not start a worker: a folder on the way to
    this Python or to gxo that it may not enter (``/root`` is 0700 where pyenv installs
    there), in words; None when it can."""
    import stat

    from gxo.runtime.sandbox import SandboxError, resolve_user

    try:
        uid, gid, groups = resolve_user(user)
    except SandboxError as exc:
        return str(exc)
    if uid == 0:
        return None
    for target in (os.path.realpath(sys.executable), *_python_dirs()):
        path = os.path.realpath(target)
        parts = path.split("/")
        for i in range(2, len(parts) + 1):
            d = "/".join(parts[:i]) or "/"
            try:
                st = os.stat(d)
            except OSError:
                continue
            if not stat.S_ISDIR(st.st_mode):
                continue
            bits = (st.st_mode >> 6) if st.st_uid == uid else (
                (st.st_mode >> 3) if st.st_gid == gid or st.st_gid in groups else st.st_mode)
            if not bits & 1:
                return (f"user '{user}' cannot run gxo's Python {path}: it may not enter {d} (mode "
                        f"{stat.S_IMODE(st.st_mode):04o}); install gxo where that user can read it")
    return None


def _frame(obj: Any) -> bytes:
    body = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    if len(body) > MAX_FRAME:
        raise ValueError(f"a message of {len(body)} bytes is over the {MAX_FRAME >> 20} MiB limit")
    return len(body).to_bytes(4, "big") + body


# --------------------------------------------------------------------------- parent side


class _Broken(Exception):
    """The worker sent something that is not a frame of the protocol."""


async def _read_frame(reader: Any) -> Any:
    """The next frame's object, or None at end of file before a frame."""
    import asyncio

    try:
        head = await reader.readexactly(4)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise _Broken("a message cut short") from None
    size = int.from_bytes(head, "big")
    if size > MAX_FRAME:
        raise _Broken(f"a message of {size} bytes, over the {MAX_FRAME >> 20} MiB limit")
    try:
        body = await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        raise _Broken("a message cut short") from None
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise _Broken(f"a message that is not JSON ({type(exc).__name__})") from None
    if not isinstance(obj, dict) or len(obj) != 1:
        raise _Broken("a message that is not a one-key object")
    return obj


def _emit_log(ctx: Any, record: Any) -> None:
    """Re-emit a worker's log record through the workload's logger (malformed ones as such)."""
    if not (isinstance(record, list) and len(record) == 3 and record[0] in _LEVELS
            and isinstance(record[1], str) and isinstance(record[2], dict)):
        raise _Broken("a malformed log record")
    attrs = {k: v for k, v in record[2].items() if isinstance(k, str) and k not in _RESERVED_ATTRS}
    getattr(ctx.logger, _LEVELS[record[0]])(record[1], **attrs)


def _secrets_of(ctx: Any) -> list[str]:
    """The secret values the run tracks (the worker's ``ctx.redact`` hides them too)."""
    from gxo.runtime.secrets import Tracker

    tracker = getattr(ctx.redact, "__self__", None)
    return sorted(tracker.values()) if isinstance(tracker, Tracker) else []


def _request(ctx: Any, module_name: str, params: Any) -> bytes:
    ws = ctx.workspace
    try:
        return _frame({
            "module": module_name,
            "params": params,
            "workload": ctx.workload,
            "run_id": ctx.run_id,
            "workspace": ws.path,
            "roots": list(getattr(ws, "roots", ())),
            "dry_run": bool(ctx.dry_run),
            "plan_dir": ctx.plan_dir,
            "loop_index": ctx.loop_index,
            "stop_timeout": ctx.stop_timeout,
            "secrets": _secrets_of(ctx),
        })
    except (TypeError, ValueError) as exc:
        from gxo.runtime.module import ValidationError

        raise ValidationError(f"the params of module {module_name} cannot be sent to its sandboxed worker: "
                              f"{exc}") from None


def _died(module_name: str, rc: int, pid: int, box: Any, stderr: bytes, limit: str | None) -> str:
    """Why a worker ended without its answer, in one line."""
    what = f"the sandboxed worker of module {module_name}"
    if rc < 0:
        from gxo.runtime.sandbox import killed_by

        detail = f"{what} was {killed_by(rc, pid, box)}"
    else:
        detail = f"{what} exited with code {rc} without an answer"
    if limit:
        detail += f" ({limit})"
    last = stderr.decode("utf-8", "replace").strip().splitlines()[-1:]
    return detail + (f": {last[0][:500]}" if last else "")


async def perform_in_worker(ctx: Any, module_name: str, params: dict[str, Any], sandbox: Any) -> Any:
    """Run module ``module_name``'s ``perform(ctx, params)`` in a worker process under ``sandbox``
    (a :class:`gxo.runtime.sandbox.Sandbox`); its summary, or its error raised here as the
    ModuleError / ValidationError / SecurityError it was (with its summary).  Anything else
    (another exception in the module, a worker killed or cut short) is a one-line ModuleError."""
    import asyncio

    from gxo.runtime import proctrack, sandbox as sb
    from gxo.runtime.module import ModuleError, SecurityError, ValidationError
    from gxo.stdlib.core import _end_leftovers, _kill_group, start_child

    request = _request(ctx, module_name, params)
    argv = worker_argv()
    if not proctrack.guard_ready():
        await proctrack.guarded()
    # the sandbox as exec's child gets it (gxo.stdlib.core.Exec), and what the interpreter
    # needs kept visible across the mounts
    try:
        launch = sb.prepare(argv[0], argv[1:], sandbox, label=ctx.workload, workspace=ctx.workspace.path,
                            cwd=ctx.workspace.path, binds=(ctx.workspace.path, ctx.plan_dir, *_python_dirs()))
    except sb.SandboxError as exc:
        raise ModuleError(f"cannot start the sandboxed worker of module {module_name}: {exc}") from None

    try:
        try:
            proc = await start_child(launch.argv, launch.pass_fds, stdin=asyncio.subprocess.PIPE,
                                     cwd=ctx.workspace.path)
        except OSError as exc:
            raise ModuleError(f"cannot start the sandboxed worker of module {module_name}: "
                              f"{exc.strerror or exc}") from None
        ctx.logger.debug("sandboxed worker started", module=module_name, pid=proc.pid,
                         sandbox=f"{launch.describe()} (worker process)")

        async def send() -> None:
            try:
                proc.stdin.write(request)
                await proc.stdin.drain()
                proc.stdin.close()
            except (BrokenPipeError, ConnectionResetError):
                pass  # it died before reading: its exit says why

        async def tail_of_stderr() -> bytes:
            kept = b""
            while True:
                chunk = await proc.stderr.read(65536)
                if not chunk:
                    return kept
                kept = (kept + chunk)[-_STDERR_TAIL:]

        async def answer() -> Any:
            while True:
                msg = await _read_frame(proc.stdout)
                if msg is None:
                    return None
                if "log" in msg:
                    _emit_log(ctx, msg["log"])
                    continue
                if "result" in msg or "error" in msg:
                    return msg
                raise _Broken("a message of an unknown kind")

        sender = asyncio.ensure_future(send())
        stderr = asyncio.ensure_future(tail_of_stderr())
        try:
            try:
                # a limit reached (pids, an OOM kill) stops the worker at once, as an exec child
                msg, limit = await launch.within_limits(answer())
                if limit:
                    raise ModuleError(f"the sandboxed worker of module {module_name} stopped: {limit}")
            except _Broken as exc:  # killed below, as on every failure
                raise ModuleError(f"the sandboxed worker of module {module_name} broke the protocol: "
                                  f"{exc}") from None
            # the answer is in (or its channel is closed): the worker has nothing left to do
            try:
                await asyncio.wait_for(asyncio.shield(proc.wait()), WORKER_EXIT_GRACE_S)
            except TimeoutError:
                await _kill_group(proc, 0)
            else:
                await _end_leftovers(proc)
            err = await stderr
            await sender
        except BaseException:  # cancelled (a timeout, a stopped run) or failed: stop it all
            await _kill_group(proc, 0)
            for task in (sender, stderr):
                task.cancel()
            raise
        limit = launch.finish()
        if msg is None:
            raise ModuleError(ctx.redact(_died(module_name, proc.returncode, proc.pid, sandbox, err, limit)))
        if "result" in msg:
            if limit:  # fails whatever it answered, as an exec child cut short by its sandbox
                raise ModuleError(f"the sandboxed worker of module {module_name} stopped: {limit}",
                                  summary=msg["result"])
            return msg["result"]
        error = msg["error"]
        if not (isinstance(error, dict) and error.get("kind") in _KINDS and isinstance(error.get("message"), str)):
            raise ModuleError(f"the sandboxed worker of module {module_name} broke the protocol: a malformed error")
        message = error["message"]  # the module's own words (an "error" kind is one line already)
        kind = {"ValidationError": ValidationError, "SecurityError": SecurityError}.get(error["kind"], ModuleError)
        if limit:
            message += f" ({limit})"
        raise kind(message, summary=error.get("summary"))
    finally:
        launch.finish()


# --------------------------------------------------------------------------- worker side


class _Logger(LevelLogger):
    """The module's logger in the worker: each record is a frame to the parent."""

    __slots__ = ("_send",)

    def __init__(self, send: Any) -> None:
        self._send = send

    def _log(self, level: str, msg: str, attrs: dict[str, Any]) -> None:
        try:
            self._send({"log": [level, str(msg), attrs]})
        except (TypeError, ValueError):  # an attribute that is not JSON: its text form
            self._send({"log": [level, str(msg), {k: str(v) for k, v in attrs.items()}]})


class _Workspace:
    """The run's workspace as the workload sees it, resolved as in gxo (``resolve_inside``)."""

    def __init__(self, path: str, roots: tuple[str, ...]) -> None:
        self.path = path
        self.roots = roots

    def resolve(self, user_path: str) -> str:
        from gxo.runtime.workspace import resolve_inside

        return resolve_inside(self.path, user_path, self.roots)


def _read_request(fd: int) -> dict[str, Any]:
    data = b""
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_FRAME + 4:
            raise ValueError("the request is over the size limit")
    if len(data) < 4 or int.from_bytes(data[:4], "big") != len(data) - 4:
        raise ValueError("the request is cut short")
    req = json.loads(data[4:])
    if not isinstance(req, dict):
        raise ValueError("the request is not an object")
    return req


def _no_state() -> dict[str, Any]:
    from gxo.runtime.module import ModuleError

    raise ModuleError("the run's state is not available to a module in a sandboxed worker")


def _no_connections() -> Any:
    from gxo.runtime.module import ModuleError

    raise ModuleError("the run's connections are not available to a module in a sandboxed worker")


def _run(req: dict[str, Any], send: Any) -> dict[str, Any]:
    """Perform the request's module; the final frame's object."""
    from gxo.runtime.module import Context, ModuleError, SecurityError, ValidationError, load_module_class

    redact: Any = lambda text: text  # noqa: E731 - the Context default: no secret in this run
    if req.get("secrets"):
        from gxo.runtime.secrets import Tracker

        tracker = Tracker()
        for value in req["secrets"]:
            tracker.add(value)
        redact = tracker.redact
    name = req["module"]
    try:
        cls = load_module_class(name)
        if cls is None:
            raise ModuleError(f"module '{name}' has no code in this installation")
        ctx = Context(
            workload=req["workload"],
            run_id=req["run_id"],
            logger=_Logger(send),
            workspace=_Workspace(req["workspace"], tuple(req.get("roots") or ())),
            state=_no_state,
            dry_run=bool(req.get("dry_run")),
            plan_dir=req.get("plan_dir") or ".",
            loop_index=req.get("loop_index"),
            redact=redact,
            stop_timeout=req.get("stop_timeout"),
            connections=_no_connections,
        )
        mod = cls()
        import inspect

        if inspect.iscoroutinefunction(mod.perform):
            import asyncio

            summary = asyncio.run(mod.perform(ctx, req["params"]))
        else:
            summary = mod.perform(ctx, req["params"])
        return {"result": summary}
    except ModuleError as exc:
        kind = ("ValidationError" if isinstance(exc, ValidationError) else
                "SecurityError" if isinstance(exc, SecurityError) else "ModuleError")
        return {"error": {"kind": kind, "message": str(exc) or type(exc).__name__, "summary": exc.summary}}
    except Exception as exc:  # noqa: BLE001 - any other failure is the module's error, one line
        text = " ".join(str(exc).split())
        return {"error": {"kind": "error", "message": f"{type(exc).__name__}: {text}" if text
                          else type(exc).__name__, "summary": None}}


def main() -> int:
    """The worker: read the request on fd 0, answer on fd 1 (then both point at /dev/null)."""
    import threading

    out_fd = os.dup(1)
    try:
        req = _read_request(0)
    except (OSError, ValueError, RecursionError) as exc:
        print(f"gxo worker: bad request: {exc}", file=sys.stderr)
        return 2
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    lock = threading.Lock()

    def send(obj: Any) -> None:
        data = _frame(obj)
        with lock:
            view = memoryview(data)
            while view:
                view = view[os.write(out_fd, view):]

    final = _run(req, send)
    try:
        send(final)
    except (TypeError, ValueError) as exc:  # not JSON, or too large
        what = "summary" if "result" in final else "error summary"
        send({"error": {"kind": "error", "message": f"module {req.get('module')} returned a {what} that "
                        f"cannot be sent back from its sandboxed worker: {exc}", "summary": None}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
