"""The per-run workspace: a private directory that contains every path param of the run.

Layout under the base (``$GXO_WORKSPACE_ROOT``, default ``/tmp/gxo-<uid>/workspaces``)::

    <base>/<32 hex chars>/        the workspace, mode 0700, unpredictable name
    <base>/<32 hex chars>.lock    its lock file, flock-ed by the run for its whole lifetime

The lock file sits beside the workspace, not inside it, so nothing a playbook does inside its
workspace can remove or release the lock.  A workspace is *stale* when no process holds the
flock on its lock file (its run crashed or was killed); ``sweep_stale`` removes those.  A lock
file is created under a hidden temporary name, locked, then renamed into place, so a sweeper
never sees a fresh lock file that is not yet held.

``resolve`` contains a user's path: relative paths are joined to the workspace, absolute paths
are accepted only inside it or inside an *allowed root* (``workload_policy.allowed_paths``,
``policy.allowed_paths``, ``gxo run|exec --allow-path``; see ``Workspace.allowing``), and ``..``
and symlinks are resolved component by component (also for paths that do not exist yet, whose
existing prefix is resolved), so no spelling and no symlink leads outside.  The check is made when the param is resolved; a process that swaps
a directory for a symlink afterwards (inside the workspace, which only this user can write) is
outside the threat model.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import stat
import time
from types import TracebackType
from typing import Any, Self

from gxo.runtime.module import SecurityError, ValidationError

ENV_ROOT = "GXO_WORKSPACE_ROOT"
_NAME_RE = re.compile(r"^[0-9a-f]{32}$")
_LOCK_SUFFIX = ".lock"
_TMP_PREFIX = ".tmp-lock-"
_MAX_SYMLINKS = 40  # as Linux's ELOOP limit
_TMP_GRACE_S = 60.0  # a leftover temporary lock file older than this may be swept


def default_root() -> str:
    """``$GXO_WORKSPACE_ROOT``, or ``/tmp/gxo-<uid>/workspaces``."""
    root = os.environ.get(ENV_ROOT)
    if root:
        return root
    return os.path.join("/tmp", f"gxo-{os.geteuid()}", "workspaces")


def _ensure_root(root: str, *, default: bool = False) -> str:
    """Create the base directories (mode 0700) and check they are ours; the real path.

    ``default``: the root is the shared-/tmp default, where another user could have planted
    ``/tmp/gxo-<uid>`` first: then no component of ours may be a symlink.
    """
    root = os.path.abspath(root)
    missing: list[str] = []
    probe = root
    while not os.path.lexists(probe):
        missing.append(probe)
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass  # created concurrently: checked below like any existing directory
    if default:
        probe = root
        while probe not in ("/tmp", "/"):
            if os.path.islink(probe):
                raise SecurityError(f"workspace base {probe} is a symlink; remove it or set "
                                    f"${ENV_ROOT}")
            probe = os.path.dirname(probe)
    real = os.path.realpath(root)
    try:
        st = os.stat(real)
    except OSError as exc:
        raise SecurityError(f"workspace base {root}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise SecurityError(f"workspace base {root} is not a directory")
    if st.st_uid != os.geteuid():
        raise SecurityError(
            f"workspace base {root} is owned by uid {st.st_uid}, not by this user "
            f"(uid {os.geteuid()}); set ${ENV_ROOT} to a directory of your own"
        )
    if st.st_mode & 0o022:
        raise SecurityError(
            f"workspace base {root} is writable by other users (mode "
            f"{stat.S_IMODE(st.st_mode):04o}); make it 0700 or set ${ENV_ROOT}"
        )
    # Every base directory we created is 0700 whatever the umask says.
    for path in missing:
        try:
            os.chmod(path, 0o700)
        except OSError:
            pass
    return real


def _rmtree(path: str) -> None:
    """Remove a tree, making read-only or unreadable directories writable on the way."""

    def onerror(func: Any, p: str, exc_info: Any) -> None:
        exc = exc_info[1]
        if isinstance(exc, FileNotFoundError):
            return
        if not isinstance(exc, PermissionError):
            raise exc
        for target in (os.path.dirname(p), p):
            try:
                st = os.lstat(target)
                if stat.S_ISDIR(st.st_mode):
                    os.chmod(target, stat.S_IMODE(st.st_mode) | 0o700)
            except OSError:
                pass
        if func in (os.rmdir, os.unlink, os.remove):
            try:
                func(p)
            except FileNotFoundError:
                pass
        elif os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p, onerror=onerror)  # could not be opened or listed before
        else:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass

    if os.path.islink(path) or not os.path.isdir(path):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    shutil.rmtree(path, onerror=onerror)


def _try_lock(path: str) -> int | None:
    """Open and flock ``path`` without blocking: the fd, or None when another process holds it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def real_roots(dirs: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The real paths of allowed roots (absolute directories; symlinks followed), in order."""
    out: list[str] = []
    for d in dirs:
        if not isinstance(d, str) or not d.startswith("/"):
            raise ValidationError(f"allowed path {d!r} must be an absolute directory")
        real = os.path.realpath(d)
        if real not in out:
            out.append(real)
    return tuple(out)


def resolve_inside(base: str, user_path: str, allowed: tuple[str, ...] = ()) -> str:
    """The real path of ``user_path`` (relative to ``base``), refused unless it lies inside
    ``base`` or one of the ``allowed`` roots.

    ``base`` and the ``allowed`` roots must already be real paths.  Symlinks are followed component by component as the
    kernel would; components that do not exist are taken as they are, so a path to be created
    is contained too.
    """
    if not isinstance(user_path, str):
        raise ValidationError(f"a path must be a string, got {type(user_path).__name__}")
    if user_path == "":
        raise ValidationError("a path must not be empty")
    if "\x00" in user_path:
        raise SecurityError(f"path {user_path!r} contains a NUL byte")
    pending = user_path.split("/")
    pending.reverse()
    resolved = "/" if os.path.isabs(user_path) else base
    links = 0
    while pending:
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            resolved = os.path.dirname(resolved)
            continue
        candidate = os.path.join(resolved, part)
        # Always look (even below a missing component): "missing/../link" must follow link.
        try:
            is_link = stat.S_ISLNK(os.lstat(candidate).st_mode)
        except OSError:
            is_link = False  # does not exist (yet), or cannot be seen: taken as it is
        if is_link:
            links += 1
            if links > _MAX_SYMLINKS:
                raise SecurityError(
                    f"path {user_path!r}: too many levels of symbolic links (a symlink loop)"
                )
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = "/"
            parts = target.split("/")
            parts.reverse()
            pending.extend(parts)
            continue
        resolved = candidate
    if _under(resolved, base) or any(_under(resolved, root) for root in allowed):
        return resolved
    if allowed:
        raise SecurityError(
            f"path {user_path!r} is outside the workspace and the allowed paths (it resolves to "
            f"{resolved}; allowed: {', '.join(allowed)})"
        )
    raise SecurityError(
        f"path {user_path!r} is outside the workspace (it resolves to {resolved}, and paths must "
        f"stay inside {base}; list a directory in workload_policy.allowed_paths or pass "
        f"--allow-path to write outside it)"
    )


class Workspace:
    """One run's private directory; create with ``Workspace.create()``."""

    def __init__(self, path: str, lock_path: str, lock_fd: int) -> None:
        self.path = path
        self.lock_path = lock_path
        self._lock_fd: int | None = lock_fd
        self.removed = False

    # -- life cycle ------------------------------------------------------------------------------

    @classmethod
    def create(cls, root: str | None = None) -> Workspace:
        """A new workspace under ``root`` (default: ``default_root()``), locked by this process."""
        if root is None and not os.environ.get(ENV_ROOT):
            base = _ensure_root(default_root(), default=True)
        else:
            base = _ensure_root(root or default_root())
        for _ in range(16):
            name = os.urandom(16).hex()
            path = os.path.join(base, name)
            lock_path = path + _LOCK_SUFFIX
            if os.path.lexists(path) or os.path.lexists(lock_path):
                continue
            fd, tmp = _make_locked_tmp(base)
            try:
                # link() refuses an existing target, unlike rename(): never steal a lock file
                os.link(tmp, lock_path)
            except FileExistsError:
                os.unlink(tmp)
                os.close(fd)
                continue
            os.unlink(tmp)
            try:
                os.mkdir(path, 0o700)
                os.chmod(path, 0o700)
            except BaseException:
                os.unlink(lock_path)
                os.close(fd)
                raise
            return cls(path, lock_path, fd)
        raise SecurityError(f"could not create a workspace under {base}")  # pragma: no cover

    def remove(self) -> None:
        """Delete the workspace and everything in it, then release the lock (idempotent)."""
        if self.removed:
            return
        _rmtree(self.path)
        self.removed = True
        try:
            os.unlink(self.lock_path)
        except FileNotFoundError:
            pass
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()

    def __repr__(self) -> str:
        return f"Workspace({self.path!r})"

    # -- paths -----------------------------------------------------------------------------------

    def resolve(self, user_path: str) -> str:
        """The absolute real path of ``user_path`` inside the workspace (SecurityError if not)."""
        if self.removed:
            raise SecurityError(f"workspace {self.path} has been removed")
        return resolve_inside(self.path, user_path)

    def allowing(self, dirs: tuple[str, ...]) -> Workspace | AllowedView:
        """This workspace, with absolute paths also allowed under ``dirs`` (their real paths)."""
        if not dirs:
            return self
        return AllowedView(self, real_roots(dirs))

    # -- stale workspaces ------------------------------------------------------------------------

    @staticmethod
    def sweep_stale(root: str | None = None) -> list[str]:
        return sweep_stale(root)


class AllowedView:
    """A workspace as one workload sees it: its own directory plus the allowed roots."""

    __slots__ = ("_ws", "roots")

    def __init__(self, ws: Workspace, roots: tuple[str, ...]) -> None:
        self._ws = ws
        self.roots = roots

    @property
    def path(self) -> str:
        return self._ws.path

    def resolve(self, user_path: str) -> str:
        if self._ws.removed:
            raise SecurityError(f"workspace {self._ws.path} has been removed")
        return resolve_inside(self._ws.path, user_path, self.roots)

    def __repr__(self) -> str:
        return f"AllowedView({self._ws.path!r}, {self.roots!r})"


def _make_locked_tmp(base: str) -> tuple[int, str]:
    for _ in range(16):
        tmp = os.path.join(base, _TMP_PREFIX + os.urandom(8).hex())
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW,
                         0o600)
        except FileExistsError:
            continue
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd, tmp
    raise SecurityError(f"could not create a lock file under {base}")  # pragma: no cover


