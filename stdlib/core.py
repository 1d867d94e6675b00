"""Bare-named modules: ``exec`` (L1) and ``passthrough`` (L4)."""

from __future__ import annotations

from gxo.stdlib import _schemas as s
from gxo.stdlib._spec import ModuleSpec

EXEC = ModuleSpec(
    name="exec",
    layer="L1",
    description="Run a local program as a child process in the workspace and capture its output.",
    # design.md §10: exec declares supervise (supervised servers, E13); with stdout_records
    # it is an event source (a `tail -F` feeding an event_driven handler).
    lifecycles=("run_once", "supervise", "event_driven"),
    params_schema=s.params(
        {
            "command": s.nonempty(
                "Program to run, found as a shell finds it: an absolute path, a bare name looked "
                "up on PATH, or a path with a slash (./build/app) relative to the working "
                "directory. A script beside the plan is {{ ._gxo.plan_dir }}/script.sh. Not run "
                "through a shell."
            ),
            "args": s.string_list(
                "Arguments, one argv entry each (a templated entry is passed as its text form).",
                "One argument.",
                default=[],
            ),
            "environment": s.string_list(
                "KEY=VALUE entries; when given they replace the whole environment of the child.",
                "One KEY=VALUE entry.",
                item_pattern=s.ENV_ENTRY_PATTERN,
                default=[],
            ),
            "working_dir": s.string(
                "Working directory, inside the workspace (default: the workspace itself)."
            ),
            "ok_exit_codes": s.array(
                s.integer("An exit code.", minimum=0, maximum=255),
                "Exit codes that count as success (`grep` exits 1 when nothing matches); any "
                "other code fails the workload.",
                default=[0],
                minItems=1,
                uniqueItems=True,
            ),
            "stdout_records": s.boolean(
                "Stream standard output: each line the program writes (without its newline) "
                "is sent at once as a record `{line}` to the workload's stream consumers "
                "(stream_inputs, or an event_driven workload whose source it is), while the "
                "program runs. Its stdout is then not kept: the summary's `stdout` is empty "
                "and `stdout_lines` is []. Must be a literal.",
                default=False,
            ),
        },
        required=("command",),
    ),
    summary_schema=s.summary(
        {
            **s.command_result_properties(lines=True),
            "stdout": s.string("Standard output as text, trailing newlines removed; empty with "
                               "`stdout_records: true` (the lines went to the stream)."),
            "stdout_lines": s.string_list("Standard output split into lines ([] with "
                                          "`stdout_records: true`); computed only when the "
                                          "playbook reads it, the register whole, or the run "
                                          "writes every event (`--json`)."),
            "command": s.string("Dry run only: the command that would have run."),
            "args": s.string_list("Dry run only: the arguments it would have been given."),
        },
        optional=("command", "args"),
        dry_run=True,
    ),
    # With stdout_records: true (only then), one record per line of standard output.
    record_schema=s.record({
        "line": s.string("One line of standard output without its line ending, decoded as "
                         "UTF-8 (invalid bytes replaced)."),
    }),
    records_param="stdout_records",
    # Drains any stream inputs it is given, so it may sit downstream of a producer.
    stream_input="optional",
    path_params=("working_dir",),
    literal_params=("stdout_records",),
    # command and args are echoed by the dry-run summary and in logs. `environment` is not:
    # it is the documented way to hand a secret to a child (E15), so it must not warn.
    logged_params=("command", "args"),
)

PASSTHROUGH = ModuleSpec(
    name="passthrough",
    layer="L4",
    description="Forward every record from all stream inputs to all outputs unchanged.",
    params_schema=s.params(),
    summary_schema=s.summary(
        {
            "records_processed": s.integer("Number of records forwarded.", minimum=0),
            "message": s.string("Explanation when no record arrived."),
        },
        optional=("message",),
    ),
    # Record type: the union of its inputs' record types, inferred by the compiler.
    record_schema=s.open_record(),
    stream_input="required",
)

MODULES: tuple[ModuleSpec, ...] = (EXEC, PASSTHROUGH)


# --------------------------------------------------------------------------- code
#
# Module code (design.md §8).  Heavy imports stay inside perform: the compiler imports this file.

#: After SIGTERM to a cancelled child's process group, how long before SIGKILL.
EXEC_KILL_GRACE_S = 2.0


#: ``stdout_records``: a line longer than this (no newline yet) is sent as a record of this size
MAX_RECORD_LINE = 1 << 20


