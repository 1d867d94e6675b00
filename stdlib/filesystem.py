"""``filesystem:*`` (L1): files inside the workspace, and under the allowed paths.

Every ``path`` is a workspace path: a relative one resolves inside the workspace at run time;
an absolute one is allowed inside it or when its real path lies under
``workload_policy.allowed_paths``, ``policy.allowed_paths`` or ``gxo --allow-path`` (symlinks
followed; any other escape fails the workload); literal escapes warn at compile time.
"""

from __future__ import annotations

from gxo.stdlib import _schemas as s
from gxo.stdlib._spec import ModuleSpec


def _path(what: str) -> dict:
    return s.nonempty(f"{what}, relative to the workspace, or absolute under allowed_paths (any other "
                      "escaping path is refused).")


READ = ModuleSpec(
    name="filesystem:read",
    layer="L1",
    description="Read a whole UTF-8 text file into the summary.",
    params_schema=s.params({"path": _path("File to read")}, required=("path",)),
    summary_schema=s.summary(
        {"content": s.string("The file's content (empty in a dry run).")}, dry_run=True
    ),
    path_params=("path",),
    # The path appears in logs and error messages; the content is the module's output, not a
    # param, so it is not listed.
    logged_params=("path",),
)

WRITE = ModuleSpec(
    name="filesystem:write",
    layer="L1",
    description="Create, overwrite or append to a file, creating parent directories.",
    params_schema=s.params(
        {
            "path": _path("File to write"),
            "content": s.string("Text to write (UTF-8)."),
            "mode": s.file_mode(
                "Permission bits of a newly created file: an octal string such as \"0644\" "
                "or an integer (YAML 0o644).",
                default="0644",
            ),
            "append": s.boolean("Append to the file instead of replacing it.", default=False),
        },
        required=("path", "content"),
    ),
    summary_schema=s.summary(
        {
            "path": s.string("Absolute path of the file written."),
            "bytes_written": s.integer("Number of bytes written.", minimum=0),
        },
        dry_run=True,
    ),
    path_params=("path",),
    # The summary echoes the path; the content is never echoed (a file may hold a secret).
    logged_params=("path",),
)

STAT = ModuleSpec(
    name="filesystem:stat",
    layer="L1",
    description="Report a path's metadata without reading it; fails when the path is missing.",
    params_schema=s.params({"path": _path("Path to inspect")}, required=("path",)),
    summary_schema=s.summary(s.stat_properties(), dry_run=True),
    path_params=("path",),
    logged_params=("path",),  # echoed by the summary
)

LIST = ModuleSpec(
    name="filesystem:list",
    layer="L1",
    description="Stream one record per directory entry, shaped like filesystem:stat's summary.",
    params_schema=s.params(
        {
            "path": _path("Directory to list"),
            "recursive": s.boolean("Descend into subdirectories.", default=False),
            "pattern": s.string(
                "Glob matched against entry names (empty: every entry).", default=""
            ),
        },
        required=("path",),
    ),
    # The checklist gives no summary; the listed directory and the number of records emitted.
    summary_schema=s.summary(
        {
            "path": s.string("Absolute path of the directory listed."),
            "entries": s.integer("Number of records emitted.", minimum=0),
        },
        dry_run=True,
    ),
    record_schema=s.record(s.stat_properties()),
    path_params=("path",),
    logged_params=("path",),  # echoed by the summary
)

MANAGE = ModuleSpec(
    name="filesystem:manage",
    layer="L1",
    description="Idempotently converge a path to a desired state (file, directory or absent).",
    # design.md §10: declares supervise (E17, configuration kept enforced): supervised, it
    # runs to completion every lifecycle.interval, a reconciler.
    lifecycles=("run_once", "supervise"),
    reconciler=True,
    params_schema=s.params(
        {
            "path": _path("Path to converge"),
            "state": s.enum(
                "Desired state: present (a file, created empty or with `content`), absent "
                "(removed), directory.",
                ("present", "absent", "directory"),
            ),
            "content": s.string(
                "Exact content of the file (state present only); rewritten when it differs."
            ),
            "owner": s.owner_ref("Owning user, a name or a UID (applied when it differs)."),
            "group": s.owner_ref("Owning group, a name or a GID (applied when it differs)."),
            "mode": s.file_mode(
                "Permission bits, an octal string such as \"0700\" or an integer (applied when "
                "they differ)."
            ),
            "recursive": s.boolean(
                "With state absent, remove a directory with everything in it.", default=False
            ),
        },
        required=("path", "state"),
        rules=[
            s.when_present(
                "content", {"properties": {"state": {"const": "present"}}}
            ),
        ],
    ),
    summary_schema=s.summary(
        {
            "path": s.string("Absolute path converged."),
            "state": s.enum("The state enforced.", ("present", "absent", "directory")),
            "changed": s.boolean("Whether anything had to change (false when compliant)."),
        },
        dry_run=True,
    ),
    path_params=("path",),
    # path and state are echoed by the summary; content is not.
    logged_params=("path", "state"),
)