def sweep_stale(root: str | None = None) -> list[str]:
    """Remove the workspaces under ``root`` whose lock no process holds; the paths removed.

    Only entries named like a workspace (32 hex digits, ``.lock``) are touched, so a shared
    base directory keeps everything else.  A workspace directory without a lock file is stale
    (lock files are made before their workspace and removed after it).
    """
    root = root or default_root()
    if not os.path.isdir(root):
        return []
    base = os.path.realpath(root)
    try:
        entries = os.listdir(base)
    except OSError:
        return []
    removed: list[str] = []
    names = set(entries)
    for entry in sorted(entries):
        full = os.path.join(base, entry)
        if entry.endswith(_LOCK_SUFFIX) and _NAME_RE.match(entry[: -len(_LOCK_SUFFIX)]):
            fd = _try_lock(full)
            if fd is None:
                continue  # a live run holds it
            try:
                ws = full[: -len(_LOCK_SUFFIX)]
                if os.path.lexists(ws):
                    _rmtree(ws)
                    removed.append(ws)
                try:
                    os.unlink(full)
                except FileNotFoundError:
                    pass
            finally:
                os.close(fd)
        elif _NAME_RE.match(entry) and entry + _LOCK_SUFFIX not in names:
            # No lock file was there when we listed: check again (a creator makes the lock
            # first), then remove it.
            if not os.path.lexists(full + _LOCK_SUFFIX):
                _rmtree(full)
                removed.append(full)
        elif entry.startswith(_TMP_PREFIX):
            try:
                age = time.time() - os.lstat(full).st_mtime
            except OSError:
                continue
            if age < _TMP_GRACE_S:
                continue
            fd = _try_lock(full)
            if fd is not None:
                try:
                    os.unlink(full)
                except FileNotFoundError:
                    pass
                os.close(fd)
    return removed