async def _stream_lines(reader, out) -> None:
    """Send each line of ``reader`` as a record ``{"line": ...}`` to ``out`` as it arrives
    (the line ending removed; a last line without one is sent too).  A slow consumer slows the
    reading, and the child then blocks on its full pipe: back-pressure, no unbounded buffer."""
    buf = b""
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            break
        buf += chunk
        cut = buf.rfind(b"\n") + 1
        if cut:
            # the complete lines of this read, one emit (batched by the output)
            text = buf[:cut - 1].decode("utf-8", "replace")
            buf = buf[cut:]
            lines = text.split("\n")
            if "\r" in text:  # CRLF line ends
                lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
            # the records {"line": ...}, built only for a consumer that needs them built
            await out.emit_field("line", lines)
        while len(buf) >= MAX_RECORD_LINE:
            await out.emit_one({"line": buf[:MAX_RECORD_LINE].decode("utf-8", "replace")})
            buf = buf[MAX_RECORD_LINE:]
    if buf:
        await out.emit_one({"line": buf.decode("utf-8", "replace")})
    await out.flush()


def output_lines(stdout: str) -> list[str]:
    """``stdout_lines`` of ``stdout`` (its trailing newlines already removed)."""
    # split at "\n" or "\r\n" (str.split is several times faster than a regex on large output)
    lines = stdout.split("\n") if stdout else []
    if "\r" in stdout:
        lines = [line[:-1] if line.endswith("\r") else line for line in lines[:-1]] + lines[-1:]
    return lines


def _output_text(data: bytes) -> str:
    """A child's output as text without its trailing newlines: ``data.decode("utf-8",
    "replace").rstrip("\n")``, decoded from a view of the bytes before them, so that a large
    output is not copied once more to drop its last newline (a ``\n`` byte is never part of a
    multi-byte UTF-8 sequence: the text is the same)."""
    end = len(data)
    while end and data[end - 1] == 10:  # b"\n"
        end -= 1
    if end == len(data):
        return data.decode("utf-8", "replace")
    with memoryview(data) as view:
        return str(view[:end], "utf-8", "replace")


def _exec_summary(stdout: str, stderr: str, exit_code: int, lines: bool = True) -> dict:
    """exec's summary; ``lines=False`` leaves ``stdout_lines`` out (nothing reads it: a million
    lines of output are a million strings, about 60 MB)."""
    stdout = stdout.rstrip("\n")
    stderr = stderr.rstrip("\n")
    if not lines:
        return {"stdout": stdout, "stderr": stderr, "exit_code": exit_code}
    return {"stdout": stdout, "stderr": stderr, "stdout_lines": output_lines(stdout), "exit_code": exit_code}


def _find_program(command: str, env_path: str | None, cwd: str, root: str | None = None) -> str | None:
    """``command`` as a shell finds it: absolute, a bare name looked up on PATH, or a path with a
    slash (``./build/app``) relative to the working directory ``cwd``.  ``root``: the child's
    root_filesystem, where absolute and PATH names are looked up (the path returned is the
    one inside it; the working directory is bound into it at its own path)."""
    import os
    import shutil

    def runnable(path: str) -> bool:
        return os.path.isfile(path) and os.access(path, os.X_OK)

    if root:
        if "/" not in command:
            for folder in (env_path or os.defpath).split(os.pathsep):
                if folder.startswith("/") and runnable(os.path.join(root, folder.lstrip("/"), command)):
                    return os.path.join(folder, command)
            return None
        if os.path.isabs(command):
            return command if runnable(os.path.join(root, command.lstrip("/"))) else None
    if os.path.isabs(command):
        return command if runnable(command) else None
    if "/" not in command:
        found = shutil.which(command, path=env_path)
        return os.path.abspath(found) if found else None
    candidate = os.path.join(cwd, command)
    return candidate if runnable(candidate) else None


async def _kill_group(proc, grace: float) -> None:
    """SIGTERM the child's whole process group and the processes that left it (descendants that
    called setsid, orphans this gxo adopted: gxo.runtime.proctrack), SIGKILL them after
    ``grace``, reap the child and close its pipes."""
    import asyncio
    import os
    import signal

    from gxo.runtime import proctrack

    pgid = proc.pid  # start_new_session: the child leads its own group
    # the child's descendants are found through their parent links while the child lives
    escaped = proctrack.leftovers(pgid, adopted=proctrack.running_count() == 1)

    def signal_group(sig: int) -> None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        proctrack.signal_all(escaped, sig)

    signal_group(signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.shield(proc.wait()), grace)
    except (TimeoutError, asyncio.CancelledError):
        pass
    # Always: members of the group may outlive (or ignore SIGTERM unlike) the leader.  Linux
    # never hands out a PID still used as a group id, so the group cannot be someone else's.
    signal_group(signal.SIGKILL)
    try:
        await asyncio.shield(proc.wait())
    except asyncio.CancelledError:
        await proc.wait()
    finally:
        proctrack.reaped(proc.pid)
        proctrack.reap(escaped)
        transport = getattr(proc, "_transport", None)
        if transport is not None:  # a pipe still held by a process we could not see
            transport.close()