MODULES: tuple[ModuleSpec, ...] = (READ, WRITE, STAT, LIST, MANAGE)


# --------------------------------------------------------------------------- code
#
# Module code (design.md §8): plain functions run by the kernel in a worker thread.  Every path
# goes through ctx.workspace.resolve, which refuses anything outside the workspace.


def _rfc3339(timestamp: float) -> str:
    import datetime

    moment = datetime.datetime.fromtimestamp(int(timestamp), datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _os_error(action: str, path: str, exc: OSError):
    from gxo.runtime.module import ModuleError

    return ModuleError(f"cannot {action} {path}: {exc.strerror or exc}")


def _write_all(fd: int, data: bytes) -> None:
    import os

    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class Read:
    name = "filesystem:read"

    def perform(self, ctx, params):
        from gxo.runtime.module import ModuleError
        from gxo.stdlib import _params as p

        params = p.check_map(params)
        path = ctx.workspace.resolve(p.req_str(params, "path"))
        if ctx.dry_run:
            ctx.logger.info("dry run: would read a file", path=path)
            return {"content": "", "dry_run": True}
        try:
            with open(path, "rb") as f:
                data = f.read()
        except IsADirectoryError:
            raise ModuleError(f"cannot read {path}: it is a directory") from None
        except OSError as exc:
            raise _os_error("read", path, exc) from None
        try:
            return {"content": data.decode("utf-8")}
        except UnicodeDecodeError as exc:
            raise ModuleError(f"cannot read {path}: not UTF-8 text (byte {exc.start})") from None


class Write:
    name = "filesystem:write"

    def perform(self, ctx, params):
        import os

        from gxo.stdlib import _params as p

        params = p.check_map(params)
        path = ctx.workspace.resolve(p.req_str(params, "path"))
        content = p.req_str(params, "content", nonempty=False)
        mode = p.opt_mode(params, "mode", 0o644)
        append = p.opt_bool(params, "append", False)
        data = content.encode("utf-8")
        if ctx.dry_run:
            ctx.logger.info("dry run: would write a file", path=path, bytes=len(data),
                            append=append)
            return {"path": path, "bytes_written": 0, "dry_run": True}
        parent = os.path.dirname(path)
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as exc:
            raise _os_error("create the directory", parent, exc) from None
        flags = os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW
        flags |= os.O_APPEND if append else os.O_TRUNC
        try:
            try:
                fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
                created = True
            except FileExistsError:
                fd = os.open(path, flags)
                created = False
            try:
                if created:
                    os.fchmod(fd, mode)  # exact bits, whatever the umask
                _write_all(fd, data)
            finally:
                os.close(fd)
        except IsADirectoryError:
            from gxo.runtime.module import ModuleError

            raise ModuleError(f"cannot write {path}: it is a directory") from None
        except OSError as exc:
            raise _os_error("write", path, exc) from None
        return {"path": path, "bytes_written": len(data)}


def _stat_record(path: str, st) -> dict:
    import stat

    return {
        "path": path,
        "size": st.st_size,
        "mode": f"{stat.S_IMODE(st.st_mode):04o}",
        "is_dir": stat.S_ISDIR(st.st_mode),
        "modified_time": _rfc3339(st.st_mtime),
    }


class Stat:
    name = "filesystem:stat"

    def perform(self, ctx, params):
        import os

        from gxo.runtime.module import ModuleError
        from gxo.stdlib import _params as p

        params = p.check_map(params)
        path = ctx.workspace.resolve(p.req_str(params, "path"))
        if ctx.dry_run:
            ctx.logger.info("dry run: would inspect a path", path=path)
            return {"path": path, "size": 0, "mode": "0000", "is_dir": False,
                    "modified_time": _rfc3339(0), "dry_run": True}
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise ModuleError(f"cannot stat {path}: no such file or directory") from None
        except OSError as exc:
            raise _os_error("stat", path, exc) from None
        return _stat_record(path, st)


def _user_id(ref, what: str) -> int:
    """A user (``what`` = "owner") or group id from a name or a number."""
    import grp
    import pwd

    from gxo.runtime.module import ValidationError

    if isinstance(ref, bool) or not isinstance(ref, (int, str)) or ref == "":
        raise ValidationError(f"parameter {what!r} must be a name or a numeric id")
    if isinstance(ref, int):
        if ref < 0:
            raise ValidationError(f"parameter {what!r} must not be negative")
        return ref
    if ref.isdigit():
        return int(ref)
    try:
        return pwd.getpwnam(ref).pw_uid if what == "owner" else grp.getgrnam(ref).gr_gid
    except KeyError:
        kind = "user" if what == "owner" else "group"
        raise ValidationError(f"parameter {what!r}: no such {kind} {ref!r}") from None


class Manage:
    """``filesystem:manage``: converge a path to present / absent / directory.

    Changes are first planned from what is on disk, then applied (not in a dry run, whose
    ``changed`` tells whether a real run would change anything).  A file's content is
    rewritten in place, so its inode, owner and mode stay unless they are managed too.
    """

    name = "filesystem:manage"

    def perform(self, ctx, params):
        import os
        import stat

        from gxo.runtime.module import ModuleError, ValidationError
        from gxo.stdlib import _params as p

        params = p.check_map(params)
        user_path = p.req_str(params, "path")
        state = p.opt_enum(params, "state", ("present", "absent", "directory"))
        if state is None:
            raise ValidationError("missing required parameter 'state'")
        content = p.opt_str(params, "content")
        if content is not None and state != "present":
            raise ValidationError("parameter 'content' is only allowed with state: present")
        mode = p.opt_mode(params, "mode")
        recursive = p.opt_bool(params, "recursive", False)
        uid = _user_id(params["owner"], "owner") if params.get("owner") is not None else None
        gid = _user_id(params["group"], "group") if params.get("group") is not None else None

        if state == "absent":
            path = self._leaf(ctx, user_path)
            if path == ctx.workspace.path:
                raise ValidationError("refusing to remove the workspace itself")
        else:
            path = ctx.workspace.resolve(user_path)

        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise _os_error("inspect", path, exc) from None

        actions: list[tuple[str, object]] = []
        if state == "absent":
            if st is not None:
                if stat.S_ISDIR(st.st_mode):
                    if not recursive and os.listdir(path):
                        raise ModuleError(
                            f"cannot remove {path}: the directory is not empty (set "
                            f"recursive: true to remove it with its content)"
                        )
                    actions.append(("rmtree" if recursive else "rmdir", None))
                else:
                    actions.append(("unlink", None))
        else:
            want_dir = state == "directory"
            if st is None:
                actions.append(("mkdir" if want_dir else "create", content))
                cur_mode = cur_uid = cur_gid = None
            else:
                is_dir = stat.S_ISDIR(st.st_mode)
                if want_dir and not is_dir:
                    raise ModuleError(f"cannot make {path} a directory: a file is in the way")
                if not want_dir and is_dir:
                    raise ModuleError(f"cannot make {path} a file: it is a directory")
                if not want_dir and not stat.S_ISREG(st.st_mode):
                    raise ModuleError(f"cannot manage {path}: not a regular file")
                if content is not None:
                    try:
                        with open(path, "rb") as f:
                            same = f.read() == content.encode("utf-8")
                    except OSError as exc:
                        raise _os_error("read", path, exc) from None
                    if not same:
                        actions.append(("rewrite", content))
                cur_mode = stat.S_IMODE(st.st_mode)
                cur_uid, cur_gid = st.st_uid, st.st_gid
            if mode is not None and mode != cur_mode:
                actions.append(("chmod", mode))
            if (uid is not None and uid != cur_uid) or (gid is not None and gid != cur_gid):
                actions.append(("chown", (uid, gid)))

        changed = bool(actions)
        if ctx.dry_run:
            ctx.logger.info("dry run: would converge a path", path=path, state=state,
                            actions=[a for a, _ in actions])
            return {"path": path, "state": state, "changed": changed, "dry_run": True}
        for action, arg in actions:
            self._apply(path, action, arg)
        if changed:
            ctx.logger.info("converged", path=path, state=state,
                            actions=[a for a, _ in actions])
        return {"path": path, "state": state, "changed": changed}

    @staticmethod
    def _leaf(ctx, user_path: str) -> str:
        """For state absent: the path with its parent resolved but its last component not
        followed, so a symlink is removed rather than what it points to."""
        import os

        trimmed = user_path.rstrip("/") or user_path
        head, _, leaf = trimmed.rpartition("/")
        if leaf in ("", ".", "..") or "\x00" in leaf:
            return ctx.workspace.resolve(user_path)
        if "/" not in trimmed:
            head = "."
        elif head == "":
            head = "/"
        parent = ctx.workspace.resolve(head)
        return os.path.join(parent, leaf)

    @staticmethod
    def _apply(path: str, action: str, arg) -> None:
        import os
        import shutil

        from gxo.runtime.module import ModuleError

        try:
            if action == "unlink":
                os.unlink(path)
            elif action == "rmdir":
                os.rmdir(path)
            elif action == "rmtree":
                shutil.rmtree(path)
            elif action == "mkdir":
                os.makedirs(path, exist_ok=True)
            elif action in ("create", "rewrite"):
                parent = os.path.dirname(path)
                if action == "create":
                    os.makedirs(parent, exist_ok=True)
                flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
                fd = os.open(path, flags, 0o666)
                try:
                    _write_all(fd, (arg or "").encode("utf-8"))
                finally:
                    os.close(fd)
            elif action == "chmod":
                os.chmod(path, arg)
            elif action == "chown":
                uid, gid = arg
                try:
                    os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid)
                except PermissionError:
                    raise ModuleError(
                        f"cannot change the owner/group of {path} to "
                        f"{'-' if uid is None else uid}:{'-' if gid is None else gid}: not "
                        f"permitted (gxo runs as uid {os.geteuid()}; changing ownership needs "
                        f"privileges)"
                    ) from None
        except ModuleError:
            raise
        except OSError as exc:
            raise _os_error(action.replace("rmtree", "remove").replace("unlink", "remove"),
                            path, exc) from None