async def _end_leftovers(proc) -> None:
    """After the child exited on its own: stop what is left in its process group (cheap: one
    signal when nothing is).  Orphans adopted by gxo are stopped when the run ends (finding
    them costs a scan of /proc, too much for every exec)."""
    import os

    from gxo.runtime import proctrack

    try:
        os.killpg(proc.pid, 0)
    except (ProcessLookupError, PermissionError):
        proctrack.reaped(proc.pid)
        return
    await _kill_group(proc, 0)


async def start_child(argv: list[str], pass_fds: tuple[int, ...], *, stdin: object, cwd: str,
                      env: dict[str, str] | None = None) -> object:
    """Start ``argv`` as the leader of a new session, its stdout and stderr piped, and tell
    proctrack.  Raises OSError (it cannot start) or ValueError (a NUL byte in an argument).

    The start is shielded: cancelled half-way, asyncio would kill the child alone and then wait
    for its pipes, which a grandchild in its group (``sleep 60 &``) keeps open.  A cancellation
    during the start lets it finish, then stops the whole group."""
    import asyncio

    from gxo.runtime import proctrack

    proctrack.spawning(1)  # until proctrack.started: not an orphan to stop (proctrack)
    starting = asyncio.ensure_future(asyncio.create_subprocess_exec(
        *argv, pass_fds=pass_fds, stdin=stdin, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=cwd, env=env, start_new_session=True))
    try:
        try:
            proc = await asyncio.shield(starting)
        except asyncio.CancelledError:
            try:
                started = await starting
            except Exception:  # noqa: BLE001 - it did not start: nothing to stop
                raise asyncio.CancelledError from None
            proctrack.started(started.pid)
            await _kill_group(started, 0)
            raise
    finally:
        proctrack.spawning(-1)
    proctrack.started(proc.pid)
    return proc


class Exec:
    """``exec``: run a program without a shell, in the workspace, capturing its output."""

    name = "exec"
    #: summary fields computed from another one: the run history keeps them out and a resumed
    #: run computes them again (a million lines of output are not stored twice)
    derived_fields = {"stdout_lines": ("stdout", output_lines)}

    async def perform(self, ctx, params):
        import asyncio
        import os
        import re

        from gxo.runtime import proctrack
        from gxo.runtime.module import ModuleError, ValidationError
        from gxo.stdlib import _params as p

        params = p.check_map(params)
        command = p.req_str(params, "command")
        args = p.opt_str_list(params, "args", scalars=True)
        environment = p.opt_str_list(params, "environment")
        env: dict[str, str] | None = None
        if "environment" in params and params["environment"] is not None:
            env = {}
            for i, entry in enumerate(environment):
                if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", entry):
                    raise ValidationError(
                        f"parameter 'environment'[{i}] must look like KEY=VALUE, got "
                        f"{ctx.redact(entry)!r}"
                    )
                key, _, value = entry.partition("=")
                env[key] = value
        working_dir = p.opt_str(params, "working_dir")
        cwd = ctx.workspace.resolve(working_dir) if working_dir else ctx.workspace.path
        stdout_records = p.opt_bool(params, "stdout_records")
        ok_codes = params.get("ok_exit_codes")
        if ok_codes is None:
            ok_codes = [0]
        elif not (isinstance(ok_codes, list) and ok_codes
                  and all(isinstance(c, int) and not isinstance(c, bool) for c in ok_codes)):
            raise ValidationError("parameter 'ok_exit_codes' must be a non-empty list of integers, got "
                                  f"{p.kind(ok_codes)}")

        if ctx.dry_run:
            ctx.logger.info("dry run: would run a command", command=command, args=args)
            return {"dry_run": True, "command": command, "args": args,
                    **_exec_summary("", "", 0)}

        from gxo.runtime import sandbox

        box = ctx.sandbox if ctx.sandbox is not None else sandbox.BASELINE_SANDBOX
        env_path = env.get("PATH") if env is not None and "PATH" in env else os.environ.get(
            "PATH", os.defpath)
        program = _find_program(command, env_path, cwd, box.root_filesystem)
        if program is None:
            message = f"command not found: {command}"
            if box.root_filesystem and (os.path.isabs(command) or "/" not in command):
                message += f" (looked up in the root_filesystem {box.root_filesystem})"
            elif "/" not in command:
                message += " (looked up on PATH)"
            elif not command.startswith("/"):
                message += (f" (looked up in the working directory {cwd}; name a script beside the "
                            f"plan as {{{{ ._gxo.plan_dir }}}}/{command.removeprefix('./')})")
            raise ModuleError(message, summary=_exec_summary("", message, -1))
        if not os.path.isdir(cwd):
            message = f"working directory {working_dir or cwd!r} does not exist"
            raise ModuleError(message, summary=_exec_summary("", message, -1))

        if not proctrack.guard_ready():  # the first exec of the gxo command: see proctrack
            await proctrack.guarded()

        # The sandbox (docs/security.md): a launcher applies it and execs
        try:
            launch = sandbox.prepare(program, args, box, label=ctx.workload, workspace=ctx.workspace.path,
                                     cwd=cwd, binds=(ctx.workspace.path, cwd, ctx.plan_dir))
        except sandbox.SandboxError as exc:
            message = f"cannot start {command}: {exc}"
            raise ModuleError(message, summary=_exec_summary("", message, -1)) from None
        try:
            return await self._run(ctx, command, launch, cwd, env, stdout_records, ok_codes)
        finally:
            launch.finish()

    async def _run(self, ctx, command, launch, cwd, env, stdout_records, ok_codes):
        import asyncio

        from gxo.runtime import sandbox
        from gxo.runtime.module import ModuleError

        try:
            proc = await start_child(launch.argv, launch.pass_fds, stdin=asyncio.subprocess.DEVNULL,
                                     cwd=cwd, env=env)
        except OSError as exc:
            message = f"cannot start {command}: {exc.strerror or exc}"
            raise ModuleError(message, summary=_exec_summary("", message, -1)) from None
        except ValueError as exc:  # a NUL byte in an argument or the environment
            message = f"cannot start {command}: {exc} (an argument or variable holds a NUL character)"
            raise ModuleError(message, summary=_exec_summary("", message, -1)) from None
        ctx.logger.debug("started", command=command, pid=proc.pid, sandbox=launch.describe())

        async def talk():
            if stdout_records:
                from gxo.runtime.streams import output_of

                _, err, _ = await asyncio.gather(_stream_lines(proc.stdout, output_of(ctx)),
                                                 proc.stderr.read(), proc.wait())
                return b"", err
            return await proc.communicate()

        try:
            # a limit reached (a fork bomb at pids_max, an OOM kill) stops the whole child
            talked, limit_hit = await launch.within_limits(talk())
            if limit_hit:
                await _kill_group(proc, 0)
                talked = (b"", b"")
            out, err = talked
        except asyncio.CancelledError:
            grace = getattr(ctx, "stop_timeout", None)
            await _kill_group(proc, EXEC_KILL_GRACE_S if grace is None else grace)
            raise
        except BaseException:
            await _kill_group(proc, 0)
            raise
        await _end_leftovers(proc)
        rc = proc.returncode
        assert rc is not None
        limit_hit = limit_hit or launch.finish()
        signal_rc = rc
        rc = 128 - rc if rc < 0 else rc  # killed by a signal: reported as a shell does, 128 + N
        summary = _exec_summary(_output_text(out), _output_text(err), rc,
                                "stdout_lines" not in getattr(ctx, "unread", ()))
        if limit_hit:  # fails whatever the exit code: the child was cut short by its sandbox
            raise ModuleError(f"command {command} stopped: {limit_hit}", summary=summary)
        if rc not in ok_codes:
            detail = sandbox.killed_by(signal_rc, proc.pid, launch.sandbox) if signal_rc < 0 else \
                f"exited with code {rc}"
            last = summary["stderr"].strip().splitlines()[-1:] if summary["stderr"] else []
            # redact before cutting: a cut through an encoded secret would leak its first half
            tail = f": {ctx.redact(last[0])[:500]}" if last else ""
            raise ModuleError(f"command {command} {detail}{tail}", summary=summary)
        return summary


class Passthrough:
    """``passthrough``: forward every record of every input, unchanged, to every output."""

    name = "passthrough"

    async def perform(self, ctx, params):
        from gxo.runtime.streams import inputs_of, output_of

        inputs = inputs_of(ctx)
        out = output_of(ctx)
        n = 0
        async for _producer, batch in inputs:
            n += len(batch)
            await out.send_batch(batch)
        if n == 0:
            message = ("no records received from the stream inputs" if len(inputs)
                       else "no stream inputs")
            return {"records_processed": 0, "message": message}
        return {"records_processed": n}


CODE = {"exec": Exec, "passthrough": Passthrough}