class List:
    """``filesystem:list``: one stat-shaped record per directory entry (streamed)."""

    name = "filesystem:list"

    async def perform(self, ctx, params):
        import asyncio
        import fnmatch
        import os

        from gxo.runtime.module import ModuleError, SecurityError
        from gxo.runtime.streams import errors_of, output_of
        from gxo.stdlib import _params as p

        params = p.check_map(params)
        root = ctx.workspace.resolve(p.req_str(params, "path"))
        recursive = p.opt_bool(params, "recursive", False)
        pattern = p.opt_str(params, "pattern", "") or ""
        if ctx.dry_run:
            ctx.logger.info("dry run: would list a directory", path=root)
            return {"path": root, "entries": 0, "dry_run": True}
        if not os.path.isdir(root):
            raise ModuleError(f"cannot list {root}: not a directory" if os.path.exists(root)
                              else f"cannot list {root}: no such file or directory")
        out = output_of(ctx)
        errors = errors_of(ctx)

        def scan(directory: str):
            """(records, subdirectories) of one directory, names sorted; symlinks are not
            followed into (no loops), and an entry that resolves outside the workspace is a
            record error."""
            records, subdirs, problems = [], [], []
            try:
                with os.scandir(directory) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError as exc:
                raise _os_error("list", directory, exc) from None
            for entry in entries:
                try:
                    ctx.workspace.resolve(entry.path)
                    st = entry.stat(follow_symlinks=True)
                except (SecurityError, OSError) as exc:
                    problems.append(f"{entry.path}: {getattr(exc, 'strerror', None) or exc}")
                    continue
                if not pattern or fnmatch.fnmatchcase(entry.name, pattern):
                    records.append(_stat_record(entry.path, st))
                if recursive and entry.is_dir(follow_symlinks=False):
                    subdirs.append(entry.path)
            return records, subdirs, problems

        emitted = 0
        stack = [root]
        while stack:
            directory = stack.pop()
            records, subdirs, problems = await asyncio.to_thread(scan, directory)
            for message in problems:
                errors.report(emitted, ctx.workload, message)
            if records:
                emitted += len(records)
                await out.emit(records)
            stack.extend(reversed(subdirs))
        await out.flush()
        return {"path": root, "entries": emitted}


CODE = {
    "filesystem:list": List,
    "filesystem:read": Read,
    "filesystem:write": Write,
    "filesystem:stat": Stat,
    "filesystem:manage": Manage,
}
